"""Regenerate the checked-in protobuf and gRPC stubs under baton/v1/ from proto/."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "baton" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    """Runs protoc over every .proto file, writing under ``out_root``; returns the files."""
    sources = sorted(PROTO_ROOT.glob("baton/v1/*.proto"))
    if not sources:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    include = str(Path(protoc.__file__).parent / "_proto")
    # mypy-protobuf's plugins sit beside this interpreter; name them, so the script works
    # from a virtualenv that is not activated (as CI runs it).
    bindir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(
        p for p in (out_root / "baton" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if checked-in stubs are stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes() for p in generate(Path(tmp))}
        current = {
            p.name: p.read_bytes()
            for p in OUT_PACKAGE.iterdir()
            if p.name.endswith(GENERATED_SUFFIXES)
        }
        if opts.check:
            stale = sorted(
                n for n in fresh.keys() | current.keys() if fresh.get(n) != current.get(n)
            )
            if stale:
                print("stale generated stubs (run scripts/gen_protos.py):", *stale, sep="\n  ")
                return 1
            print(f"generated stubs are current ({len(fresh)} files)")
            return 0
        for name in current.keys() - fresh.keys():
            (OUT_PACKAGE / name).unlink()
        for name in fresh:
            shutil.copyfile(Path(tmp) / "baton" / "v1" / name, OUT_PACKAGE / name)
        print(f"wrote {len(fresh)} files to {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
