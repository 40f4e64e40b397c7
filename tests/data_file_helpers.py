"""Shared by the data-file tests: the fixtures in tests/fixtures and files written from them."""

import gzip
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rso_jax.data.records import DataFormatError

DATA = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
    return os.path.join(DATA, name)


def write_lines(path, records):
    with open(path, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return str(path)


def fixture_records(name):
    with open(fixture(name), encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def to_parquet(name, tmp_path):
    path = str(tmp_path / (name.split(".")[0] + ".parquet"))
    pq.write_table(pa.Table.from_pylist(fixture_records(name)), path)
    return path


def to_gzip(name, tmp_path, suffix=".jsonl.gz"):
    path = str(tmp_path / (name.split(".")[0] + suffix))
    with open(fixture(name), "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    return path


def read_error(reader, path, *args):
    """The message of the `DataFormatError` that `reader(path, *args)` raises."""
    with pytest.raises(DataFormatError) as info:
        reader(path, *args)
    return str(info.value)
