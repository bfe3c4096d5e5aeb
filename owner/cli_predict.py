"""``baton predict``: evaluate a fetched result on a data file, from the model file alone.

The file is read as the sites read theirs (:func:`baton.ml.table.read_inputs`), with the
schema the model carries, so a hospital's own export works as it is.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baton import exit_codes
from baton.entry import exit_on_error
from baton.errors import BatonError, DataError, ModelError

if TYPE_CHECKING:
    pass

# torch and the model rebuild are imported when the command runs: ``baton --help`` stays fast.

_CODES: dict[type[BatonError], int] = {
    ModelError: exit_codes.CLI_MODEL,
    DataError: exit_codes.CLI_DATA,
}


def register(app: typer.Typer) -> None:
    """Adds ``predict`` to the ``baton`` app."""

    @app.command("predict")
    def predict(
        model_path: Annotated[
            Path, typer.Argument(metavar="MODEL", help="A result from 'baton fetch'.")
        ],
        data: Annotated[
            Path,
            typer.Option(
                help="CSV or Parquet file with the task's columns by name; labels optional."
            ),
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
    from baton.ml.data import Schema
    from baton.ml.portable import load
    from baton.ml.table import read_inputs

    model, meta = load(model_path)
    schema = Schema.from_json(meta.schema, source=f"{model_path}: its schema")
    if list(schema.input_names) != list(meta.inputs):
        raise ModelError(f"{model_path}: its schema does not give the inputs the model reads")
    x, y = read_inputs(data, schema)  # columns by name, categories one-hot, gaps as NaN
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).softmax(-1)
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
        correct = int((predicted == torch.from_numpy(y)).sum())
        typer.echo(f"accuracy {correct / len(y):.4f} ({correct}/{len(y)} rows)")
    typer.echo(f"wrote {len(x)} predictions to {out}")
