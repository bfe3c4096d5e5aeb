"""The code templates of a new task package: its task module and its example-data writer.

Placeholders as in :mod:`owner.templates.task_package`.
"""

from __future__ import annotations

TASK = '''\
"""The $name task: how a site reads its own data, and which metric ranks models.

Baton finds this task through the ``baton.tasks`` entry point ``$name`` (``pyproject.toml``).
A site whose ``schema.json`` names ``$name`` reads its data with
:meth:`$cls.read_site_data`; nothing else of the site's machine is read. The places to
change are marked CHANGE: the schema, the reader (:func:`read_csv`) and the primary metric.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from baton.errors import DataError
from baton.ml.data import SCHEMA_FILE, Schema, SiteData, Split
from baton.ml.task import Metric

NAME = "$name"
"""The task's name: its entry point, a plan's ``[task] dataset``, each site's schema task."""

# CHANGE: the feature columns of your sites' files and the classes of their label column.
SCHEMA = Schema(
    task=NAME,
    feature_names=("f1", "f2", "f3", "f4"),
    num_classes=3,
    class_names=("low", "medium", "high"),
)
"""What every site's ``schema.json`` must declare; the model is sized from it."""
TRAIN_FILE = "train.csv"
"""The examples a site trains on."""
VAL_FILE = "val.csv"
"""The examples a site evaluates incoming and outgoing models on."""
# CHANGE: the metric that ranks models: a key of what a hop reports (``accuracy``,
# ``loss``) and whether higher is better.
PRIMARY_METRIC = Metric(name="accuracy", higher_is_better=True)
"""The metric that ranks models: what ordering strategies and reports use."""


@dataclass(frozen=True, kw_only=True, slots=True)
class $cls:
    """The $name task: CSV files with a header, numeric features, a label given by class name.

    Constraints: :meth:`read_site_data` reads only ``site_dir``, and its errors name files,
    lines and columns but never a value (they reach the site's log).
    """

    name: str = NAME
    """The name plans use (``[task] dataset``)."""
    primary_metric: Metric = PRIMARY_METRIC
    """The metric that ranks models (:data:`PRIMARY_METRIC`)."""

    def read_site_data(self, site_dir: Path) -> tuple[Schema, SiteData]:
        """Reads and validates one site's data: ``schema.json``, ``train.csv``, ``val.csv``.

        Raises:
            DataError: A file is missing or unreadable, or fails validation.
        """
        check_schema(site_dir / SCHEMA_FILE)
        train = read_csv(site_dir / TRAIN_FILE)
        val = read_csv(site_dir / VAL_FILE)
        return SCHEMA, SiteData(train=train, val=val)


def check_schema(path: Path) -> None:
    """Checks that the site's ``schema.json`` declares this task's :data:`SCHEMA`.

    Raises:
        DataError: The file is missing, unreadable, or declares another schema.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError):
        raise DataError(f"{path}: cannot read it as UTF-8 text") from None
    declared = Schema.from_json(text, source=str(path))
    if declared != SCHEMA:
        raise DataError(f"{path}: not the schema of task {NAME!r} (see its SCHEMA)")


def read_csv(path: Path) -> Split:
    """Reads one CSV file of examples: the header, then one example per line.

    CHANGE: the reader. Read your own format here (another delimiter, a label given by
    number, missing cells, another file type); return float32 features in the order of
    :data:`SCHEMA`'s feature names and int64 class indices.

    Raises:
        DataError: The file is missing or unreadable, its header is not the schema's, or a
            line has the wrong number of cells, a feature that is not a finite number or a
            label that is not a class name.
    """
    header = [*SCHEMA.feature_names, SCHEMA.label]
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error):
        raise DataError(f"{path}: cannot read it as UTF-8 CSV") from None
    if not rows or rows[0] != header:
        raise DataError(f"{path}: line 1: the header must be {','.join(header)}")
    if len(rows) < 2:
        raise DataError(f"{path}: holds no examples")
    classes = {class_name: i for i, class_name in enumerate(SCHEMA.class_names)}
    x = np.empty((len(rows) - 1, len(SCHEMA.feature_names)), dtype=np.float32)
    y = np.empty(len(rows) - 1, dtype=np.int64)
    for i, row in enumerate(rows[1:]):
        where = f"{path}: line {i + 2}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} cells, expected {len(header)}")
        for j, cell in enumerate(row[:-1]):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}: column {header[j]!r} is not a number") from None
            if not math.isfinite(value):
                raise DataError(f"{where}: column {header[j]!r} is not a finite number")
            x[i, j] = value
        if row[-1] not in classes:
            raise DataError(f"{where}: column {SCHEMA.label!r} is not one of the class names")
        y[i] = classes[row[-1]]
    return Split(x=x, y=y)


TASK = $cls()
"""The task object the ``baton.tasks`` entry point names."""
'''

