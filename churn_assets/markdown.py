"""Markdown tables for asset metadata: Dagster renders them in the asset and check pages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; `|` and new lines inside cells are escaped."""
    lines = [_row(headers), "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend(_row(row) for row in rows)
    return "\n".join(lines)


def frame_preview(frame: pd.DataFrame, rows: int = 10) -> str:
    """The first rows of a frame as a markdown table."""
    head = frame.head(rows)
    return markdown_table(
        [str(column) for column in head.columns], head.itertuples(index=False, name=None)
    )


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(value: object) -> str:
    text = str(value)
    if isinstance(value, float):
        text = "" if pd.isna(value) else f"{value:.6g}"
    return text.replace("|", "\\|").replace("\n", " ")
