"""Reading a churn table from a local path, a `file://` URL or an `http(s)://` URL.

Formats are recognised by their content, not their name: Parquet (`PAR1` magic), an Excel
workbook (`.xlsx`, a zip archive holding `xl/workbook.xml`), gzip-compressed CSV, or plain CSV
with its delimiter sniffed. Anything else (an HTML page, a binary file, another zip archive, an
empty file, a header with no rows) is refused with a message that says what was found instead.

A CSV file is parsed by Arrow's reader, block by block on every core, its text kept in Arrow
buffers, and typed as pandas' parser types it (numbers, `True`/`False`, text); a line without the
header's number of fields is handed on for normalisation to set aside.

A workbook's data is on one sheet: the one named by `sheet` (`CHURN_SHEET`), else the largest
(rows times columns), so that a data dictionary or a notes sheet beside the data is passed over.
"""

from __future__ import annotations

import csv
import gzip
import os
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from churn.errors import DatasetError, SourceUnavailable
from churn.files import arrow_to_pandas
from churn.normalise import COERCION_SAMPLE, DROPPED_COLUMNS, LEADING_ZERO, MALFORMED_ROWS

SUPPORTED_SCHEMES = ("file", "http", "https")
_SNIFF_BYTES = 64 * 1024
_CHUNK_BYTES = 1024 * 1024
_DELIMITERS = ",;\t|"
# Arrow parses a CSV file in blocks of this size, on every core.
_CSV_BLOCK_BYTES = 16 * 1024 * 1024
# How pandas' parser spells numbers and booleans (what `_typed` recognises).
_INTEGER = r"^\s*[+-]?[0-9]+\s*$"
_DECIMAL = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
# Normalisation's codes (`02139`), around the spaces the integers may have.
_PADDED = rf"^\s*{LEADING_ZERO}\s*$"
_TRUE = frozenset({"True", "TRUE", "true"})
_FALSE = frozenset({"False", "FALSE", "false"})


