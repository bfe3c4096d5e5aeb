"""Tests for baton.ml.table and typed schemas: reading CSV and Parquet files by column name,
one-hot categorical features, labels by index or name, and the missing-value policies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from torch import nn

from baton.errors import DataError
from baton.ml.data import Schema, SiteData, Split, read_site_data, read_table, write_site_data
from baton.ml.models import plan_model
from baton.ml.table import read_inputs
from baton.plan import parse_plan


def _schema() -> Schema:
    return Schema(task="toy", feature_names=("a", "b"), num_classes=3, class_names=("x", "y", "z"))


TYPED = {
    "task": "tabular",
    "label": "diagnosis",
    "class_names": ["benign", "malignant"],
    "features": [
        {"name": "age", "type": "numeric"},
        {"name": "sex", "type": "categorical", "levels": ["F", "M"]},
    ],
    "missing": "impute",
}


def test_typed_schema_parses_and_encodes_one_hot_inputs() -> None:
    schema = Schema.from_json(json.dumps(TYPED), source="s.json")
    assert schema == Schema(
        task="tabular",
        feature_names=("age", "sex"),
        num_classes=2,
        class_names=("benign", "malignant"),
        categorical=(("sex", ("F", "M")),),
        label="diagnosis",
        missing="impute",
    )
    assert schema.input_names == ("age", "sex=F", "sex=M")
    assert schema.num_inputs == 3
    assert schema.to_json() == (
        '{"class_names":["benign","malignant"],"features":[{"name":"age","type":"numeric"},'
        '{"levels":["F","M"],"name":"sex","type":"categorical"}],"label":"diagnosis",'
        '"missing":"impute","task":"tabular"}'
    )
    assert Schema.from_json(schema.to_json(), source="s.json") == schema
    refuse = Schema.from_json(json.dumps({**TYPED, "missing": "refuse"}), source="s.json")
    assert refuse.schema_hash() != schema.schema_hash()


def test_a_typed_schema_of_legacy_shape_is_written_and_hashed_as_legacy() -> None:
    typed = {
        "task": "toy",
        "class_names": ["x", "y", "z"],
        "features": [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}],
    }
    schema = Schema.from_json(json.dumps(typed), source="s.json")
    assert schema == _schema()
    assert schema.to_json() == _schema().to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "s.json: schema key 'extra' is unknown"),
        ({"class_names": None}, "'class_names' must be a list of strings"),
        ({"class_names": ["a", "a"]}, "'class_names' must be unique"),
        ({"class_names": ["a"]}, "one class name per class"),
        ({"features": []}, "schema 'features' must not be empty"),
        ({"features": ["age"]}, "schema 'features' must be a list of objects"),
        ({"features": [{"name": "a", "type": "numeric", "unit": "y"}]}, "key 'unit' is unknown"),
        ({"features": [{"name": "a"}]}, "schema feature 0 key 'type' is missing"),
        ({"features": [{"name": "a", "type": "text"}]}, "'type' must be 'numeric' or 'categ"),
        ({"features": [{"name": 3, "type": "numeric"}]}, "'features[0].name' must be a string"),
        ({"features": [{"name": "a", "type": "categorical"}]}, "feature needs 'levels'"),
        ({"features": [{"name": "a", "type": "numeric", "levels": ["x"]}]}, "has no 'levels'"),
        (
            {"features": [{"name": "a", "type": "categorical", "levels": []}]},
            "schema feature 'a' needs non-empty, unique levels",
        ),
        (
            {"features": [{"name": "a", "type": "categorical", "levels": ["x", "x"]}]},
            "schema feature 'a' needs non-empty, unique levels",
        ),
        (
            {"features": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]},
            "schema feature name 'a' is not unique",
        ),
        (
            {"features": [{"name": "diagnosis", "type": "numeric"}]},
            "schema 'features' must not contain the label 'diagnosis'",
        ),
        (
            {
                "features": [
                    {"name": "s=F", "type": "numeric"},
                    {"name": "s", "type": "categorical", "levels": ["F"]},
                ]
            },
            "schema features must encode to unique input names",
        ),
        ({"missing": "drop"}, "schema 'missing' must be one of refuse, impute"),
        ({"label": 1}, "schema 'label' must be a string"),
    ],
)
def test_typed_schema_rejects(change: dict[str, object], message: str) -> None:
    text = json.dumps({**TYPED, **change})
    with pytest.raises(DataError, match=re.escape(message)) as info:
        Schema.from_json(text, source="s.json")
    assert str(info.value).startswith("s.json: ")


def test_typed_schema_needs_its_required_keys() -> None:
    text = json.dumps({k: v for k, v in TYPED.items() if k != "class_names"})
    with pytest.raises(DataError, match=r"s\.json: schema key 'class_names' is missing"):
        Schema.from_json(text, source="s.json")


def _typed(missing: str = "impute") -> Schema:
    return Schema.from_json(json.dumps({**TYPED, "missing": missing}), source="s.json")


def _parquet(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


NAN = float("nan")
# age, sex=F, sex=M for the rows below.
EXPECTED_X = [[61.0, 0.0, 1.0], [47.5, 1.0, 0.0], [30.0, 1.0, 0.0]]
EXPECTED_Y = [1, 0, 1]


def test_csv_columns_are_found_by_name_with_one_hot_and_labels_by_name_or_index(
    tmp_path: Path,
) -> None:
    path = _csv(tmp_path / "t.csv", "diagnosis,sex,age\nmalignant,M,61\n0,F,47.5\n1,F,30\n")
    split = read_table(path, _typed())
    assert split.x.dtype == np.float32
    assert split.x.tolist() == EXPECTED_X
    assert split.y.tolist() == EXPECTED_Y


def test_parquet_reads_the_same_table_as_csv(tmp_path: Path) -> None:
    path = _parquet(
        tmp_path / "t.parquet",
        {
            "sex": pa.array(["M", "F", "F"]).dictionary_encode(),
            "diagnosis": ["malignant", "0", "malignant"],
            "age": pa.array([61, 47, 30], type=pa.int32()),
        },
    )
    split = read_table(path, _typed())
    assert split.x.tolist() == [[61.0, 0.0, 1.0], [47.0, 1.0, 0.0], [30.0, 1.0, 0.0]]
    assert split.y.tolist() == EXPECTED_Y
    ints = _parquet(tmp_path / "i.parquet", {"age": [1.5], "sex": ["F"], "diagnosis": [1]})
    assert read_table(ints, _typed()).y.tolist() == [1]
    floats = _parquet(tmp_path / "f.parquet", {"age": [1.5], "sex": ["F"], "diagnosis": [1.0]})
    assert read_table(floats, _typed()).y.tolist() == [1]


@pytest.mark.parametrize("token", ["", "NA", "na", "NaN", "nan", "null", "NULL", " Na "])
def test_csv_missing_cells_are_nan_under_impute_and_refused_under_refuse(
    tmp_path: Path, token: str
) -> None:
    text = f"age,sex,diagnosis\n{token},M,1\n47.5,{token},0\n30,F,1\n{token},F,0\n"
    path = _csv(tmp_path / "t.csv", text)
    x = read_table(path, _typed("impute")).x
    assert np.isnan(x).tolist() == [
        [True, False, False],
        [False, True, True],
        [False, False, False],
        [True, False, False],
    ]
    assert x[~np.isnan(x)].tolist() == [0.0, 1.0, 47.5, 30.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(DataError) as info:
        read_table(path, _typed("refuse"))
    assert str(info.value) == (
        f"{path}: column 'age' has 2 missing cells and the schema's missing policy is 'refuse'"
    )


def test_parquet_nulls_and_nans_are_missing(tmp_path: Path) -> None:
    path = _parquet(
        tmp_path / "t.parquet",
        {
            "age": pa.array([None, NAN, 30.0], type=pa.float64()),
            "sex": pa.array(["M", None, "F"]),
            "diagnosis": [1, 0, 1],
        },
    )
    x = read_table(path, _typed("impute")).x
    assert np.isnan(x).tolist() == [[True, False, False], [True, True, True], [False] * 3]
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: column 'age' has 2 missing"):
        read_table(path, _typed("refuse"))
    ints = _parquet(
        tmp_path / "i.parquet",
        {"age": pa.array([None, 3], type=pa.int64()), "sex": ["F", "M"], "diagnosis": [0, 1]},
    )
    assert np.isnan(read_table(ints, _typed("impute")).x[:, 0]).tolist() == [True, False]
    cats = _parquet(
        tmp_path / "c.parquet",
        {"age": [1.0, 2.0], "sex": pa.array([None, "M"]), "diagnosis": [0, 1]},
    )
    with pytest.raises(DataError, match="column 'sex' has 1 missing cell and the schema's"):
        read_table(cats, _typed("refuse"))


def test_a_missing_label_is_an_error_under_either_policy(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path / "t.csv", "age,sex,diagnosis\n1,F,0\n2,M,NA\n")
    parquet_path = _parquet(
        tmp_path / "t.parquet",
        {"age": [1.0, 2.0], "sex": ["F", "M"], "diagnosis": pa.array([None, 1])},
    )
    for missing in ("impute", "refuse"):
        with pytest.raises(DataError, match="line 3, column 'diagnosis': missing label"):
            read_table(csv_path, _typed(missing))
        with pytest.raises(DataError, match="row 1, column 'diagnosis': missing label"):
            read_table(parquet_path, _typed(missing))


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"sex": ["F", "SECRET"]}, "row 2, column 'sex': not one of the schema's levels"),
        ({"sex": [1, 2]}, "row 1, column 'sex': not one of the schema's levels"),
        ({"age": ["1", "2"]}, "column 'age': not a numeric column (string)"),
        ({"age": [1.0, float("inf")]}, "row 2, column 'age': not finite"),
        ({"age": [1.0, 1e39]}, "row 2, column 'age': not finite"),
        ({"diagnosis": [0, 2]}, "row 2, column 'diagnosis': outside [0, 2)"),
        ({"diagnosis": [0.0, 1.5]}, "row 2, column 'diagnosis': not an integer class index"),
        ({"diagnosis": [True, False]}, "row 1, column 'diagnosis': not an integer class index"),
        ({"diagnosis": ["benign", "SECRET"]}, "row 2, column 'diagnosis': not an integer"),
        ({"extra": [1, 2]}, "header does not match the schema: unexpected column 'extra'"),
        ({"sex": None}, "header does not match the schema: no column 'sex'"),
    ],
)
def test_parquet_refusals_name_row_and_column_never_a_value(
    tmp_path: Path, columns: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"age": [1.0, 2.0], "sex": ["F", "M"], "diagnosis": [0, 1]}
    table = {k: v for k, v in {**base, **columns}.items() if v is not None}
    path = _parquet(tmp_path / "t.parquet", table)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_table(path, _typed())
    assert str(info.value).startswith(f"{path}: ")
    assert "SECRET" not in str(info.value)


def test_csv_refuses_an_unknown_level_without_showing_it(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", "age,sex,diagnosis\n1,F,0\n2,SECRET,1\n")
    with pytest.raises(DataError) as info:
        read_table(path, _typed())
    assert str(info.value) == f"{path}: line 3, column 'sex': not one of the schema's levels"


def test_unreadable_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "t.parquet"
    corrupt.write_bytes(b"PAR1 not really parquet PAR1")
    with pytest.raises(DataError, match=f"^{re.escape(str(corrupt))}: not a readable Parquet"):
        read_table(corrupt, _typed())
    with pytest.raises(DataError, match=r"absent\.parquet: file not found"):
        read_table(tmp_path / "absent.parquet", _typed())
    with pytest.raises(DataError, match=r"t\.tsv: unknown data file type"):
        read_table(tmp_path / "t.tsv", _typed())
    empty = _parquet(
        tmp_path / "e.parquet",
        {
            "age": pa.array([], pa.float64()),
            "sex": pa.array([], pa.string()),
            "diagnosis": pa.array([], pa.int64()),
        },
    )
    with pytest.raises(DataError, match=r"e\.parquet: no examples"):
        read_table(empty, _typed())


def _typed_site(site: Path, fmt: str) -> None:
    site.mkdir(exist_ok=True)
    (site / "schema.json").write_text(json.dumps(TYPED), encoding="utf-8")
    rows = {"age": [61.0, 47.5], "sex": ["M", "F"], "diagnosis": ["malignant", "benign"]}
    for stem in ("train", "val"):
        if fmt == "parquet":
            _parquet(site / f"{stem}.parquet", rows)
        else:
            _csv(site / f"{stem}.csv", "sex,age,diagnosis\nM,61,malignant\nF,47.5,benign\n")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_site_holds_one_format(tmp_path: Path, fmt: str) -> None:
    _typed_site(tmp_path, fmt)
    schema, data = read_site_data(tmp_path)
    assert schema == _typed()
    assert data.train.x.tolist() == [[61.0, 0.0, 1.0], [47.5, 1.0, 0.0]]
    assert data.val.y.tolist() == [1, 0]
    _typed_site(tmp_path, "parquet" if fmt == "csv" else "csv")
    with pytest.raises(DataError, match=r"holds both train\.csv/val\.csv and train\.parquet"):
        read_site_data(tmp_path)
    for stem in ("train", "val"):
        for suffix in ("csv", "parquet"):
            (tmp_path / f"{stem}.{suffix}").unlink()
    with pytest.raises(DataError, match=r"train\.csv: file not found \(nor train\.parquet\)"):
        read_site_data(tmp_path)


def test_write_site_data_parquet_round_trips_and_refuses_categorical(tmp_path: Path) -> None:
    train = Split(
        x=np.array([[0.1, -2.5], [np.float32(1 / 3), 7.0]], np.float32), y=np.array([0, 2])
    )
    data = SiteData(train=train, val=Split(x=train.x[:1], y=train.y[:1]))
    write_site_data(tmp_path / "p", data, _schema(), fmt="parquet")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "schema.json",
        "train.parquet",
        "val.parquet",
    ]
    schema, got = read_site_data(tmp_path / "p")
    assert schema == _schema()
    assert np.array_equal(got.train.x, data.train.x)
    assert got.train.y.tolist() == [0, 2]
    with pytest.raises(ValueError, match="unknown data format 'xlsx'; known: csv, parquet"):
        write_site_data(tmp_path / "q", data, _schema(), fmt="xlsx")
    with pytest.raises(ValueError, match="writes encoded inputs only"):
        write_site_data(tmp_path / "q", data, _typed())
    assert not (tmp_path / "q").exists()


def test_the_model_is_sized_for_the_encoded_inputs() -> None:
    plan = parse_plan('[run]\nname="p"\nsites=["a"]\n[model]\nname="logreg"\n[task]\ndataset="t"\n')
    model = plan_model(plan, _typed())
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert (first.in_features, first.out_features) == (3, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categorical": (("c", ("x",)),)}, "must name features once each, in feature order"),
        ({"categorical": (("b", ("x",)), ("a", ("y",)))}, "once each, in feature order"),
        ({"categorical": (("a", ("x",)), ("a", ("y",)))}, "once each, in feature order"),
        ({"label": ""}, "schema 'label' must not be empty"),
        ({"label": "a"}, "schema 'feature_names' must not contain 'a'"),
        ({"missing": "drop"}, "schema 'missing' must be one of refuse, impute"),
    ],
)
def test_schema_fields_are_validated(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "task": "toy",
        "feature_names": ("a", "b"),
        "num_classes": 3,
        "class_names": ("x", "y", "z"),
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        Schema(**{**fields, **change})


def test_a_numeric_typed_schema_writes_its_label_column_and_missing_cells(tmp_path: Path) -> None:
    schema = Schema(
        task="t",
        feature_names=("a",),
        num_classes=2,
        class_names=("no", "yes"),
        label="outcome",
        missing="impute",
    )
    split = Split(x=np.array([[np.nan], [2.5]], np.float32), y=np.array([1, 0]))
    write_site_data(tmp_path, SiteData(train=split, val=split), schema)
    assert (tmp_path / "train.csv").read_text() == "a,outcome\nnan,1\n2.5,0\n"
    got_schema, got = read_site_data(tmp_path)
    assert got_schema == schema
    assert np.isnan(got.train.x[0, 0])
    assert got.train.x[1, 0] == 2.5


def test_cases_to_predict_may_come_without_their_label(tmp_path: Path) -> None:
    unlabelled = _csv(tmp_path / "new.csv", "sex,age\nM,61\nF,47.5\nF,30\n")
    x, y = read_inputs(unlabelled, _typed())
    assert x.tolist() == EXPECTED_X
    assert y is None
    labelled = _csv(tmp_path / "t.csv", "diagnosis,sex,age\nmalignant,M,61\n0,F,47.5\n1,F,30\n")
    x, y = read_inputs(labelled, _typed())
    assert y is not None
    assert y.tolist() == EXPECTED_Y
    with pytest.raises(DataError, match=r"header does not match the schema: no column 'age'"):
        read_inputs(_csv(tmp_path / "short.csv", "sex\nM\n"), _typed())
    with pytest.raises(DataError, match="no column 'diagnosis'"):
        read_table(unlabelled, _typed())  # training data needs its labels
