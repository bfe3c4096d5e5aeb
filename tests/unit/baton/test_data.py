"""Tests for baton.ml.data: schemas, partitions, federations and the site CSV format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from baton.errors import DataError
from baton.ml.data import (
    Schema,
    SiteData,
    Split,
    class_digest,
    profile_of,
    read_site_data,
    write_site_data,
)
from sim.tasks import Federation, Partition, known_datasets, load_task, make_federation

SITES = ("hospital-1", "hospital-2", "hospital-3", "hospital-4")


def _schema() -> Schema:
    return Schema(task="toy", feature_names=("a", "b"), num_classes=3, class_names=("x", "y", "z"))


def _site() -> SiteData:
    train = Split(
        x=np.array([[0.1, -2.5], [3.0, 1e-7], [np.float32(1 / 3), 7.0]], dtype=np.float32),
        y=np.array([0, 2, 1], dtype=np.int64),
    )
    val = Split(x=np.array([[1.5, 2.5]], dtype=np.float32), y=np.array([2], dtype=np.int64))
    return SiteData(train=train, val=val)


def _rows(split: Split) -> set[bytes]:
    return {row.tobytes() for row in split.x}


def test_known_datasets() -> None:
    assert known_datasets() == ("breast_cancer", "digits", "wine", "tokens")


def test_load_task_breast_cancer() -> None:
    schema, full = load_task("breast_cancer")
    assert full.x.shape == (569, 30)
    assert full.x.dtype == np.float32
    assert full.y.dtype == np.int64
    assert schema.num_classes == 2
    assert schema.class_names == ("malignant", "benign")
    assert schema.feature_names[0] == "mean radius"


def test_load_task_unknown() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known: breast_cancer"):
        load_task("mnist")


def test_schema_json_round_trip_and_hash() -> None:
    schema = _schema()
    text = schema.to_json()
    assert text == (
        '{"class_names":["x","y","z"],"feature_names":["a","b"],"num_classes":3,"task":"toy"}'
    )
    assert Schema.from_json(text, source="s.json") == schema
    assert schema.schema_hash() == hashlib.sha256(text.encode()).hexdigest()
    # The hash sites published before typed schemas existed: a legacy schema keeps it.
    assert schema.schema_hash() == (
        "00c14980820cb8e95e64825e190d2e33861e502a3f4659d66e6b4ba063dc98d0"
    )
    assert (schema.input_names, schema.num_inputs) == (("a", "b"), 2)
    other = Schema(task="toy", feature_names=("a", "c"), num_classes=3, class_names=("x", "y", "z"))
    assert other.schema_hash() != schema.schema_hash()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "s.json: schema is not valid JSON"),
        ("[1, 2]", "s.json: schema must be a JSON object"),
        ('{"task": "t", "feature_names": ["a"], "num_classes": 2}', "'class_names' is missing"),
        (
            '{"task": "t", "feature_names": ["a"], "num_classes": 2, "class_names": ["x", "y"],'
            ' "extra": 1}',
            "'extra' is missing or unknown",
        ),
        (
            '{"task": "t", "feature_names": ["a"], "num_classes": "2", "class_names": ["x", "y"]}',
            "'num_classes' must be an integer",
        ),
        (
            '{"task": "t", "feature_names": [1], "num_classes": 2, "class_names": ["x", "y"]}',
            "'feature_names' must be a list of strings",
        ),
        (
            '{"task": "t", "feature_names": ["a"], "num_classes": 3, "class_names": ["x", "y"]}',
            "one class name per class",
        ),
        (
            '{"task": "t", "feature_names": ["label"], "num_classes": 2,'
            ' "class_names": ["x", "y"]}',
            "must not contain 'label'",
        ),
    ],
)
def test_schema_from_json_rejects(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        Schema.from_json(text, source="s.json")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "pathological"}, "partition kind 'pathological' is unknown"),
        ({"kind": "dirichlet", "alpha": 0.0}, "alpha must be positive"),
        ({"kind": "dirichlet", "alpha": float("inf")}, "alpha must be positive"),
        ({"kind": "iid", "min_train_examples": 0}, "min_train_examples must be at least 1"),
    ],
)
def test_partition_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Partition(**kwargs)  # type: ignore[arg-type]


def test_federation_covers_every_example_exactly_once() -> None:
    fed = make_federation("breast_cancer", SITES, Partition(kind="dirichlet"), seed=3)
    parts = [fed.test] + [s.train for s in fed.sites.values()] + [s.val for s in fed.sites.values()]
    assert sum(len(p) for p in parts) == 569
    rows: set[bytes] = set()
    for part in parts:
        rows |= _rows(part)
    assert len(rows) == 569  # the dataset's rows are unique, so no row was used twice
    assert list(fed.sites) == list(SITES)


def test_federation_test_set_is_stratified() -> None:
    fed = make_federation("breast_cancer", SITES, Partition(kind="iid"), seed=0)
    # 212 malignant, 357 benign: round(212 * 0.2) = 42, round(357 * 0.2) = 71.
    assert np.bincount(fed.test.y).tolist() == [42, 71]


def test_federation_is_deterministic_given_seed() -> None:
    a = make_federation("wine", SITES, Partition(kind="dirichlet"), seed=7)
    b = make_federation("wine", SITES, Partition(kind="dirichlet"), seed=7)
    c = make_federation("wine", SITES, Partition(kind="dirichlet"), seed=8)
    for site in SITES:
        assert np.array_equal(a.sites[site].train.x, b.sites[site].train.x)
        assert np.array_equal(a.sites[site].val.y, b.sites[site].val.y)
    assert any(len(a.sites[s].train) != len(c.sites[s].train) for s in SITES)


def test_val_split_size() -> None:
    fed = make_federation("digits", SITES, Partition(kind="iid"), seed=1)
    for data in fed.sites.values():
        m = len(data.train) + len(data.val)
        assert len(data.val) == round(m * 0.2)


def test_iid_sizes_are_balanced() -> None:
    fed = make_federation("digits", SITES, Partition(kind="iid"), seed=1)
    sizes = [len(d.train) + len(d.val) for d in fed.sites.values()]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 1797 - len(fed.test)


def _mean_top_class_share(fed: Federation) -> float:
    shares = [np.bincount(d.train.y).max() / len(d.train) for d in fed.sites.values()]
    return float(np.mean(shares))


def test_dirichlet_skews_labels_and_quantity_does_not() -> None:
    sites = [f"s{i}" for i in range(5)]
    label = make_federation("digits", sites, Partition(kind="dirichlet", alpha=0.1), seed=2)
    quantity = make_federation("digits", sites, Partition(kind="quantity", alpha=0.5), seed=2)
    iid = make_federation("digits", sites, Partition(kind="iid"), seed=2)
    assert _mean_top_class_share(label) > 0.3
    assert _mean_top_class_share(iid) < 0.15
    assert _mean_top_class_share(quantity) < 0.2
    q_sizes = [len(d.train) for d in quantity.sites.values()]
    assert max(q_sizes) > 2 * min(q_sizes)


@pytest.mark.parametrize("seed", range(10))
def test_minimum_training_examples_guaranteed(seed: int) -> None:
    sites = [f"s{i}" for i in range(5)]
    partition = Partition(kind="dirichlet", alpha=0.2, min_train_examples=12)
    fed = make_federation("wine", sites, partition, seed=seed)
    assert min(len(d.train) for d in fed.sites.values()) >= 12
    assert min(len(d.val) for d in fed.sites.values()) >= 1


def test_impossible_minimum_is_a_clear_error() -> None:
    sites = [f"s{i}" for i in range(20)]
    with pytest.raises(DataError, match="cannot give each of 20 sites 10 training examples"):
        make_federation("wine", sites, Partition(kind="iid"), seed=0)


@pytest.mark.parametrize(
    ("sites", "kwargs", "message"),
    [
        ((), {}, "site ids must be non-empty and unique"),
        (("a", "a"), {}, "site ids must be non-empty and unique"),
        (("a", "b"), {"seed": -1}, "seed must be non-negative"),
        (("a", "b"), {"test_fraction": 1.0}, "strictly between 0 and 1"),
    ],
)
def test_make_federation_rejects_bad_arguments(
    sites: tuple[str, ...], kwargs: dict[str, float], message: str
) -> None:
    args: dict[str, float] = {"seed": 0, **kwargs}
    with pytest.raises(DataError, match=message):
        make_federation("wine", sites, Partition(kind="iid"), **args)  # type: ignore[arg-type]


def test_pooled_train_concatenates_sites_in_order() -> None:
    fed = make_federation("wine", SITES, Partition(kind="quantity"), seed=0)
    pooled = fed.pooled_train()
    assert len(pooled) == sum(len(d.train) for d in fed.sites.values())
    first = fed.sites["hospital-1"].train
    assert np.array_equal(pooled.x[: len(first)], first.x)
    assert np.array_equal(pooled.y[: len(first)], first.y)


def test_split_validates_arrays() -> None:
    with pytest.raises(ValueError, match="2-D float32"):
        Split(x=np.zeros((2, 2)), y=np.zeros(2, dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"as long as Split\.x"):
        Split(x=np.zeros((2, 2), dtype=np.float32), y=np.zeros(3, dtype=np.int64))


def test_write_read_round_trip(tmp_path: Path) -> None:
    schema, data = _schema(), _site()
    write_site_data(tmp_path / "site", data, schema)
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == [
        "schema.json",
        "train.csv",
        "val.csv",
    ]
    header = (tmp_path / "site" / "train.csv").read_text().splitlines()[0]
    assert header == "a,b,label"
    got_schema, got = read_site_data(tmp_path / "site")
    assert got_schema == schema
    assert np.array_equal(got.train.x, data.train.x)
    assert np.array_equal(got.train.y, data.train.y)
    assert np.array_equal(got.val.x, data.val.x)
    assert got.train.x.dtype == np.float32
    assert got.val.y.dtype == np.int64


def test_round_trip_of_a_real_site(tmp_path: Path) -> None:
    fed = make_federation("breast_cancer", SITES, Partition(kind="dirichlet"), seed=0)
    data = fed.sites["hospital-2"]
    write_site_data(tmp_path, data, fed.schema)
    schema, got = read_site_data(tmp_path)
    assert schema.schema_hash() == fed.schema.schema_hash()
    assert np.array_equal(got.train.x, data.train.x)
    assert np.array_equal(got.val.y, data.val.y)


def _write_csv(site: Path, name: str, text: str) -> Path:
    path = site / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("train_text", "message"),
    [
        ("a,c,label\n1,2,0\n", "header does not match the schema: no column 'b'"),
        ("a,b\n1,2\n", "header does not match the schema: no column 'label'"),
        ("", "header does not match the schema: no header"),
        ("a,b,c,label\n1,2,3,0\n", "header does not match the schema: unexpected column 'c'"),
        ("a,b,a,label\n1,2,3,0\n", "header does not match the schema: column 'a' appears 2"),
        ("a,b,label\n", "no examples"),
        ("a,b,label\n1,2,0\n1,2\n", "line 3 has 2 fields, expected 3"),
        ("a,b,label\n1,SECRET-VALUE,0\n", "line 2, column 'b': not a number"),
        ("a,b,label\n1,2,0\nnan,2,0\n", "column 'a' has 1 missing cell and the schema's"),
        ("a,b,label\n1,2,0\n1,2,\n", "line 3, column 'label': missing label"),
        ("a,b,label\n-inf,2,0\n", "line 2, column 'a': not finite"),
        ("a,b,label\n1,1e39,0\n", "line 2, column 'b': not finite"),
        ("a,b,label\n1,2,1.5\n", "line 2, column 'label': not an integer class index or a"),
        ("a,b,label\n1,2,w\n", "line 2, column 'label': not an integer class index or a"),
        ("a,b,label\n1,2,3\n", r"line 2, column 'label': outside \[0, 3\)"),
        ("a,b,label\n1,2,-1\n", r"line 2, column 'label': outside \[0, 3\)"),
    ],
)
def test_read_rejects_bad_train_csv(tmp_path: Path, train_text: str, message: str) -> None:
    write_site_data(tmp_path, _site(), _schema())
    path = _write_csv(tmp_path, "train.csv", train_text)
    with pytest.raises(DataError, match=message) as info:
        read_site_data(tmp_path)
    assert str(info.value).startswith(str(path))
    assert "SECRET" not in str(info.value)


def test_read_rejects_empty_val(tmp_path: Path) -> None:
    write_site_data(tmp_path, _site(), _schema())
    path = _write_csv(tmp_path, "val.csv", "a,b,label\n")
    with pytest.raises(DataError, match=f"{path}: no examples"):
        read_site_data(tmp_path)


@pytest.mark.parametrize("name", ["train.csv", "val.csv", "schema.json"])
def test_read_rejects_missing_file(tmp_path: Path, name: str) -> None:
    write_site_data(tmp_path, _site(), _schema())
    (tmp_path / name).unlink()
    with pytest.raises(DataError, match=f"{tmp_path / name}: file not found"):
        read_site_data(tmp_path)


def test_read_rejects_malformed_schema(tmp_path: Path) -> None:
    write_site_data(tmp_path, _site(), _schema())
    (tmp_path / "schema.json").write_text(json.dumps({"task": "toy"}))
    with pytest.raises(DataError, match=r"schema\.json: schema key"):
        read_site_data(tmp_path)


def test_read_rejects_non_utf8_and_nul(tmp_path: Path) -> None:
    write_site_data(tmp_path, _site(), _schema())
    (tmp_path / "train.csv").write_bytes(b"a,b,label\n\xff\xfe,1,0\n")
    with pytest.raises(DataError, match=r"train\.csv: not valid UTF-8 text"):
        read_site_data(tmp_path)
    (tmp_path / "train.csv").write_bytes(b"a,b,label\n1\x00,1,0\n")
    with pytest.raises(DataError, match="line 2, column 'a': not a number"):
        read_site_data(tmp_path)
    (tmp_path / "train.csv").write_text("a,b,label\n" + "1" * 200_000 + ",1,0\n")
    with pytest.raises(DataError, match=r"train\.csv: malformed CSV"):
        read_site_data(tmp_path)


def test_profile_of() -> None:
    schema, data = _schema(), _site()
    profile = profile_of(schema, data)
    assert profile.num_examples == 3
    assert profile.label_histogram == (1, 1, 1)
    assert profile.schema_hash == schema.schema_hash()
    assert profile.task == "toy"


def test_the_token_task_is_generated_the_same_every_time() -> None:
    schema, full = load_task("tokens")
    assert schema.feature_names == tuple(f"t{i}" for i in range(12))
    assert schema.num_classes == 16
    assert full.x.shape == (1800, 12)
    assert set(np.unique(full.x)) <= set(range(16))
    assert set(np.unique(full.y)) == set(range(16))
    _, again = load_task("tokens")
    assert np.array_equal(full.x, again.x)
    assert np.array_equal(full.y, again.y)
    # The language: most next tokens follow from the last two (3 * x[t] + step mod 16).
    step = (full.x[:, -1] - 3 * full.x[:, -2]) % 16
    previous = (full.x[:, -2] - 3 * full.x[:, -3]) % 16
    follows = (3 * full.x[:, -1] + step) % 16 == full.y
    assert follows[step == previous].mean() > 0.8


def test_a_class_digest_stands_in_for_many_class_names() -> None:
    names = tuple(f"tok{i}" for i in range(3000))
    schema = Schema(
        task="lm",
        feature_names=("t0", "t1"),
        num_classes=3000,
        class_names=(),
        class_digest=class_digest(names),
    )
    text = schema.to_json()
    assert len(text) < 200
    assert Schema.from_json(text, source="s").schema_hash() == schema.schema_hash()
    swapped = class_digest((names[1], names[0], *names[2:]))
    other = Schema(
        task="lm",
        feature_names=("t0", "t1"),
        num_classes=3000,
        class_names=(),
        class_digest=swapped,
    )
    assert other.schema_hash() != schema.schema_hash()
    with pytest.raises(DataError, match="s: schema 'class_digest' must be 64 hex digits"):
        Schema.from_json(text.replace(schema.class_digest, "00"), source="s")
    with pytest.raises(DataError, match="one class name per class"):
        Schema.from_json(text.replace('"num_classes":3000', '"num_classes":1'), source="s")