def describe_limit(max_bytes: int) -> str:
    """`1073741824` -> `1.0 GiB`."""
    size = float(max_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextmanager
def open_chunks(
    source: str, max_bytes: int, timeout_seconds: float, scratch: Path, chunk_rows: int
) -> Iterator[tuple[Iterator[pd.DataFrame], str]]:
    """Read the table at `source` a chunk of rows at a time, never all of it at once.

    Yields the chunks (columns as in the file) and the SHA-256 of the file's bytes, which names
    this version of the source.

    Raises:
        DatasetError: the source cannot be reached or read.

    """
    import hashlib

    with _local_copy(source, max_bytes, timeout_seconds, scratch) as path:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
            digest.update(head)
            while block := stream.read(_CHUNK_BYTES):
                digest.update(block)
        if not head.strip():
            raise DatasetError(f"{source} is empty")
        yield _iter_chunks(path, source, head, chunk_rows), digest.hexdigest()


def _iter_chunks(path: Path, source: str, head: bytes, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if head.startswith(b"PK\x03\x04") and is_workbook(path):
        # A sheet holds at most 1,048,576 rows: read whole, handed on a chunk at a time.
        frame = read_workbook(path, source, None)
        for start in range(0, len(frame), chunk_rows):
            yield frame.iloc[start : start + chunk_rows]
        return
    if head.startswith(b"PAR1"):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
            raise DatasetError(f"{source} is not a readable Parquet file: {error}") from error
        _refuse_duplicates(parquet.schema_arrow.names, source)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    compression: Literal["gzip"] | None = None
    if head.startswith(b"\x1f\x8b"):
        compression = "gzip"
        with gzip.open(path, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    try:
        yield from pd.read_csv(
            path, compression=compression, chunksize=chunk_rows, **_csv_options(head, source)
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as error:
        raise DatasetError(f"{source} is not a well-formed CSV file: {error}") from error


def read_table(
    source: str,
    max_bytes: int,
    timeout_seconds: float,
    scratch: Path,
    sheet: str | None = None,
) -> pd.DataFrame:
    """Read the table at `source` (a path, `file://` or `http(s)://` URL).

    Args:
        source: where the data is.
        max_bytes: largest file accepted, compressed size for gzip.
        timeout_seconds: connect and read timeout for HTTP.
        scratch: a folder for the temporary download.
        sheet: for an Excel workbook, the sheet holding the data (default: the largest).

    Raises:
        DatasetError: the source cannot be reached or read, or holds no table.

    """
    with _local_copy(source, max_bytes, timeout_seconds, scratch) as path:
        return _parse(path, source, sheet)


@contextmanager
def _local_copy(
    source: str, max_bytes: int, timeout_seconds: float, scratch: Path
) -> Iterator[Path]:
    parsed = urllib.parse.urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="download-", dir=scratch)
        os.close(handle)
        path = Path(name)
        try:
            _download(source, path, max_bytes, timeout_seconds)
            yield path
        finally:
            path.unlink(missing_ok=True)
        return
    if scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif "://" in source:
        raise DatasetError(
            f"unsupported scheme {scheme!r} in source {source!r}; "
            f"supported: a local path, {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
        )
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"not a file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetError(
            f"{path} is {describe_limit(size)}, over the size limit of {describe_limit(max_bytes)}"
        )
    yield path


def _download(url: str, destination: Path, max_bytes: int, timeout_seconds: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "churn-platform"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise DatasetError(
                    f"{url} is {describe_limit(int(declared))}, "
                    f"over the size limit of {describe_limit(max_bytes)}"
                )
            received = 0
            with destination.open("wb") as sink:
                while chunk := response.read(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DatasetError(
                            f"{url} sent more than the size limit of {describe_limit(max_bytes)}"
                        )
                    sink.write(chunk)
    except urllib.error.HTTPError as error:
        # A server error or rate limit may pass; a missing or forbidden file will not.
        transient = error.code >= 500 or error.code in (408, 429)
        problem = SourceUnavailable if transient else DatasetError
        raise problem(f"HTTP {error.code} {error.reason} from {url}") from error
    except urllib.error.URLError as error:
        raise SourceUnavailable(_network_problem(url, error.reason, timeout_seconds)) from error
    except TimeoutError as error:
        raise SourceUnavailable(f"timed out after {timeout_seconds:g} s reading {url}") from error
    except ConnectionError as error:
        raise SourceUnavailable(_network_problem(url, error, timeout_seconds)) from error


def _network_problem(url: str, reason: object, timeout_seconds: float) -> str:
    host = urllib.parse.urlparse(url).netloc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout_seconds:g} s connecting to {host} ({url})"
    if isinstance(reason, socket.gaierror):
        return f"unknown host {host!r} ({url})"
    if isinstance(reason, ConnectionRefusedError):
        return f"cannot reach {host}: connection refused ({url})"
    return f"cannot reach {host}: {reason} ({url})"


def _parse(path: Path, source: str, sheet: str | None = None) -> pd.DataFrame:
    with path.open("rb") as stream:
        head = stream.read(_SNIFF_BYTES)
    if not head.strip():
        raise DatasetError(f"{source} is empty")
    if head.startswith(b"PAR1"):
        return _read_parquet(path, source)
    if is_workbook(path):
        return read_workbook(path, source, sheet)
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as stream:
                text_head = stream.read(_SNIFF_BYTES)
        except (OSError, EOFError) as error:
            raise DatasetError(f"{source} is not a readable gzip file: {error}") from error
        if not text_head.strip():
            raise DatasetError(f"{source} is an empty gzip file")
        return _read_csv(path, source, text_head, compression="gzip")
    return _read_csv(path, source, head, compression=None)


def is_workbook(path: Path) -> bool:
    """Whether `path` is an Excel workbook (Office Open XML): a zip holding xl/workbook.xml."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def read_workbook(path: Path, source: str, sheet: str | None) -> pd.DataFrame:
    """The data sheet of an Excel workbook: `sheet`, else the largest one.

    Raises:
        DatasetError: the workbook cannot be read, has no such sheet, or its sheet no rows.

    """
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a corrupt file
        raise DatasetError(f"{source} is not a readable Excel workbook: {error}") from error
    try:
        sizes = {ws.title: (ws.max_row or 0) * (ws.max_column or 0) for ws in workbook.worksheets}
    finally:
        workbook.close()
    if not sizes:
        raise DatasetError(f"{source} is an Excel workbook without sheets")
    if sheet is None:
        sheet = max(sizes, key=lambda title: sizes[title])
    elif sheet not in sizes:
        raise DatasetError(
            f"{source} has no sheet {sheet!r} (CHURN_SHEET); its sheets: "
            + ", ".join(repr(title) for title in sizes)
        )
    try:
        frame: pd.DataFrame = pd.read_excel(path, sheet_name=sheet, engine="openpyxl")
    except Exception as error:  # as above
        raise DatasetError(f"sheet {sheet!r} of {source} cannot be read: {error}") from error
    frame = frame.dropna(how="all").dropna(axis="columns", how="all")
    if frame.empty:
        raise DatasetError(f"sheet {sheet!r} of {source} has no rows")
    _refuse_duplicates([str(name) for name in frame.columns], source)
    frame.columns = [str(name) for name in frame.columns]
    return without_artifacts(frame)


def _read_parquet(path: Path, source: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
        raise DatasetError(f"{source} is not a readable Parquet file: {error}") from error
    names = table.column_names
    _refuse_duplicates(names, source)
    if table.num_rows == 0:
        raise DatasetError(f"{source} has columns but no rows")
    # Text as Arrow strings, as normalisation keeps it: Python strings would take four times
    # the memory (GiBs for millions of rows) only to be converted back.
    return arrow_to_pandas(table)


def _read_csv(
    path: Path, source: str, head: bytes, compression: Literal["gzip"] | None
) -> pd.DataFrame:
    """A CSV file read by Arrow's parser, block by block, every value first as text.

    pandas' parser makes a Python string per text value (a 10,000,000-row file took twice the
    memory of the frame it became); Arrow's keeps text in Arrow buffers that the frame then
    holds without a copy. Each column is then typed over all its values as pandas would type
    it (`_typed`), so that normalisation sees the same frame whichever parser read the file.
    Rows whose number of fields is not the header's are kept aside in the frame's `attrs`
    (`MALFORMED_ROWS`), for normalisation to quarantine: they are not customers one can read.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    options = _csv_options(head, source)
    read_options = pacsv.ReadOptions(
        encoding="utf8" if options["encoding"].startswith("utf-8") else options["encoding"],
        autogenerate_column_names=True,  # the header is read as the first row, as text
        block_size=_CSV_BLOCK_BYTES,
    )
    malformed: list[str] = []

    def set_aside(row: Any) -> str:
        malformed.append(row.text)
        return "skip"

    parse_options = pacsv.ParseOptions(
        delimiter=options["sep"], newlines_in_values=True, invalid_row_handler=set_aside
    )
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            # The header's fields, as Arrow parses them: every column is then read as text.
            fields = pacsv.open_csv(
                stream, read_options=read_options, parse_options=parse_options
            ).schema.names
        malformed.clear()
        convert_options = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in fields},
            null_values=[""],  # junk tokens are normalisation's to recognise and report
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        with pa.input_stream(str(path), compression=compression) as stream:
            table = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            ).read_all()
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, EOFError) as error:
        raise DatasetError(f"{source} is not a well-formed CSV file: {error}") from error
    header = [
        f"Unnamed: {index}" if name is None else name  # pandas' name for a blank header cell
        for index, name in enumerate(table.slice(0, 1).to_pylist()[0].values())
    ]
    _refuse_duplicates(header, source)
    rows = table.slice(1)
    del table
    if rows.num_rows == 0:
        raise DatasetError(f"{source} has a header ({len(header)} columns) but no rows")
    if len(header) < 2:
        raise DatasetError(
            f"{source} has a single column ({header[0]!r}); "
            "a churn table needs at least a feature and a target"
        )
    columns = {}
    for index, name in enumerate(header):
        columns[name] = _typed(rows.column(index))
        # The text of a column typed as numbers is freed now, not when every column is typed.
        rows = rows.set_column(index, rows.field(index).name, pa.nulls(rows.num_rows))
    del rows
    frame = without_artifacts(arrow_to_pandas(pa.table(columns)))
    if malformed:
        frame.attrs[MALFORMED_ROWS] = malformed
    return frame


