"""Exploratory statistics of a churn table, shown as the validated asset's metadata."""

from __future__ import annotations

import pandas as pd

from churn_assets.markdown import markdown_table

TOP_VALUES = 5


def column_statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column: type, missing share, distinct count, min/max/mean or top values."""
    rows = []
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        row: dict[str, object] = {
            "column": column,
            "type": str(values.dtype),
            "missing_share": float(values.isna().mean()),
            "distinct": int(values.nunique(dropna=True)),
            "min": float(values.min()) if numeric and values.notna().any() else None,
            "max": float(values.max()) if numeric and values.notna().any() else None,
            "mean": float(values.mean()) if numeric and values.notna().any() else None,
            "top_values": "" if numeric else _top_values(values),
        }
        if pd.api.types.is_datetime64_any_dtype(values) and values.notna().any():
            row |= {"min": str(values.min()), "max": str(values.max()), "top_values": ""}
        rows.append(row)
    return pd.DataFrame(rows)


def class_balance(target: pd.Series) -> dict[str, float]:
    """Share of retained (0) and churned (1) customers."""
    shares = target.value_counts(normalize=True)
    return {"retained": float(shares.get(0, 0.0)), "churned": float(shares.get(1, 0.0))}


def statistics_markdown(statistics: pd.DataFrame) -> str:
    """The per-column statistics as a markdown table."""
    return markdown_table(
        ["column", "type", "missing", "distinct", "min", "max", "mean", "top values"],
        (
            (
                row.column,
                row.type,
                f"{row.missing_share:.2%}",
                row.distinct,
                _number(row.min),
                _number(row.max),
                _number(row.mean),
                row.top_values,
            )
            for row in statistics.itertuples(index=False)
        ),
    )


def _top_values(values: pd.Series) -> str:
    counts = values.value_counts(normalize=True, dropna=True).head(TOP_VALUES)
    return ", ".join(f"{value} ({share:.0%})" for value, share in counts.items())


def _number(value: object) -> str:
    if isinstance(value, int | float) and not pd.isna(value):
        return f"{value:.4g}"
    return ""