EXAMPLE = '''\
"""Example site data for the $name task: generated, deterministic, one directory per site.

Run ``python -m $pkg.example OUT --sites 3`` to write ``OUT/site-1`` ... ``OUT/site-3``
(each a site's data directory) and ``OUT/test.csv`` (a held-out split no site holds).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from baton.ml.data import SCHEMA_FILE

from $pkg.task import SCHEMA, TRAIN_FILE, VAL_FILE

CENTRES = np.array(
    [[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, -1.0], [-1.0, 2.0, 1.5, 0.5]], dtype=np.float64
)
"""Each class's mean in feature space; the features scatter around it with unit spread."""
TEST_FILE = "test.csv"
"""The held-out split :func:`main` writes beside the sites."""


def examples(
    n: int, rng: np.random.Generator, weights: Sequence[float]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n`` examples whose classes are drawn with ``weights``: features and class indices."""
    y = rng.choice(len(CENTRES), size=n, p=np.asarray(weights) / np.sum(weights))
    x = CENTRES[y] + rng.normal(0.0, 1.0, size=(n, CENTRES.shape[1]))
    return x, y


def write_csv(path: Path, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Path:
    """Writes examples as the task reads them: the header, then features and class name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\\n")
        writer.writerow([*SCHEMA.feature_names, SCHEMA.label])
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([*(f"{v:.4f}" for v in row), SCHEMA.class_names[label]])
    return path


def write_example_sites(
    root: Path, sites: Sequence[str], *, seed: int = 0, train: int = 240, val: int = 60
) -> list[Path]:
    """Writes one data directory per site under ``root``; returns them in site order.

    Site ``k`` holds half its examples from class ``k mod 3`` (label skew, as hospitals
    differ); the same ``seed`` writes the same files.
    """
    rng = np.random.default_rng(seed)
    dirs = []
    for k, site in enumerate(sites):
        weights = [1.0] * len(CENTRES)
        weights[k % len(CENTRES)] = len(CENTRES) - 1.0
        site_dir = root / site
        site_dir.mkdir(parents=True, exist_ok=True)
        (site_dir / SCHEMA_FILE).write_text(SCHEMA.to_json() + "\\n", encoding="utf-8")
        write_csv(site_dir / TRAIN_FILE, *examples(train, rng, weights))
        write_csv(site_dir / VAL_FILE, *examples(val, rng, weights))
        dirs.append(site_dir)
    return dirs


def write_test_csv(path: Path, *, seed: int = 1, n: int = 300) -> Path:
    """Writes a held-out split with every class equally likely; returns its path."""
    rng = np.random.default_rng(seed)
    return write_csv(path, *examples(n, rng, [1.0] * len(CENTRES)))


def main(argv: Sequence[str] | None = None) -> None:
    """Writes example sites and a held-out split into a directory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="directory to write into")
    parser.add_argument("--sites", type=int, default=3, help="number of sites")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    args = parser.parse_args(argv)
    names = [f"site-{k + 1}" for k in range(args.sites)]
    for site_dir in write_example_sites(args.out, names, seed=args.seed):
        print(site_dir)
    print(write_test_csv(args.out / TEST_FILE, seed=args.seed + 1))


if __name__ == "__main__":
    main()
'''
