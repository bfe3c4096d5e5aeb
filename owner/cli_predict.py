"""``baton predict``: evaluate a fetched result on a CSV file, from the model file alone."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baton import exit_codes
from baton.entry import exit_on_error
from baton.errors import BatonError, DataError, ModelError

if TYPE_CHECKING:
    from baton.ml.portable import ResultMetadata

# torch and the model rebuild are imported when the command runs: ``baton --help`` stays fast.

MISSING = frozenset({"", "na", "nan", "null"})
"""CSV cells (stripped, lower-cased) that mean a missing value; the model imputes them."""
_CODES: dict[type[BatonError], int] = {
    ModelError: exit_codes.CLI_MODEL,
    DataError: exit_codes.CLI_DATA,
}


def read_rows(path: Path, meta: ResultMetadata) -> tuple[list[list[float]], list[int] | None]:
    """Reads the model's input columns (by name, in the model's order) and, when the file
    has one, the label column (class indices or class names) from a CSV file with a header.

    Other columns are ignored. Errors name the file, line and column, never a value.

    Raises:
        DataError: The file is unreadable, lacks an input column, holds no rows, or a cell
            is not a number (inputs) or not a class (labels).
    """
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the CSV file ({type(exc).__name__})") from None
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    lacking = [name for name in meta.inputs if name not in header]
    if lacking:
        raise DataError(f"{path}: no column {lacking[0]!r} (the model reads {len(meta.inputs)})")
    if not body:
        raise DataError(f"{path}: no rows")
    columns = [header.index(name) for name in meta.inputs]
    label_name = json.loads(meta.schema).get("label", "label")
    label_at = header.index(label_name) if label_name in header else None
    classes = {name: i for i, name in enumerate(meta.classes)}
    x: list[list[float]] = []
    y: list[int] = []
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
        x.append([_number(path, line, header[c], row[c]) for c in columns])
        if label_at is not None:
            cell = row[label_at].strip()
            label = int(cell) if cell.isdigit() else classes.get(cell, -1)
            if not 0 <= label < len(meta.classes):
                raise DataError(f"{path}: line {line}, column {label_name!r}: not a class")
            y.append(label)
    return x, (y if label_at is not None else None)


def _number(path: Path, line: int, column: str, cell: str) -> float:
    if cell.strip().lower() in MISSING:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}: line {line}, column {column!r}: not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: line {line}, column {column!r}: not finite")
    return value


def register(app: typer.Typer) -> None:
    """Adds ``predict`` to the ``baton`` app."""

    @app.command("predict")
    def predict(
        model_path: Annotated[
            Path, typer.Argument(metavar="MODEL", help="A result from 'baton fetch'.")
        ],
        data: Annotated[
            Path,
            typer.Option(help="CSV file: the model's input columns by name, optional labels."),
        ],
        out: Annotated[
            Path, typer.Option(help="Where to write each row's predicted class.")
        ] = Path("predictions.csv"),
    ) -> None:
        """Predict each row's class with a fetched model; print the accuracy when the file
        has labels. Needs nothing but the model file: it describes its task, inputs and
        classes."""
        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            run_predict(model_path, data, out)


def run_predict(model_path: Path, data: Path, out: Path) -> None:
    """Rebuilds the model, predicts every row of ``data``, writes ``out`` (mode 0600: it is
    derived from patient rows) and prints the accuracy when ``data`` has labels.

    Raises:
        ModelError: The model file cannot be rebuilt (:func:`baton.ml.portable.load`).
        DataError: ``data`` does not fit the model, or ``out`` cannot be written.
    """
    import torch

    from baton.io import atomic_write
    from baton.ml.portable import load

    model, meta = load(model_path)
    x, y = read_rows(data, meta)
    with torch.no_grad():
        probs = model(torch.tensor(x, dtype=torch.float32)).softmax(-1)
    confidence, predicted = probs.max(dim=-1)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["row", "predicted", "probability"])
    for i, (k, p) in enumerate(zip(predicted.tolist(), confidence.tolist(), strict=True)):
        writer.writerow([i, meta.classes[k], f"{p:.6f}"])
    try:
        atomic_write(out, text.getvalue())
    except OSError as exc:
        raise DataError(f"{out}: cannot write the predictions ({exc.strerror})") from None
    if y is not None:
        correct = int((predicted == torch.tensor(y)).sum())
        typer.echo(f"accuracy {correct / len(y):.4f} ({correct}/{len(y)} rows)")
    typer.echo(f"wrote {len(x)} predictions to {out}")
