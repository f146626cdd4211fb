"""Declarative automation, evaluated as the automation sensor evaluates it, at chosen moments."""

from datetime import UTC, datetime

from dagster import AssetKey, AssetSelection, DagsterInstance, evaluate_automation_conditions

from churn_assets.definitions import defs


def requested_over(asset: str, moments: list[str]) -> dict[str, list[str]]:
    """The partitions of `asset` each successive evaluation requests (one cursor throughout)."""
    key = AssetKey(asset)
    requested: dict[str, list[str]] = {}
    cursor = None
    with DagsterInstance.ephemeral() as instance:
        for moment in moments:
            result = evaluate_automation_conditions(
                defs=defs,
                instance=instance,
                asset_selection=AssetSelection.assets(key),
                evaluation_time=datetime.fromisoformat(moment).replace(tzinfo=UTC),
                cursor=cursor,
            )
            cursor = result.cursor
            requested[moment] = sorted(str(day) for day in result.get_requested_partitions(key))
    return requested


def test_the_customer_base_is_scored_once_a_night_at_two_for_today() -> None:
    # The first look does not fire for a tick it did not see pass; the scores do not wait for the
    # pipeline to run again: the version in production at 02:00 scores the base.
    assert requested_over(
        "customer_scores",
        [
            "2026-11-28T01:00",
            "2026-11-28T01:59",
            "2026-11-28T02:01",
            "2026-11-28T03:00",
            "2026-11-29T02:00:30",
        ],
    ) == {
        "2026-11-28T01:00": [],
        "2026-11-28T01:59": [],
        "2026-11-28T02:01": ["2026-11-28"],
        "2026-11-28T03:00": [],
        "2026-11-29T02:00:30": ["2026-11-29"],
    }


def test_yesterdays_logs_are_compacted_at_half_past_midnight() -> None:
    assert requested_over(
        "compacted_logs",
        ["2026-11-28T00:10", "2026-11-28T00:31", "2026-11-28T12:00", "2026-11-29T00:30:30"],
    ) == {
        "2026-11-28T00:10": [],
        "2026-11-28T00:31": ["2026-11-27"],
        "2026-11-28T12:00": [],
        "2026-11-29T00:30:30": ["2026-11-28"],
    }
