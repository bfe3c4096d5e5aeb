"""Sealing and opening a model file against a plain file copy, in one process.

Run: ``python benchmarks/seal_bench.py [--sizes-mib 64 256] [--repeats 5]``. GB/s counts
1e9 bytes of plaintext (random float32 values); each figure is the median of the repeats.
``open`` fsyncs its output before renaming it into place, and so does ``seal``; the
``copy + fsync`` row shows what that alone costs next to the plain copy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from baton.security.envelope import Expectation, HopContext, RecipientKey, open_file, seal_file
from baton.security.replay import MemoryReplayGuard

if TYPE_CHECKING:
    from collections.abc import Callable

SENDER = "spiffe://bench/site/sender"
RECEIVER = "spiffe://bench/site/receiver"
HASH = hashlib.sha256(b"bench").hexdigest()


def _write_model(path: Path, size: int) -> None:
    """Writes ``size`` bytes of random float32 values, 16 MiB at a time."""
    rng = np.random.default_rng(0)
    block = 4 << 20  # float32 values per block
    with path.open("wb") as file:
        left = size // 4
        while left:
            n = min(block, left)
            file.write(rng.standard_normal(n, dtype=np.float32).tobytes())
            left -= n


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with dst.open("rb+") as file:
        os.fsync(file.fileno())


def _median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(work: Path, size: int, repeats: int) -> dict[str, float]:
    """Returns median seconds per operation for one model size."""
    plain, copy, sealed, opened = (work / n for n in ("model", "copy", "sealed", "opened"))
    _write_model(plain, size)
    signing, encryption = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    ctx = HopContext(
        run_id="bench",
        hop_index=0,
        sender=SENDER,
        recipient=RECEIVER,
        previous_manifest_hash=HASH,
        plan_hash=HASH,
        schema_hash=HASH,
    )
    recipients = [RecipientKey(spiffe_id=RECEIVER, public_key=encryption.public_key())]
    signed = b""

    def seal() -> None:
        nonlocal signed
        signed = seal_file(plain, sealed, ctx=ctx, sender_key=signing, recipients=recipients)

    def open_() -> None:
        open_file(
            sealed,
            opened,
            signed,
            me=RECEIVER,
            my_key=encryption,
            expect=Expectation(
                run_id="bench",
                hop_index=0,
                sender=SENDER,
                previous_manifest_hash=HASH,
                plan_hash=HASH,
                max_plaintext_bytes=size,
            ),
            sender_key=signing.public_key(),
            replay=MemoryReplayGuard(),
        )

    results = {
        "copy": _median_seconds(lambda: shutil.copyfile(plain, copy), repeats),
        "copy + fsync": _median_seconds(lambda: _copy_fsync(plain, copy), repeats),
        "seal": _median_seconds(seal, repeats),
        "open": _median_seconds(open_, repeats),
    }
    if opened.read_bytes() != plain.read_bytes():
        raise SystemExit("open did not give back the plaintext")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    print(f"{'size':>8} {'operation':<13} {'seconds':>8} {'GB/s':>6} {'x copy':>7}")
    for mib in opts.sizes_mib:
        size = mib << 20
        with tempfile.TemporaryDirectory() as tmp:
            results = bench(Path(tmp), size, opts.repeats)
        for name, seconds in results.items():
            speed, ratio = size / seconds / 1e9, seconds / results["copy"]
            print(f"{mib:>4} MiB {name:<13} {seconds:>8.3f} {speed:>6.2f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
