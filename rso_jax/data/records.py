"""Data files and their records: reading files of the public datasets, errors that say where.

No TensorFlow or seqio here (parquet is read with pyarrow), so the readers work on any machine.
Files: JSON lines (gzipped or not, detected from the content, whatever the file is called) or
parquet (`.parquet`). A file pattern may be a glob. The readers of each dataset family
(`summaries`, `dialogues`) turn records into example dicts with `read_examples` and return a
`ReadResult`:

  * SFT and prompt data: {'inputs': str, 'targets': str}
  * preference data:     {'inputs': str, 'chosen': str, 'rejected': str}

Errors: a malformed record (invalid JSON, a missing, null or mistyped field) raises
`DataFormatError` naming the file, the 1-based line (JSON lines) or row (parquet) and the field;
a missing file or a pattern that matches nothing raises FileNotFoundError; a file without
records raises DataFormatError. Well-formed records that cannot make an example (a tied
comparison, identical responses, a comparison split that was not asked for...) are dropped,
counted by reason in `ReadResult.dropped` and logged; nothing is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import logging
import os
from typing import Any, Iterator, Sequence, Union

logger = logging.getLogger(__name__)

FilePatterns = Union[str, Sequence[str]]


class DataFormatError(ValueError):
    """A data file or one of its records does not have the expected format."""


@dataclasses.dataclass
class ReadResult:
    """The examples read from a set of files and what was left out.

    Attributes:
      examples: the example dicts, in file and record order.
      files: the files read.
      num_records: records read (JSON lines or parquet rows).
      dropped: reason -> number of records (or, for OASST1, messages) that made no example.
    """

    examples: list
    files: list
    num_records: int
    dropped: dict

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


def expand_file_patterns(patterns: FilePatterns) -> list:
    """Files named by one pattern or a list of them (globs allowed), in order, de-duplicated.

    Raises:
      FileNotFoundError: a plain path that does not exist or a glob that matches nothing.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise FileNotFoundError("No data files given (an empty list of file patterns).")
    files = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
            if not matches:
                raise FileNotFoundError(f"No data file matches the pattern {pattern!r}.")
        elif os.path.isfile(pattern):
            matches = [pattern]
        else:
            raise FileNotFoundError(f"Data file {pattern!r} does not exist (or is not a file).")
        files.extend(match for match in matches if match not in files)
    return files


class Record:
    """One record of a data file, with its location for error messages."""

    def __init__(self, path: str, number: int, unit: str, value: Any):
        self.path, self.number, self.unit = path, number, unit
        if not isinstance(value, dict):
            raise self.error(f"expected a JSON object, got {type(value).__name__}")
        self.value = value

    @property
    def location(self) -> str:
        return f"{self.path}: {self.unit} {self.number}"

    def error(self, message: str) -> DataFormatError:
        return DataFormatError(f"{self.location}: {message}")

    def optional(self, field: str) -> Any:
        """The value at a dotted path ('info.post'); None if absent or null."""
        value = self.value
        for part in field.split("."):
            if not isinstance(value, dict):
                raise self.error(f"field {field!r}: {part!r} is inside a "
                                 f"{type(value).__name__}, not an object")
            value = value.get(part)
            if value is None:
                return None
        return value

    def get(self, field: str, types: Union[type, tuple] = object) -> Any:
        """The value at a dotted path, which must be present, not null and of `types`."""
        value = self.optional(field)
        if value is None:
            raise self.error(f"missing field {field!r}")
        allowed = types if isinstance(types, tuple) else (types,)
        # bool is an int to Python, but `true` is no valid `choice` or score.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed
                                              and object not in allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise self.error(f"field {field!r} must be {names}, got {type(value).__name__}: "
                             f"{str(value)[:60]!r}")
        return value

    def text(self, field: str) -> str:
        return self.get(field, str)


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _json_lines(path: str) -> Iterator[Record]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as stream:
        try:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    looks_like_array = number == 1 and line.lstrip()[:1] == "["
                    hint = (" (the file looks like one JSON array; these readers take JSON lines: "
                            "one object per line)") if looks_like_array else ""
                    raise DataFormatError(f"{path}: line {number}: invalid JSON ({error}){hint}"
                                          ) from None
                yield Record(path, number, "line", value)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
            raise DataFormatError(f"{path}: not a UTF-8 JSON lines file, gzipped or not "
                                  f"({type(error).__name__}: {error}).") from None


def _parquet_rows(path: str) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet

    try:
        parquet_file = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as error:
        raise DataFormatError(f"{path}: not a readable parquet file ({error}).") from None
    number = 0
    for batch in parquet_file.iter_batches():
        for row in batch.to_pylist():
            number += 1
            yield Record(path, number, "row", row)


def read_records(path: str) -> Iterator[Record]:
    """The records of one file: parquet rows for `*.parquet`, JSON lines otherwise.

    Raises:
      DataFormatError: unreadable content, invalid JSON, or no records at all.
    """
    reader = _parquet_rows if path.endswith(".parquet") else _json_lines
    count = 0
    for record in reader(path):
        count += 1
        yield record
    if count == 0:
        raise DataFormatError(f"{path}: the file has no records (it is empty); check the path "
                              "given for this dataset.")


def read_examples(patterns: FilePatterns, dataset: str, make_examples) -> ReadResult:
    """Runs `make_examples(record, dropped) -> list of examples` over every record."""
    files = expand_file_patterns(patterns)
    examples, dropped, num_records = [], collections.Counter(), 0
    for path in files:
        for record in read_records(path):
            num_records += 1
            examples.extend(make_examples(record, dropped))
    return finish_read(dataset, files, examples, num_records, dropped)


def finish_read(dataset: str, files: list, examples: list, num_records: int,
            dropped: collections.Counter) -> ReadResult:
    result = ReadResult(examples=examples, files=files, num_records=num_records,
                        dropped=dict(sorted(dropped.items())))
    message = (f"{dataset}: {len(examples)} examples from {num_records} records in "
               f"{len(files)} file(s)")
    if result.num_dropped:
        logger.warning("%s; dropped %d: %s", message, result.num_dropped,
                       ", ".join(f"{reason}: {count}" for reason, count in result.dropped.items()))
    else:
        logger.info("%s; none dropped", message)
    if not examples:
        raise DataFormatError(f"{dataset}: no usable examples in {files} ({num_records} records, "
                              f"dropped: {result.dropped}).")
    return result
