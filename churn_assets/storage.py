"""What one asset hands to the next: JSON values and content-addressed Parquet tables.

Dagster calls this IO manager to store each asset's value and to load it for the assets that read
it (`churn.codec`): nothing is pickled, each table is written once however many steps hold it,
and a value is read as the type the reading asset declares. Models travel as MLflow URIs.
"""

import json
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field

from churn.codec import TableStore, decode, encode
from churn.files import write_atomically
from churn.home import Home


class ValueStore(ConfigurableIOManager):
    """Asset values as JSON files, their tables as Parquet files named by content."""

    values_dir: str = Field(description="Folder of the JSON values, one file per asset.")
    tables_dir: str = Field(description="Folder of the tables (content-addressed Parquet).")

    @classmethod
    def under(cls, home: Home) -> "ValueStore":
        """The store of a platform home (`Home.values_dir`, `Home.tables_dir`)."""
        return cls(values_dir=str(home.values_dir), tables_dir=str(home.tables_dir))

    def _path(self, context: InputContext | OutputContext) -> Path:
        return Path(self.values_dir).joinpath(*context.get_asset_identifier()).with_suffix(".json")

    @property
    def tables(self) -> TableStore:
        """The content-addressed tables."""
        return TableStore(Path(self.tables_dir))

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Store an asset's value."""
        if obj is None:
            return
        data = encode(obj, self.tables)
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda target: Path(target).write_text(json.dumps(data)))

    def load_input(self, context: InputContext) -> Any:
        """An upstream asset's value, as the type the reading asset declares."""
        path = self._path(context)
        data = json.loads(path.read_text())
        where = "/".join(context.get_asset_identifier())
        return decode(data, context.dagster_type.typing_type, self.tables, where)
