"""The feature pipeline: what reaches the model, where it is fitted, and leakage."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from churn.model.features import (
    MISSING_CATEGORY,
    SERVICE_COLUMNS,
    TENURE_BUCKETS,
    TENURE_LABELS,
    MedianScaler,
    OneHotCategories,
    build_feature_pipeline,
    feature_columns,
    fit_in_chunks,
    predict_in_chunks,
    tenure_buckets,
)
from churn.normalise import normalise
from churn_assets.features.assets import SplitConfig, split_customers
from churn_assets.ingestion.synthetic import generate_customers
from churn_assets.training.search import candidate_pipeline
from churn_assets_tests.conftest import bank_customers


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    frame, _ = normalise(generate_customers(4_000, seed=31), "Churn")
    return frame


def fitted(frame: pd.DataFrame, excluded: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    numeric, categorical, dates = feature_columns(frame, "churn", "customer_id", excluded)
    pipeline = build_feature_pipeline(numeric, categorical, dates)
    pipeline.fit(frame, frame["churn"])
    return pipeline, list(pipeline.named_steps["encode"].get_feature_names_out())


def test_the_key_the_target_and_excluded_columns_never_reach_the_model(
    customers: pd.DataFrame,
) -> None:
    numeric, categorical, _dates = feature_columns(customers, "churn", "customer_id", ["gender"])
    assert not {"customer_id", "churn", "gender"} & {*numeric, *categorical}
    _, names = fitted(customers, excluded=("gender",))
    assert not [name for name in names if name.startswith(("customer_id", "churn", "gender"))]


def test_telco_features_are_engineered(customers: pd.DataFrame) -> None:
    pipeline, names = fitted(customers)
    assert {"services_count", "charges_per_tenure_month"} <= set(names)
    assert any(name.startswith("tenure_bucket_") for name in names)
    features = pipeline.named_steps["telco_features"].transform(  # type: ignore[attr-defined]
        pipeline.named_steps["raw_records"].transform(customers.head(3))  # type: ignore[attr-defined]
    )
    row = customers.iloc[0]
    services = sum(row[column] == "Yes" for column in SERVICE_COLUMNS)
    assert features["services_count"].iloc[0] == services
    expected = row["total_charges"] / max(row["tenure"], 1)
    assert features["charges_per_tenure_month"].iloc[0] == pytest.approx(expected)


def test_another_schema_gets_generic_features_only() -> None:
    bank, _ = normalise(bank_customers(), "Exited")
    numeric, categorical, dates = feature_columns(
        bank, "exited", "customer_id", ["row_number", "surname"]
    )
    pipeline = build_feature_pipeline(numeric, categorical, dates).fit(bank, bank["exited"])
    names = set(pipeline.named_steps["encode"].get_feature_names_out())
    assert "services_count" not in names and "credit_score" in names
    assert {"geography_France", "geography_Germany", "geography_Spain"} <= names


def test_preprocessing_is_fitted_on_the_training_split_only(customers: pd.DataFrame) -> None:
    train, test = train_test_split(customers, test_size=0.5, random_state=0)
    shifted_test = test.assign(tenure=test["tenure"] + 500)
    numeric, categorical, dates = feature_columns(customers, "churn", "customer_id", ())
    pipeline = build_feature_pipeline(numeric, categorical, dates).fit(train, train["churn"])
    encode = pipeline.named_steps["encode"]
    scaler = encode.numbers_
    tenure = list(encode.numeric).index("tenure")
    assert scaler.mean_[tenure] == pytest.approx(train["tenure"].mean())
    # Transforming other data never refits: the same training statistics apply.
    pipeline.transform(shifted_test)
    assert scaler.mean_[tenure] == pytest.approx(train["tenure"].mean())


def test_served_records_are_read_like_training_records(customers: pd.DataFrame) -> None:
    pipeline, _ = fitted(customers)
    training_like = customers.head(20)
    # From JSON: Python objects instead of Arrow strings, numbers as text, an extra column, and
    # a category never seen in training.
    served = training_like.astype(object).assign(
        tenure=training_like["tenure"].astype(str), note="vip"
    )
    served.loc[served.index[0], "payment_method"] = "Crypto"
    expected = pipeline.transform(training_like)  # type: ignore[attr-defined]
    actual = pipeline.transform(served)  # type: ignore[attr-defined]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual[1:], expected[1:])


def test_a_model_trained_on_shuffled_targets_scores_near_chance(customers: pd.DataFrame) -> None:
    shuffled = customers.assign(
        churn=np.random.default_rng(0).permutation(customers["churn"].to_numpy())
    )
    train, test = train_test_split(
        shuffled, test_size=0.3, stratify=shuffled["churn"], random_state=0
    )
    numeric, categorical, dates = feature_columns(shuffled, "churn", "customer_id", ())
    model = candidate_pipeline(
        build_feature_pipeline(numeric, categorical, dates), LogisticRegression(max_iter=2_000)
    ).fit(train, train["churn"])
    auc = roc_auc_score(test["churn"], model.predict_proba(test)[:, 1])
    assert 0.45 <= auc <= 0.55


def test_one_hot_categories_matches_scikit_learns_imputer_and_encoder() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    train = pd.DataFrame(
        {
            # frequent, rare (seen under 5 times) and missing values
            "plan": rng.permutation(
                np.array(
                    ["basic"] * 200 + ["plus"] * 120 + ["pro"] * 75 + ["gold"] * 3 + [None] * 2
                )
            ),
            "region": rng.choice(["north", "south"], 400),
        }
    ).astype(object)
    served = pd.DataFrame(
        {
            "plan": ["basic", "gold", "unseen", None, np.nan],
            "region": ["south", "west", None, "north", "north"],
        }
    ).astype(object)
    reference = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, sparse_output=False),
    ).fit(train)
    ours = OneHotCategories(min_frequency=5).fit(train)
    for frame in (train, served):
        np.testing.assert_array_equal(ours.transform(frame), reference.transform(frame))
    assert ours.seen_categories()["region"] == {"north", "south"}
    assert ours.infrequent_categories_[0] == [MISSING_CATEGORY, "gold"]
    assert "gold" in ours.seen_categories()["plan"]
    assert list(ours.get_feature_names_out())[-1] == "region_south"


def test_fitting_chunk_by_chunk_learns_what_fitting_at_once_does(
    customers: pd.DataFrame,
) -> None:
    frame = customers.copy()
    # A category seen 3 times in each of two chunks is frequent (6 >= 5) over the whole split,
    # rare within either chunk; missing numbers and text spread over every chunk.
    frame.loc[[10, 20, 30, 1_010, 1_020, 1_030], "payment_method"] = "Voucher"
    frame.loc[frame.index[::7], "monthly_charges"] = np.nan
    frame.loc[frame.index[::11], "contract"] = pd.NA
    numeric, categorical, dates = feature_columns(frame, "churn", "customer_id", ())
    at_once = candidate_pipeline(
        build_feature_pipeline(numeric, categorical, dates), LogisticRegression(max_iter=2_000)
    ).fit(frame, frame["churn"])
    chunked = fit_in_chunks(
        candidate_pipeline(
            build_feature_pipeline(numeric, categorical, dates), LogisticRegression(max_iter=2_000)
        ),
        frame,
        frame["churn"],
        chunk_rows=1_000,
    )

    encoded = [p.named_steps["features"].named_steps["encode"] for p in (at_once, chunked)]
    names = [list(e.get_feature_names_out()) for e in encoded]
    assert names[0] == names[1] and "payment_method_Voucher" in names[0]
    np.testing.assert_array_equal(encoded[0].numbers_.median_, encoded[1].numbers_.median_)
    # The same sums in another memory order: equal but for the last bits, which the solver's
    # tolerance carries to the ninth decimal of a probability.
    np.testing.assert_allclose(encoded[0].numbers_.scale_, encoded[1].numbers_.scale_, rtol=1e-12)
    np.testing.assert_allclose(
        at_once.predict_proba(frame)[:, 1],
        predict_in_chunks(chunked, frame, chunk_rows=700),
        rtol=0,
        atol=1e-7,
    )


def test_tenure_buckets_match_pandas_cut() -> None:
    tenure = np.array([0, 11.9, 12, 23, 24, 47.5, 48, 72, 500, -3, np.nan, np.inf])
    expected = pd.cut(tenure, TENURE_BUCKETS, labels=TENURE_LABELS, right=False).astype(object)
    actual = tenure_buckets(tenure)
    for got, want in zip(actual, expected, strict=True):
        assert (pd.isna(got) and pd.isna(want)) or got == want


def test_median_scaler_matches_scikit_learns_imputer_and_scaler() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    train = pd.DataFrame(
        {
            "charges": np.where(rng.random(300) < 0.1, np.nan, rng.normal(70, 30, 300)),
            "constant": np.full(300, 4.0),
            "tenure": rng.integers(0, 72, 300).astype(float),
        }
    )
    served = pd.DataFrame({"charges": [np.nan, 10.0], "constant": [4.0, 9.0], "tenure": [1, 500]})
    reference = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()).fit(train)
    ours = MedianScaler().fit(train)
    for frame in (train, served):
        np.testing.assert_allclose(ours.transform(frame), reference.transform(frame), rtol=1e-12)


def test_a_customer_keeps_its_side_of_the_split_in_later_data_versions() -> None:
    frame, _ = normalise(generate_customers(4_000, 3), "Churn")
    config = SplitConfig()
    train, test = split_customers(frame, "churn", "customer_id", config)
    assert len(test) / len(frame) == pytest.approx(0.2, abs=0.02)
    assert abs(test["churn"].mean() - train["churn"].mean()) < 0.03
    # A later version: 1,000 new customers, and new outcomes for some known ones.
    newer, _ = normalise(generate_customers(1_000, 4), "Churn")
    later = pd.concat([frame.assign(churn=1 - frame["churn"]), newer], ignore_index=True)
    later_train, later_test = split_customers(later, "churn", "customer_id", config)
    assert set(test["customer_id"]) <= set(later_test["customer_id"])
    assert set(train["customer_id"]) <= set(later_train["customer_id"])
    # Another seed holds out other customers.
    _, reseeded = split_customers(frame, "churn", "customer_id", SplitConfig(seed=7))
    assert set(reseeded["customer_id"]) != set(test["customer_id"])


def test_without_a_key_identical_rows_stay_on_one_side_of_the_split() -> None:
    frame, _ = normalise(generate_customers(4_000, 3), "Churn")
    frame = frame.drop(columns=["customer_id"])
    # A keyless export repeats rows (the Iranian table: 300 of 3,150).
    copies = pd.concat([frame, frame.sample(400, random_state=1)], ignore_index=True)
    train, test = split_customers(copies, "churn", None, SplitConfig())
    assert len(test) / len(copies) == pytest.approx(0.2, abs=0.02)
    # Not stratified: the hold-out's churn rate is the table's up to sampling noise (0.014).
    assert abs(test["churn"].mean() - copies["churn"].mean()) < 0.045
    assert train.merge(test, how="inner").empty
    # A row keeps its side when more rows arrive.
    later_train, _ = split_customers(copies.iloc[:3_000], "churn", None, SplitConfig())
    assert set(later_train.index) <= set(train.index)


def test_a_date_is_the_same_number_of_days_in_one_request_as_in_a_million_rows() -> None:
    """Served records take a per-value path, batches pandas': the model sees the same number."""
    from churn.model.features import days_since_epoch

    rng = np.random.default_rng(0)
    moments = pd.Timestamp("1990-01-01") + pd.to_timedelta(rng.integers(0, 10**15, 600), unit="us")
    sent = (
        [moment.isoformat() for moment in moments[:200]]
        + [f"{moment:%Y-%m-%dT%H:%M:%S}+05:30" for moment in moments[200:400]]
        + [f"{moment:%Y-%m-%d}" for moment in moments[400:]]
        + ["2024-03-15t10:00z", "2024-02-30", "soon", None, "1500-01-01", "2400-01-01"]
    )
    one_by_one = np.concatenate([days_since_epoch(sent[i : i + 1]) for i in range(len(sent))])
    assert np.array_equal(one_by_one, days_since_epoch(pd.Series(sent)), equal_nan=True)
    assert np.isnan(one_by_one[-5:]).all() and not np.isnan(one_by_one[:-5]).any()
    stored = pd.Series(moments[:200])  # a training table's datetimes
    assert np.array_equal(
        days_since_epoch(stored), days_since_epoch(pd.Series(sent[:200])), equal_nan=True
    )
    assert days_since_epoch(["1970-01-02T12:00:00Z"]).tolist() == [1.5]
