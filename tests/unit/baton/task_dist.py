"""A throwaway distribution on disk that registers the task ``toy``: what the task-pin
tests install, as a wheel would or as an editable install does."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

NAME = "toytask"
VERSION = "1.0"
TASK = "toy"
PACKAGE = "toytask_pkg"


@dataclass(frozen=True)
class ToyDist:
    """Where the distribution lies: its import root, its package and its metadata folder."""

    site: Path
    package: Path
    metadata: Path

    def manifest(self, *names: str) -> str:
        """The pin this distribution should have if exactly ``names`` (relative to the
        import root of the package) are what it covers."""
        lines = "".join(
            f"{name} {hashlib.sha256(self._where(name).read_bytes()).hexdigest()}\n"
            for name in sorted(names)
        )
        return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()

    def _where(self, name: str) -> Path:
        return (self.package.parent if name.startswith(PACKAGE) else self.site) / name


def install(root: Path, monkeypatch: pytest.MonkeyPatch, *, editable: bool = False) -> ToyDist:
    """Writes ``toytask`` under ``root`` and puts it on ``sys.path``.

    As a wheel installs it, its ``RECORD`` lists the package, the metadata, byte code and a
    console script outside the install folder. As an editable install, the metadata lists
    only itself and a ``.pth`` file, and the package lies in a separate source folder.
    """
    site = root / "site"
    src = root / "src" if editable else site
    package = src / PACKAGE
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A toy task."""\n')
    (package / "task.py").write_text("def load(path):\n    return path\n")
    (package / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\x00compiled")
    metadata = site / f"{NAME}-{VERSION}.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n")
    (metadata / "entry_points.txt").write_text(f"[baton.tasks]\n{TASK} = {PACKAGE}.task:load\n")
    (metadata / "INSTALLER").write_text("pip\n")
    listed = [f"{metadata.name}/{f}" for f in ("METADATA", "entry_points.txt", "INSTALLER")]
    listed.append(f"{metadata.name}/RECORD")
    if editable:
        (site / f"__editable__.{NAME}-{VERSION}.pth").write_text(f"{src}\n")
        (metadata / "direct_url.json").write_text(
            json.dumps({"url": src.as_uri(), "dir_info": {"editable": True}})
        )
        listed += [f"__editable__.{NAME}-{VERSION}.pth", f"{metadata.name}/direct_url.json"]
        monkeypatch.syspath_prepend(str(src))
    else:
        listed += [
            f"{PACKAGE}/__init__.py",
            f"{PACKAGE}/task.py",
            f"{PACKAGE}/__pycache__/task.cpython-311.pyc",
            f"../../bin/{NAME}",
        ]
    (metadata / "RECORD").write_text("".join(f"{f},,\n" for f in listed))
    monkeypatch.syspath_prepend(str(site))
    return ToyDist(site=site, package=package, metadata=metadata)
