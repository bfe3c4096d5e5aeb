"""One data file (CSV or Parquet) read into a schema's encoded float32 inputs and labels."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from baton.errors import DataError

if TYPE_CHECKING:
    from baton.ml.data import Schema

__all__ = ["MISSING_TOKENS", "Split", "read_table", "write_parquet"]

MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
"""CSV cells (stripped, lower-cased) that mean a missing value."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)

Floats = np.ndarray[Any, np.dtype[np.float64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]
Floats32 = np.ndarray[Any, np.dtype[np.float32]]
Labels = np.ndarray[Any, np.dtype[np.int64]]
Encoded = tuple[Floats32, Labels | None]
"""Encoded inputs, and the labels (None only where the label column may be absent)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Source:
    """One file's columns, by name, as the encoder asks for them."""

    path: Path
    """The file, named in every error."""
    names: Sequence[str]
    """Column names in file order."""
    rows: int
    """Number of examples."""
    where: Callable[[int], str]
    """Where example ``i`` is, for errors: ``line 5`` (CSV) or ``row 4`` (Parquet)."""
    numbers: Callable[[str], tuple[Floats, Mask]]
    """A numeric column as float64 values and its missing-cell mask."""
    cells: Callable[[str], list[Any]]
    """A column as Python values, ``None`` for a missing cell."""


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Split:
    """Examples and labels: ``x`` float32 ``[n, f]``, ``y`` int64 ``[n]``."""

    x: np.ndarray[Any, np.dtype[np.float32]]
    """Features, one row per example."""
    y: np.ndarray[Any, np.dtype[np.int64]]
    """Class indices."""

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32 or self.x.ndim != 2:
            raise ValueError("Split.x must be a 2-D float32 array")
        if self.y.dtype != np.int64 or self.y.ndim != 1 or len(self.y) != len(self.x):
            raise ValueError("Split.y must be a 1-D int64 array as long as Split.x")

    def __len__(self) -> int:
        return len(self.y)


def read_table(path: Path, schema: Schema) -> Split:
    """Reads one data file, CSV or Parquet by its suffix, into the schema's encoded inputs.

    Columns are found by name: the file holds exactly the schema's features and its label
    column, in any order. Numeric features are finite numbers (also as float32);
    categorical ones are one of their levels, one-hot encoded in level order; a label is
    a class index in ``[0, num_classes)`` or one of the class names (text that reads as an
    integer is an index). A missing cell (CSV:
    empty, ``NA``, ``NaN`` or ``null`` in any case; Parquet: null or a float NaN) is an
    error under the ``refuse`` policy and NaN in every input column of its feature under
    ``impute``; a missing label is always an error. Error messages name the file, the
    line (CSV) or row (Parquet) and the column, never a value.

    Raises:
        DataError: The file is missing, unreadable or fails validation.
    """
    x, y = _read(path, schema, label_optional=False)
    if y is None:  # unreachable: without label_optional the label column is required
        raise DataError(f"{path}: no label column {schema.label!r}")
    return Split(x=x, y=y)


def read_inputs(path: Path, schema: Schema) -> tuple[Floats32, Labels | None]:
    """Reads a data file as :func:`read_table` does, except that the label column may be
    absent (new cases to predict); returns the encoded inputs and the labels, or None.

    Raises:
        DataError: The file is missing, unreadable or fails validation.
    """
    return _read(path, schema, label_optional=True)


def _read(path: Path, schema: Schema, *, label_optional: bool) -> tuple[Floats32, Labels | None]:
    if path.suffix == ".parquet":
        return _encode_parquet(path, schema, label_optional=label_optional)
    if path.suffix == ".csv":
        return _encode_csv(path, schema, label_optional=label_optional)
    raise DataError(f"{path}: unknown data file type; expected .csv or .parquet")


def _encode_csv(path: Path, schema: Schema, *, label_optional: bool = False) -> Encoded:
    """Reads a CSV file with a header row (see :func:`read_table`).

    Raises:
        DataError: The file is missing, unreadable or fails validation.
    """
    rows = _csv_rows(path)
    header = rows[0] if rows else []
    body = rows[1:]
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {r + 2} has {len(row)} fields, expected {len(header)}")
    index = {name: c for c, name in enumerate(header)}

    def where(r: int) -> str:
        return f"line {r + 2}"

    def cells(name: str) -> list[Any]:
        c = index[name]
        return [None if row[c].strip().lower() in MISSING_TOKENS else row[c] for row in body]

    def numbers(name: str) -> tuple[Floats, Mask]:
        column = [row[index[name]] for row in body]
        try:  # fast path: every cell a number or NaN (also ``nan``, a missing token)
            values = np.fromiter(map(float, column), np.float64, count=len(column))
        except ValueError:
            pass
        else:
            missing = np.isnan(values)
            for i in np.flatnonzero(missing).tolist():  # "-nan" is NaN but no missing token
                missing[i] = column[i].strip().lower() in MISSING_TOKENS
            return values, missing
        raw = cells(name)
        missing = np.array([cell is None for cell in raw], dtype=np.bool_)
        values = np.full(len(raw), np.nan)
        for r, cell in enumerate(raw):
            if cell is None:
                continue
            try:
                values[r] = float(cell)
            except ValueError:
                raise DataError(f"{path}: {where(r)}, column {name!r}: not a number") from None
        return values, missing

    source = _Source(
        path=path, names=header, rows=len(body), where=where, numbers=numbers, cells=cells
    )
    return _encode(source, schema, empty_header=not rows, label_optional=label_optional)


def _encode_parquet(path: Path, schema: Schema, *, label_optional: bool = False) -> Encoded:
    """Reads a Parquet file (see :func:`read_table`); pyarrow is imported here,
    so sites with CSV files never load it.

    Raises:
        DataError: The file is missing, not readable as Parquet or fails validation.
    """
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException):
        raise DataError(f"{path}: not a readable Parquet file") from None

    def where(r: int) -> str:
        return f"row {r + 1}"

    def cells(name: str) -> list[Any]:
        values = table.column(name).to_pylist()
        return [None if isinstance(v, float) and v != v else v for v in values]

    def numbers(name: str) -> tuple[Floats, Mask]:
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            raise DataError(f"{path}: column {name!r}: not a numeric column ({kind})")
        column = column.cast(pa.float64(), safe=False)
        missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
        values = np.asarray(column.fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
        return values, missing | np.isnan(values)

    source = _Source(
        path=path,
        names=table.column_names,
        rows=table.num_rows,
        where=where,
        numbers=numbers,
        cells=cells,
    )
    return _encode(source, schema, empty_header=False, label_optional=label_optional)


def write_parquet(path: Path, names: Sequence[str], x: np.ndarray[Any, Any], y: Any) -> None:
    """Writes float32 feature columns ``names[:-1]`` from ``x`` and an int64 label column
    ``names[-1]`` from ``y`` to a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array(x[:, c], type=pa.float32()) for c in range(x.shape[1])]
    columns.append(pa.array(np.asarray(y, dtype=np.int64), type=pa.int64()))
    pq.write_table(pa.table(columns, names=list(names)), path)


def _encode(
    source: _Source, schema: Schema, *, empty_header: bool, label_optional: bool = False
) -> Encoded:
    path = source.path
    labelled = not label_optional or schema.label in source.names
    _check_columns(source, schema, empty_header=empty_header, labelled=labelled)
    if not source.rows:
        raise DataError(f"{path}: no examples")
    x = np.empty((source.rows, schema.num_inputs), dtype=np.float32)
    offset = 0
    for name in schema.feature_names:
        levels = schema.levels(name)
        if levels is None:
            values, missing = source.numbers(name)
            _check_finite(source, name, values, missing)
            x[:, offset] = values
            offset += 1
        else:
            codes, missing = _categories(source, name, levels)
            block = np.zeros((source.rows, len(levels)), dtype=np.float32)
            block[np.flatnonzero(~missing), codes[~missing]] = 1.0
            block[missing] = np.nan
            x[:, offset : offset + len(levels)] = block
            offset += len(levels)
        count = int(missing.sum())
        if count and schema.missing == "refuse":
            cells = "cell" if count == 1 else "cells"
            raise DataError(
                f"{path}: column {name!r} has {count} missing {cells} and the schema's "
                "missing policy is 'refuse'"
            )
    return x, (_labels(source, schema) if labelled else None)


def _check_columns(source: _Source, schema: Schema, *, empty_header: bool, labelled: bool) -> None:
    prefix = f"{source.path}: header does not match the schema"
    if empty_header:
        raise DataError(f"{prefix}: no header")
    names = list(source.names)
    for name in names:
        if names.count(name) > 1:
            raise DataError(f"{prefix}: column {name!r} appears {names.count(name)} times")
    expected = [*schema.feature_names, *([schema.label] if labelled else [])]
    for name in expected:
        if name not in names:
            raise DataError(f"{prefix}: no column {name!r}")
    for name in names:
        if name not in expected:
            raise DataError(f"{prefix}: unexpected column {name!r}")


def _check_finite(source: _Source, name: str, values: Floats, missing: Mask) -> None:
    with np.errstate(invalid="ignore"):
        bad = ~missing & ~(np.abs(values) <= _FLOAT32_MAX)
    if bad.any():
        where = source.where(int(np.flatnonzero(bad)[0]))
        raise DataError(f"{source.path}: {where}, column {name!r}: not finite")


def _categories(source: _Source, name: str, levels: tuple[str, ...]) -> tuple[Any, Mask]:
    """Each cell's level index (0 where missing) and the missing mask."""
    index = {level: i for i, level in enumerate(levels)}
    raw = source.cells(name)
    codes = np.zeros(len(raw), dtype=np.int64)
    for r, cell in enumerate(raw):
        if cell is None:
            continue
        code = index.get(cell) if isinstance(cell, str) else None
        if code is None:
            raise DataError(
                f"{source.path}: {source.where(r)}, column {name!r}: not one of the schema's levels"
            )
        codes[r] = code
    return codes, np.array([cell is None for cell in raw], dtype=np.bool_)


def _labels(source: _Source, schema: Schema) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Class indices from integers, integral floats (Parquet) or class names."""
    name, k = schema.label, schema.num_classes
    by_name = {c: i for i, c in enumerate(schema.class_names) if schema.class_names.count(c) == 1}
    y = np.empty(source.rows, dtype=np.int64)
    for r, cell in enumerate(source.cells(name)):
        at = f"{source.path}: {source.where(r)}, column {name!r}"
        if cell is None:
            raise DataError(f"{at}: missing label")
        label = _label_index(cell, by_name)
        if label is None:
            raise DataError(f"{at}: not an integer class index or a class name")
        if not 0 <= label < k:
            raise DataError(f"{at}: outside [0, {k})")
        y[r] = label
    return y


def _label_index(cell: Any, by_name: dict[str, int]) -> int | None:
    """An integer (also written as text) is a class index; other text is a class name."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        return int(cell) if cell.is_integer() else None
    if not isinstance(cell, str):
        return None
    try:
        return int(cell)
    except ValueError:
        return by_name.get(cell)


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
