"""Each source kind and each bad input, read through the real ingestion path.

URL sources are served by a real HTTP server on a free loopback port (`file_server`).
"""

import gzip
from pathlib import Path

import pandas as pd
import pytest

from churn.errors import DatasetError
from churn_assets.ingestion.assets import ingest_customers
from churn_assets.ingestion.synthetic import generate_customers
from churn_assets.resources import DatasetResource, PlatformHome
from churn_assets_tests.conftest import FileServer, bank_customers, free_port

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


@pytest.fixture
def customers() -> pd.DataFrame:
    return generate_customers(300, seed=11)


def ingest(home: PlatformHome, source: str, **config: object) -> pd.DataFrame:
    table, _ = ingest_customers(DatasetResource(source=source, **config), home)  # type: ignore[arg-type]
    return table.frame


def assert_same_customers(frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    assert len(frame) == len(raw)
    assert frame["customer_id"].tolist() == raw["customerID"].tolist()
    assert frame["churn"].tolist() == (raw["Churn"] == "Yes").astype(int).tolist()
    assert frame["monthly_charges"].tolist() == pytest.approx(raw["MonthlyCharges"].tolist())


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csv_with_any_delimiter(
    tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame, delimiter: str
) -> None:
    path = tmp_path / "customers.csv"
    customers.to_csv(path, index=False, sep=delimiter)
    assert_same_customers(ingest(isolated_home, str(path)), customers)


def test_gzip_compressed_csv(
    tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame
) -> None:
    path = tmp_path / "customers.csv.gz"
    with gzip.open(path, "wt") as stream:
        customers.to_csv(stream, index=False)
    assert_same_customers(ingest(isolated_home, str(path)), customers)


def test_parquet(tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame) -> None:
    path = tmp_path / "customers.parquet"
    customers.to_parquet(path, index=False)
    assert_same_customers(ingest(isolated_home, str(path)), customers)


def test_file_url(tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame) -> None:
    path = tmp_path / "customers.csv"
    customers.to_csv(path, index=False)
    assert_same_customers(ingest(isolated_home, path.as_uri()), customers)


@pytest.mark.parametrize("name", ["customers.csv", "customers.csv.gz", "customers.parquet"])
def test_http_url(
    file_server: FileServer, isolated_home: PlatformHome, customers: pd.DataFrame, name: str
) -> None:
    path = file_server.root / name
    if name.endswith(".parquet"):
        customers.to_parquet(path, index=False)
    else:
        customers.to_csv(path, index=False, compression="infer")
    assert_same_customers(ingest(isolated_home, file_server.url(name)), customers)
    # The temporary download is removed.
    assert not any(isolated_home.scratch_dir.iterdir())


def test_an_unseen_bank_data_set_given_only_its_target(
    file_server: FileServer, isolated_home: PlatformHome
) -> None:
    bank_customers().to_csv(file_server.root / "bank_churn.csv", index=False)
    table, report = ingest_customers(
        DatasetResource(source=file_server.url("bank_churn.csv"), target="Exited"), isolated_home
    )
    assert table.dataset == "bank_churn"
    assert table.target == "exited"
    assert table.id_column == "customer_id"
    assert {"surname", "credit_score", "num_of_products", "has_cr_card"} <= set(table.frame)
    assert report.positive_label == "1"


def test_the_real_telco_file(telco_csv: Path, isolated_home: PlatformHome) -> None:
    table, report = ingest_customers(DatasetResource(source=str(telco_csv)), isolated_home)
    frame = table.frame
    assert frame.shape == (7_043, 21)
    assert table.id_column == "customer_id"
    assert frame["churn"].mean() == pytest.approx(0.2654, abs=0.0005)
    assert frame["total_charges"].dtype == "float64"
    assert report.became_missing == {"total_charges": 11}


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n  \n", "is empty"),
        (b"customerID,Churn\n", "has a header \\(2 columns\\) but no rows"),
        (b"a,b,a,Churn\n1,2,3,Yes\n1,2,3,No\n", "duplicated column names in .*: 'a'"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML page, not a CSV"),
        (b"\x00\x01\x02\x03binary\x00data", "binary file"),
        (b"PK\x03\x04zipdata", "zip archive"),
        (b"\x1f\x8bnot really gzip", "not a readable gzip file"),
        (b"PAR1 not really parquet", "not a readable Parquet file"),
        (b"x,Churn\n1,Yes\n2,No\n", "target column 'exited' not found"),
        (b"x,Churn\n1,Yes\n2,Yes\n", "single class"),
        (b"x,Churn\n1,Yes\n2,No\n3,Maybe\n", "unrecognised target: 1 \\(target values 'Maybe'\\)"),
    ],
)
def test_bad_files_are_refused_with_a_clear_error(
    tmp_path: Path, isolated_home: PlatformHome, content: bytes, message: str
) -> None:
    source = write(tmp_path / "input.csv", content)
    target = "Exited" if "exited" in message else "Churn"
    with pytest.raises(DatasetError, match=message):
        ingest(isolated_home, source, target=target)