def without_artifacts(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the columns an export adds that are not data, named in its `attrs`.

    A column without a header (`Unnamed: 5`, as pandas names it) and without a value is the mark
    of a delimiter at the end of every line; one without a header over a running row number
    (0, 1, 2, ... or 1, 2, 3, ...) is an index saved with the table (`to_csv` without
    `index=False`). Neither describes a customer, and a model that took them would ask every
    request for them.
    """
    dropped: dict[str, str] = {}
    for name in frame.columns:
        if not str(name).startswith("Unnamed: "):
            continue
        values = frame[name]
        if values.isna().all():
            dropped[str(name)] = "no header and no value (a delimiter at the end of every line)"
        elif (
            pd.api.types.is_integer_dtype(values)
            and len(values) > 1
            and int(values.iloc[0]) in (0, 1)
            and bool((values.diff().iloc[1:] == 1).all())
        ):
            dropped[str(name)] = "no header over a running row number (an index saved with it)"
    if not dropped:
        return frame
    frame = frame.drop(columns=list(dropped))
    frame.attrs[DROPPED_COLUMNS] = dropped
    return frame


def _typed(column: Any) -> Any:
    """A column of text typed as pandas' parser types it: integers, decimals, booleans or text.

    Numbers may have surrounding spaces and a sign. Integers spelled with a leading zero stay
    text (pandas made them numbers, losing the zeros of zip codes and account numbers), for
    normalisation to keep as codes. Integers with a missing value are decimals;
    an empty column is decimals; `True`/`False` (any of pandas' three spellings) without a
    missing value are booleans, and with one, text spelled `True`/`False`. Anything else stays
    text, which normalisation then reads: a column of numbers with a few junk values is its to
    parse, and to report.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    present = len(column) - column.null_count
    if present == 0:
        return pa.nulls(len(column), pa.float64())
    if _all_match(column, _INTEGER):
        if pc.any(pc.match_substring_regex(column, _PADDED)).as_py():
            return column  # codes with leading zeros (`02139`): normalisation keeps them text
        unsigned = pc.replace_substring_regex(pc.utf8_trim_whitespace(column), r"^\+", "")
        try:
            integers = pc.cast(unsigned, pa.int64())
        except pa.ArrowInvalid:  # beyond 64 bits: decimals, below
            pass
        else:
            return integers if column.null_count == 0 else pc.cast(integers, pa.float64())
    if _all_match(column, _DECIMAL):
        return pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
    if set(pc.unique(column.slice(0, COERCION_SAMPLE)).drop_null().to_pylist()) <= _TRUE | _FALSE:
        spelled = set(pc.unique(column).drop_null().to_pylist())
        if spelled <= _TRUE | _FALSE:
            truth = pc.is_in(column, pa.array(sorted(_TRUE)))
            if column.null_count == 0:
                return truth
            # pandas' parser gave Python booleans and missing values, which read as text
            # `True`/`False`: the same spelling here.
            spelling = pc.if_else(truth, "True", "False")
            return pc.if_else(pc.is_valid(column), spelling, pa.scalar(None, pa.string()))
    return column


def _all_match(column: Any, pattern: str) -> bool:
    """Whether every present value of a text column matches `pattern`; a sample decides first."""
    import pyarrow.compute as pc

    sample = column.slice(0, COERCION_SAMPLE).drop_null()
    if len(sample) and not pc.all(pc.match_substring_regex(sample, pattern)).as_py():
        return False
    matched = pc.all(pc.match_substring_regex(column, pattern)).as_py()
    return bool(matched)


def _csv_options(head: bytes, source: str) -> dict[str, Any]:
    """How to read a CSV file whose first bytes are `head`: its encoding and delimiter.

    Raises:
        DatasetError: the file is not text, holds no line, or repeats a column name.

    """
    _refuse_non_text(head, source)
    encoding = _encoding(head)
    lines = [line for line in head.decode(encoding, errors="ignore").splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{source} holds no line of text")
    delimiter = _sniff_delimiter(lines[:50])
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    # Blank header cells are named by their position (`Unnamed: 3`): never duplicates.
    _refuse_duplicates([name.strip() for name in header if name.strip()], source)
    return {
        "sep": delimiter,
        "encoding": encoding,
        "low_memory": False,
        "skipinitialspace": False,
        # Only empty cells are missing here: normalisation recognises the junk tokens
        # (`NA`, `?`, `#N/A`, ...) itself, so that it can report what it turned into missing.
        "keep_default_na": False,
        "na_values": [""],
    }


def _refuse_non_text(head: bytes, source: str) -> None:
    start = head.lstrip()[:512].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in start:
        raise DatasetError(
            f"{source} returned an HTML page, not a CSV file (is it a direct link to the raw file?)"
        )
    if head.startswith(b"PK\x03\x04"):
        raise DatasetError(f"{source} is a zip archive, not a CSV, Parquet or Excel file")
    if b"\x00" in head:
        raise DatasetError(f"{source} is a binary file, not a CSV or Parquet file")


def _encoding(head: bytes) -> str:
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the sniff window is not a reason to fall back.
        if error.start < len(head) - 4:
            return "latin-1"
    return "utf-8"


def _sniff_delimiter(lines: list[str]) -> str:
    sample = "\n".join(lines)
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        # A one-line file or irregular quoting: the delimiter most common in the header wins.
        counts = Counter(ch for ch in lines[0] if ch in _DELIMITERS)
        return counts.most_common(1)[0][0] if counts else ","


def _refuse_duplicates(names: list[str], source: str) -> None:
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise DatasetError(
            f"duplicated column names in {source}: {', '.join(repr(n) for n in duplicated)}"
        )
