"""Values handed from one pipeline step to the next, stored without pickling.

A value is written as JSON, field by field; every table in it (a pandas DataFrame, at any depth)
as a Parquet file named by the hash of its content, so a table that several steps hold (the
validated customers, the hold-out split) is written once. A value is read back as the type the
reading step declares, using that type's fields: renaming or moving a class breaks nothing
already stored, a field added with a default reads old values, and a field that cannot be read
is named in the error. Models are not values here: steps hand over MLflow run and model URIs,
and a dataclass field marked `field(metadata={STORED: False})` (an object kept in memory for the
same step only) is left out and read back as its default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from churn.files import read_parquet, write_atomically
from churn.snapshots import content_hash

TABLE = "$table"
STORED = "stored"


class TableStore:
    """Parquet files keyed by the hash of their content (columns, types, index and values)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, frame: pd.DataFrame) -> str:
        """Store `frame` unless a table of the same content is stored; return its key."""
        key = content_hash(frame, index=True)
        path = self.path(key)
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(path, frame.to_parquet)
        return key

    def get(self, key: str) -> pd.DataFrame:
        """The table stored under `key`."""
        return read_parquet(self.path(key))

    def path(self, key: str) -> Path:
        """Where the table of `key` is."""
        return self.root / f"{key}.parquet"


def encode(value: Any, tables: TableStore) -> Any:
    """`value` as JSON-ready data, its tables stored in `tables`.

    Raises:
        TypeError: the value holds an object that has no stored form (a fitted model: hand over
            its MLflow URI instead).

    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, pd.DataFrame):
        return {TABLE: tables.put(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: encode(getattr(value, field.name), tables)
            for field in dataclasses.fields(value)
            if field.metadata.get(STORED, True)
        }
    if isinstance(value, dict):
        return {str(key): encode(item, tables) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item, tables) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(
        f"a {type(value).__module__}.{type(value).__qualname__} has no stored form: hand over "
        "a URI (a model's MLflow URI) or mark the field `field(metadata={STORED: False})`"
    )


def decode(data: Any, annotation: Any, tables: TableStore, where: str = "value") -> Any:
    """Stored `data` as an `annotation`; `where` names the field in errors.

    Raises:
        TypeError: the data does not fit the type (naming where).

    """
    if isinstance(data, dict) and set(data) == {TABLE}:
        return tables.get(data[TABLE])
    if annotation is Any or annotation is object:
        return data
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if data is None:
            return None
        choices = [choice for choice in arguments if choice is not type(None)]
        return decode(data, choices[0], tables, where) if len(choices) == 1 else data
    if origin is typing.Literal:
        return data
    if origin in (list, tuple, dict) or annotation in (list, tuple, dict):
        return _decode_container(data, origin or annotation, arguments, tables, where)
    if not isinstance(annotation, type):
        return data
    if data is None:
        return None
    if issubclass(annotation, BaseModel):
        return annotation.model_validate(data)
    if dataclasses.is_dataclass(annotation):
        return _decode_dataclass(data, annotation, tables, where)
    if issubclass(annotation, Enum):
        return annotation(data)
    if issubclass(annotation, datetime):
        return datetime.fromisoformat(data)
    if issubclass(annotation, date):
        return date.fromisoformat(data)
    if annotation in (int, float, str, bool):
        return annotation(data)
    return data


def _decode_container(
    data: Any, kind: type, arguments: tuple[Any, ...], tables: TableStore, where: str
) -> Any:
    if kind is dict:
        value_type = arguments[1] if len(arguments) == 2 else Any
        return {
            key: decode(item, value_type, tables, f"{where}[{key!r}]") for key, item in data.items()
        }
    if kind is tuple and arguments and arguments[-1] is not Ellipsis:
        return tuple(
            decode(item, item_type, tables, f"{where}[{index}]")
            for index, (item, item_type) in enumerate(zip(data, arguments, strict=True))
        )
    item_type = arguments[0] if arguments else Any
    items = [
        decode(item, item_type, tables, f"{where}[{index}]") for index, item in enumerate(data)
    ]
    return tuple(items) if kind is tuple else items


def _decode_dataclass(data: Any, kind: type, tables: TableStore, where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where}: a {kind.__name__} was expected, the stored value is {data!r}")
    hints = typing.get_type_hints(kind)
    values = {}
    for field in dataclasses.fields(kind):
        if not field.init or field.name not in data:
            continue
        values[field.name] = decode(
            data[field.name], hints[field.name], tables, f"{where}.{field.name}"
        )
    try:
        return kind(**values)
    except TypeError as error:
        raise TypeError(
            f"{where}: the stored value cannot be read as {kind.__name__}: {error}"
        ) from error