def test_missing_file(tmp_path: Path, isolated_home: PlatformHome) -> None:
    with pytest.raises(DatasetError, match=r"file not found: .*nowhere\.csv"):
        ingest(isolated_home, str(tmp_path / "nowhere.csv"))


@pytest.mark.parametrize("source", ["ftp://example.org/churn.csv", "s3://bucket/churn.csv"])
def test_unsupported_scheme(isolated_home: PlatformHome, source: str) -> None:
    with pytest.raises(DatasetError, match="unsupported scheme"):
        ingest(isolated_home, source)


def test_local_file_over_the_size_limit(
    tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame
) -> None:
    path = tmp_path / "customers.csv"
    customers.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"over the size limit of 1\.0 KiB"):
        ingest(isolated_home, str(path), max_bytes=1024)


def test_http_404(file_server: FileServer, isolated_home: PlatformHome) -> None:
    with pytest.raises(DatasetError, match=r"HTTP 404 .* from http://127\.0\.0\.1"):
        ingest(isolated_home, file_server.url("missing.csv"))


def test_unreachable_host(isolated_home: PlatformHome) -> None:
    with pytest.raises(DatasetError, match="connection refused"):
        ingest(isolated_home, f"http://127.0.0.1:{free_port()}/churn.csv")


def test_http_timeout(file_server: FileServer, isolated_home: PlatformHome) -> None:
    (file_server.root / "slow.csv").write_text("x,Churn\n1,Yes\n2,No\n")
    with pytest.raises(DatasetError, match=r"timed out after 0\.5 s"):
        ingest(isolated_home, file_server.url("slow.csv"), timeout_seconds=0.5)


def test_html_page_instead_of_csv(file_server: FileServer, isolated_home: PlatformHome) -> None:
    with pytest.raises(DatasetError, match="returned an HTML page"):
        ingest(isolated_home, file_server.url("page"))


def test_http_download_over_the_size_limit_declared(
    file_server: FileServer, isolated_home: PlatformHome, customers: pd.DataFrame
) -> None:
    customers.to_csv(file_server.root / "customers.csv", index=False)
    with pytest.raises(DatasetError, match=r"over the size limit of 1\.0 KiB"):
        ingest(isolated_home, file_server.url("customers.csv"), max_bytes=1024)


def test_http_download_over_the_size_limit_undeclared(
    file_server: FileServer, isolated_home: PlatformHome
) -> None:
    with pytest.raises(DatasetError, match=r"sent more than the size limit of 1\.0 MiB"):
        ingest(isolated_home, file_server.url("endless.csv"), max_bytes=1024**2)
    assert not any(isolated_home.scratch_dir.iterdir())


def test_configured_key_column_must_exist(
    tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame
) -> None:
    path = tmp_path / "customers.csv"
    customers.to_csv(path, index=False)
    with pytest.raises(DatasetError, match="customer key column 'account' not found"):
        ingest(isolated_home, str(path), id_column="account")


def test_an_excel_workbook_is_read_from_its_data_sheet(
    tmp_path: Path, isolated_home: PlatformHome, customers: pd.DataFrame
) -> None:
    path = tmp_path / "customers.xlsx"
    with pd.ExcelWriter(path) as workbook:
        # A data dictionary first, as exports have: the larger sheet holds the data.
        pd.DataFrame({"Variable": ["tenure"], "Meaning": ["months"]}).to_excel(
            workbook, sheet_name="Data Dict", index=False
        )
        customers.to_excel(workbook, sheet_name="Customers", index=False)
        customers.head(150).to_excel(workbook, sheet_name="Sample", index=False)
    assert_same_customers(ingest(isolated_home, str(path)), customers)
    assert len(ingest(isolated_home, str(path), sheet="Sample")) == 150
    with pytest.raises(DatasetError, match=r"no sheet 'Nope'.*'Data Dict', 'Customers', 'Sample'"):
        ingest(isolated_home, str(path), sheet="Nope")


def test_a_gzip_csv_with_a_float_spelled_target(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    frame = bank_customers(500).assign(Exited=lambda f: f["Exited"].astype(float))
    path = tmp_path / "bank.csv.gz"
    frame.to_csv(path, index=False, compression="gzip")
    ingested = ingest(isolated_home, str(path), target="Exited")
    assert ingested["exited"].tolist() == frame["Exited"].astype(int).tolist()
