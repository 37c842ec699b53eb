"""Streamed CSV, JSON and Parquet writers for the downloads: rows go out as they are read, so a big
workflow's export never sits in memory (Parquet goes out one row group of ``PARQUET_ROW_GROUP`` rows
at a time, each column typed by the download's column types)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse


class _Line:
    """A file-like object whose write returns what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def csv_lines(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([_cell(row.get(column)) for column in columns])


def json_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one element per line."""
    yield "[\n"
    first = True
    for row in rows:
        yield ("" if first else ",\n") + json.dumps(row, separators=(",", ":"))
        first = False
    yield "\n]\n"


# Column types of the Parquet files: "json" columns hold the JSON text the CSV has in that cell.
ColumnTypes = dict[str, str]
PARQUET_ROW_GROUP = 2000


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(kind, pa.string())


def _parquet_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, separators=(",", ":"))
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return value if isinstance(value, str) else str(value)


class _Drain(io.BytesIO):
    """A file that hands over what was written since the last ``drain`` (pyarrow writes to it)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def write(self, data: Any) -> int:
        written = super().write(data)
        self.total += written
        return written

    def tell(self) -> int:  # the position in the whole file, not in what is still held
        return self.total

    def drain(self) -> bytes:
        data = self.getvalue()
        self.seek(0)
        self.truncate()
        return data


def parquet_chunks(columns: list[str], types: ColumnTypes, rows: Iterable[dict[str, Any]],
                   row_group: int = PARQUET_ROW_GROUP) -> Iterator[bytes]:
    """A Parquet file, one row group at a time; a column not in ``types`` is text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = [types.get(column, "str") for column in columns]
    schema = pa.schema([(column, _arrow_type(kind)) for column, kind in zip(columns, kinds, strict=True)])
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    try:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append({c: _parquet_value(k, row.get(c)) for c, k in zip(columns, kinds, strict=True)})
            if len(batch) >= row_group:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
                yield sink.drain()
        if batch or not sink.total:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    finally:
        writer.close()
    yield sink.drain()


def streamed(chunks: Iterator[str] | Iterator[bytes], filename: str, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
