"""Tests for baton.ml.gate: each check fires on crafted data, with its name and counts and
never a value; the simulations' data passes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from baton.errors import DataError
from baton.ml.data import Schema, SiteData, Split, read_site_data, write_site_data
from baton.ml.gate import GatePolicy, GateReport, Status, check_site_data, require_passing
from sim.tasks import Partition, make_federation

SCHEMA = Schema(
    task="toy", feature_names=("a", "b", "c"), num_classes=3, class_names=("x", "y", "z")
)
MARK = 4321.5
"""A feature value the reports must never show."""


def _split(n: int, seed: int, *, classes: int = 3) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[0, 0] = MARK
    return Split(x=x, y=(np.arange(n) % classes).astype(np.int64))


def _data(train: Split | None = None, val: Split | None = None) -> SiteData:
    return SiteData(
        train=_split(30, 1) if train is None else train,
        val=_split(10, 2) if val is None else val,
    )


def _on_disk(tmp_path: Path, data: SiteData) -> tuple[Schema, SiteData]:
    """``data`` as a site holds it: written to CSV files and read back."""
    write_site_data(tmp_path / "site", data, SCHEMA)
    return read_site_data(tmp_path / "site")


def _gate(tmp_path: Path, data: SiteData, policy: GatePolicy | None = None) -> GateReport:
    schema, read = _on_disk(tmp_path, data)
    return check_site_data(schema, read, policy or GatePolicy())


def _stack(split: Split, rows: np.ndarray) -> Split:
    return Split(
        x=np.concatenate([split.x, split.x[rows]]), y=np.concatenate([split.y, split.y[rows]])
    )


def _reveals_no_value(report: GateReport) -> None:
    text = "\n".join([*report.lines(), report.verdict()])
    assert "4321" not in text
    assert not any(name in text for name in ("'x'", "'y'", "'z'"))


def test_clean_data_passes_every_check(tmp_path: Path) -> None:
    report = _gate(tmp_path, _data())

    assert [c.name for c in report.checks] == [
        "schema", "missing", "size", "duplicates", "leakage", "label_balance", "ranges"
    ]  # fmt: skip
    assert [c.status for c in report.checks] == [Status.OK] * 7
    assert report.passed
    assert report.check("size").counts == {"train": 30, "val": 10}
    assert report.verdict() == "verdict: pass (0 of 7 checks warn)"
    _reveals_no_value(report)


def test_a_few_duplicates_warn_and_many_fail(tmp_path: Path) -> None:
    train = _split(20, 1)
    few = _gate(tmp_path / "few", _data(train=_stack(train, np.array([0, 3]))))
    many = _gate(tmp_path / "many", _data(train=_stack(train, np.arange(20).repeat(2))))

    assert few.check("duplicates").status is Status.WARN
    assert few.check("duplicates").line() == (
        "warn duplicates: 2 of 22 training rows repeat an earlier row"
    )
    assert few.passed
    assert many.check("duplicates").line() == (
        "FAIL duplicates: 40 of 60 training rows repeat an earlier row (more than the 50% allowed)"
    )
    assert many.check("duplicates").counts == {"duplicates": 40, "rows": 60}
    assert not many.passed
    _reveals_no_value(many)


def test_a_row_with_another_label_is_no_duplicate(tmp_path: Path) -> None:
    train = _split(20, 1)
    relabelled = Split(x=train.x[:1], y=(train.y[:1] + 1) % 3)
    data = _data(
        train=Split(
            x=np.concatenate([train.x, relabelled.x]), y=np.concatenate([train.y, relabelled.y])
        )
    )

    assert _gate(tmp_path, data).check("duplicates").counts["duplicates"] == 0


def test_validation_rows_copied_from_training_are_leakage(tmp_path: Path) -> None:
    train = _split(30, 1)
    some = Split(
        x=np.concatenate([train.x[:2], _split(8, 2).x]),
        y=np.concatenate([train.y[:2], _split(8, 2).y]),
    )
    copied = Split(x=train.x[:8], y=train.y[:8])

    warned = _gate(tmp_path / "some", _data(train=train, val=some)).check("leakage")
    failed = _gate(tmp_path / "copied", _data(train=train, val=copied))

    assert warned.line() == "warn leakage: 2 of 10 validation rows also in the training split"
    assert failed.check("leakage").line() == (
        "FAIL leakage: 8 of 8 validation rows also in the training split "
        "(more than the 75% allowed)"
    )
    assert not failed.passed
    strict = _gate(
        tmp_path / "strict", _data(train=train, val=some), GatePolicy(max_leaked_fraction=0.0)
    )
    assert strict.check("leakage").status is Status.FAIL


def test_missing_classes_warn_by_default_and_fail_when_the_policy_says(tmp_path: Path) -> None:
    data = _data(train=_split(30, 1, classes=2))

    default = _gate(tmp_path / "a", data).check("label_balance")
    strict = _gate(tmp_path / "b", data, GatePolicy(fail_on_missing_class=True)).check(
        "label_balance"
    )

    assert default.line() == (
        "warn label_balance: 1 of 3 classes absent from training, "
        "smallest present class has 15 examples"
    )
    assert default.counts == {"absent_classes": 1, "smallest": 15}
    assert strict.status is Status.FAIL


def test_a_small_class_warns(tmp_path: Path) -> None:
    train = _split(30, 1)
    y = train.y.copy()
    y[y == 2] = 0
    y[5] = 2
    report = _gate(
        tmp_path, _data(train=Split(x=train.x, y=y)), GatePolicy(min_examples_per_class=3)
    )

    assert report.check("label_balance").status is Status.WARN
    assert report.check("label_balance").counts == {"absent_classes": 0, "smallest": 1}


def test_constant_features_warn_and_all_constant_fail(tmp_path: Path) -> None:
    train = _split(30, 1)
    one = train.x.copy()
    one[:, 1] = 2.0
    report = _gate(tmp_path / "one", _data(train=Split(x=one, y=train.y)))
    flat = _gate(tmp_path / "all", _data(train=Split(x=np.ones((30, 3), np.float32), y=train.y)))

    assert (
        report.check("ranges").line()
        == "warn ranges: 1 of 3 features constant across the training split"
    )
    assert report.passed
    assert flat.check("ranges").status is Status.FAIL
    assert flat.check("ranges").counts == {"constant_features": 3, "features": 3}
    # 27 of 30 rows repeat one of three: duplicates fail too, on their own line.
    assert [c.name for c in flat.failures] == ["duplicates", "ranges"]


def test_too_few_examples_fail_the_size_check(tmp_path: Path) -> None:
    report = _gate(tmp_path, _data(), GatePolicy(min_train_examples=31, min_val_examples=5))

    assert report.check("size").line() == (
        "FAIL size: 30 training examples (at least 31), 10 validation examples (at least 5)"
    )
    assert [c.name for c in report.failures] == ["size"]
    assert report.verdict() == "verdict: FAIL (1 of 7 checks failed)"


def test_an_empty_split_fails(tmp_path: Path) -> None:
    empty = Split(x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64))
    report = check_site_data(SCHEMA, _data(val=empty), GatePolicy())

    assert report.check("size").status is Status.FAIL
    assert report.check("size").counts == {"train": 30, "val": 0}
    assert report.check("leakage").counts == {"leaked": 0, "rows": 0}


def test_data_built_in_memory_is_checked_against_the_schema() -> None:
    train = _split(30, 1)
    x = train.x.copy()
    x[3, 1] = np.nan
    x[4, 2] = np.inf
    y = train.y.copy()
    y[:2] = 7
    report = check_site_data(SCHEMA, _data(train=Split(x=x, y=y)), GatePolicy())
    narrow = check_site_data(
        SCHEMA,
        _data(val=Split(x=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))),
        GatePolicy(),
    )

    assert report.check("missing").line() == "FAIL missing: 2 missing or non-finite features"
    assert report.check("schema").line() == (
        "FAIL schema: 2 of 2 splits have the schema's 3 feature columns, 2 labels outside [0, 3)"
    )
    assert narrow.check("schema").counts == {"bad_splits": 1, "bad_labels": 0}
    assert not narrow.passed


def test_missing_inputs_warn_under_impute_and_infinities_still_fail(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "schema.json").write_text(
        '{"task": "t", "label": "y", "class_names": ["no", "yes"], "missing": "impute",'
        ' "features": [{"name": "a", "type": "numeric"},'
        ' {"name": "s", "type": "categorical", "levels": ["F", "M", "X"]}]}'
    )
    (site / "train.csv").write_text("a,s,y\n1.5,F,0\nNA,M,1\n2.5,,1\n3.5,X,0\n")
    (site / "val.csv").write_text("s,a,y\nM,1,yes\n")
    schema, data = read_site_data(site)
    report = check_site_data(schema, data, GatePolicy())
    refused = check_site_data(replace(schema, missing="refuse"), data, GatePolicy())
    x = data.train.x.copy()
    x[0, 0] = np.inf
    infinite = check_site_data(
        schema, SiteData(train=Split(x=x, y=data.train.y), val=data.val), GatePolicy()
    )

    assert report.check("schema").status is Status.OK  # 4 encoded inputs, not 2 features
    assert report.check("missing").line() == (
        "warn missing: 4 missing inputs to impute, 0 non-finite inputs"
    )
    assert report.check("missing").counts == {"missing": 4, "non_finite": 0}
    assert report.passed
    assert refused.check("missing").line() == "FAIL missing: 4 missing or non-finite features"
    assert infinite.check("missing").line() == (
        "FAIL missing: 4 missing inputs to impute, 1 non-finite inputs"
    )
    assert not infinite.passed


def test_require_passing_raises_with_the_failing_lines_only(tmp_path: Path) -> None:
    schema, data = _on_disk(
        tmp_path, _data(train=_split(30, 1, classes=2), val=_split(8, 1, classes=2))
    )

    with pytest.raises(DataError) as caught:
        require_passing(schema, data, GatePolicy())

    assert caught.value.message == (
        "data gate failed: FAIL leakage: 8 of 8 validation rows also in the training split "
        "(more than the 75% allowed)"
    )
    assert require_passing(schema, _data(), GatePolicy()).passed


@pytest.mark.parametrize(
    ("dataset", "partition", "sites"),
    [
        ("breast_cancer", Partition(kind="dirichlet", alpha=0.5), 3),  # the demo's data
        ("breast_cancer", Partition(kind="dirichlet", alpha=0.1), 5),
        ("wine", Partition(kind="dirichlet", alpha=0.1), 3),
        ("tokens", Partition(kind="iid"), 2),
    ],
)
def test_the_simulations_data_passes(
    tmp_path: Path, dataset: str, partition: Partition, sites: int
) -> None:
    fed = make_federation(dataset, [f"s{i}" for i in range(sites)], partition, seed=0)
    reports = []
    for site, data in fed.sites.items():
        write_site_data(tmp_path / site, data, fed.schema)
        schema, read = read_site_data(tmp_path / site)
        reports.append(check_site_data(schema, read, GatePolicy()))

    assert all(r.passed for r in reports), [r.lines() for r in reports if not r.passed]
    if partition.alpha == 0.1 and dataset == "breast_cancer":  # some sites lack a class by design
        assert any(r.check("label_balance").status is Status.WARN for r in reports)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_duplicate_fraction": 1.5},
        {"max_leaked_fraction": -0.1},
        {"min_examples_per_class": -1},
        {"min_train_examples": 0},
        {"min_val_examples": 0},
    ],
)
def test_a_policy_out_of_range_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        GatePolicy(**bad)  # type: ignore[arg-type]
