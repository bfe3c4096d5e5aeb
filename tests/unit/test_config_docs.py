"""docs/config.md is what scripts/gen_config_docs.py makes of the config dataclasses today."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest

from baton.ml.data import Schema
from baton.plan import RunPlan
from coordinator.config import CoordinatorConfig
from site_node.config import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "config.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """The generator script, imported as a module."""
    path = ROOT / "scripts" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_page_is_current(gen: ModuleType) -> None:
    assert DOC.read_text(encoding="utf-8") == gen.render(), (
        "docs/config.md is stale: run .venv/bin/python scripts/gen_config_docs.py"
    )


def dotted_keys(cls: type, section: str = "") -> set[str]:
    """Every dotted key of a config dataclass, its nested tables' keys included."""
    out = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{section}.{field.name}" if section else field.name
        out.add(key)
        if dataclasses.is_dataclass(hints[field.name]):
            out |= dotted_keys(hints[field.name], key)
    return out


@pytest.mark.parametrize(
    ("cls", "sample"),
    [
        (CoordinatorConfig, {"hop_pickup_seconds", "tls.key", "metrics.listen"}),
        (SiteConfig, {"server_name", "training.shared_dir", "data.min_val_examples"}),
        (RunPlan, {"run.sites", "task.sha256", "faults.on_failed_hop"}),
    ],
)
def test_every_key_has_a_row(cls: type, sample: set[str]) -> None:
    rows = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOC.read_text(encoding="utf-8"), re.M))
    expected = dotted_keys(cls)
    assert sample <= expected
    assert expected - rows == set()


def test_row_shows_type_default_and_docstring() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert (
        "| `lease_seconds` | float | `15.0` | A site whose last heartbeat is older than this is"
        " shown offline. |" in text
    )
    assert "| `coordinator` | string | *required* |" in text
    assert "| `crl` | path (optional) | *unset* |" in text
    assert "| `run.sites` | array of strings | *required* |" in text


def test_schema_example_parses() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("Example (typed form):\n\n```json\n")[1].split("```")[0]
    schema = Schema.from_json(example, source="docs/config.md")
    assert schema.input_names == ("age", "ward=icu", "ward=general")
    assert schema.missing == "impute"


def test_undocumented_field_is_refused(gen: ModuleType) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
    class Bare:
        """A config with one documented key and one without."""

        documented: int = 1
        """Has a docstring."""
        bare: int = 2

    with pytest.raises(gen.UndocumentedField, match=r"Bare\.bare has no docstring"):
        list(gen.tables(Bare, "", "test"))


def test_check_mode_reports_a_stale_page(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(gen.render().replace("`15.0`", "`16.0`"), encoding="utf-8")
    monkeypatch.setattr(gen, "OUT", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["gen_config_docs.py", "--check"])
    assert gen.main() == 1
    monkeypatch.setattr(sys, "argv", ["gen_config_docs.py"])
    assert gen.main() == 0
    monkeypatch.setattr(sys, "argv", ["gen_config_docs.py", "--check"])
    assert gen.main() == 0
