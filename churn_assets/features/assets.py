"""Assets of the features stage: the train/hold-out split and the fitted feature pipeline."""

import dataclasses
from dataclasses import dataclass, field

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field
from sklearn.pipeline import Pipeline

from churn.model.features import build_feature_pipeline, feature_columns, fit_features
from churn.tables import CustomerTable
from churn_assets.markdown import markdown_table

GROUP = "features"


@dataclass
class CustomerSplits:
    """Training and hold-out customers, and what the model may learn from.

    Attributes:
        train: training customers (all columns, the key and target included).
        test: hold-out customers, never seen by tuning, fitting or threshold choice.
        numeric: numeric feature columns.
        categorical: categorical feature columns.
        table: the validated table the split came from (without its rows).
        dates: date feature columns.

    """

    train: pd.DataFrame
    test: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    table: CustomerTable
    dates: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        """The target column."""
        return self.table.target

    @property
    def features(self) -> list[str]:
        """Every feature column."""
        return [*self.numeric, *self.dates, *self.categorical]


class SplitConfig(Config):
    """How customers are split into training and hold-out sets."""

    test_size: float = Field(default=0.2, description="Share of customers held out.")
    seed: int = Field(
        default=42,
        description="Seed of the split; changing it reshuffles which customers are held out.",
    )


def split_customers(
    frame: pd.DataFrame, target: str, id_column: str | None, config: SplitConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and hold-out rows.

    With a customer key, a customer's side is decided by a seeded hash of its key, so it stays on
    the same side in every later data version: a model trained on an older version never saw a
    customer of a newer version's hold-out, and the champion/challenger comparison on that
    hold-out is fair to both. Without a key, by a seeded hash of the row's content: identical
    rows (keyless exports repeat some; the Iranian table has 300) land on the same side, so the
    hold-out is never flattered by copies of training rows, and a row keeps its side across
    versions too.
    """
    if id_column is None:
        hashed = pd.util.hash_pandas_object(
            frame, index=False, hash_key=f"{config.seed:016d}"
        ).to_numpy()
    else:
        hashed = pd.util.hash_pandas_object(
            frame[id_column].astype(str), index=False, hash_key=f"{config.seed:016d}"
        ).to_numpy()
    held_out = (hashed % 1_000_000) < round(config.test_size * 1_000_000)
    return frame[~held_out], frame[held_out]


@asset(group_name=GROUP, kinds={"pandas", "scikitlearn"})
def customer_splits(
    context: AssetExecutionContext, config: SplitConfig, validated_customers: CustomerTable
) -> Output[CustomerSplits]:
    """Training and hold-out customers: a customer's side is fixed by its key, across versions."""
    table = validated_customers
    frame = table.frame
    if table.id_column:
        # Validation guarantees unique keys; splitting rows then keeps each customer on one side.
        assert frame[table.id_column].is_unique
    train, test = split_customers(frame, table.target, table.id_column, config)
    numeric, categorical, dates = feature_columns(
        frame, table.target, table.id_column, table.excluded
    )
    # The splits carry the table's description, not a third copy of its rows.
    header = dataclasses.replace(table, frame=frame.iloc[:0])
    splits = CustomerSplits(train, test, numeric, categorical, header, dates)
    return Output(
        splits,
        metadata={
            "data_version": table.version,
            "train_rows": len(train),
            "test_rows": len(test),
            "train_churn_rate": float(train[table.target].mean()),
            "test_churn_rate": float(test[table.target].mean()),
            # Without a key, identical rows may be one customer or several; they are kept, and
            # the split keeps each group on one side.
            "identical_rows": int(frame.duplicated().sum()),
            "features": MetadataValue.md(
                markdown_table(
                    ["feature", "kind"],
                    [(c, "numeric") for c in numeric]
                    + [(c, "date (days since 1970-01-01)") for c in dates]
                    + [(c, "categorical") for c in categorical],
                )
            ),
            "never_features": ", ".join(
                [table.target, *([table.id_column] if table.id_column else []), *table.excluded]
            ),
        },
    )


@dataclass
class FeatureDesign:
    """What every candidate model learns from: the input columns, and the features made of them.

    Attributes:
        numeric: numeric input columns.
        categorical: categorical input columns.
        dates: date input columns (days since 1970-01-01 to the model).
        engineered: features derived from them (the Telco ones; none for other tables).
        model_features: the columns the estimator sees, after imputation and encoding.

    """

    numeric: list[str]
    categorical: list[str]
    engineered: list[str]
    model_features: list[str]
    dates: list[str] = field(default_factory=list)

    def pipeline(self) -> Pipeline:
        """A new, unfitted feature pipeline of this design (each candidate fits its own)."""
        return build_feature_pipeline(self.numeric, self.categorical, self.dates)


@asset(group_name=GROUP, kinds={"scikitlearn"})
def feature_pipeline(customer_splits: CustomerSplits) -> Output[FeatureDesign]:
    """The feature design every candidate starts from, as fitted on the training split.

    Candidates fit the pipeline themselves, inside each cross-validation fold, so that no fold
    sees statistics of rows it is scored on; this asset records what that pipeline makes of the
    columns (the model's feature names), which the fitted candidates share.
    """
    splits = customer_splits
    pipeline = build_feature_pipeline(splits.numeric, splits.categorical, splits.dates)
    fit_features(pipeline, splits.train)
    names = list(pipeline.named_steps["encode"].get_feature_names_out())
    engineered_numeric, engineered_categorical = pipeline.named_steps["telco_features"].engineered()
    design = FeatureDesign(
        numeric=list(splits.numeric),
        categorical=list(splits.categorical),
        engineered=[*engineered_numeric, *engineered_categorical],
        model_features=names,
        dates=list(splits.dates),
    )
    return Output(
        design,
        metadata={
            "input_columns": len(splits.features),
            "engineered_features": ", ".join(engineered_numeric + engineered_categorical)
            or "(none: not the Telco schema)",
            "model_features": len(names),
            "model_feature_names": MetadataValue.md(
                markdown_table(["#", "feature"], list(enumerate(names)))
            ),
        },
    )
