"""Does a larger gRPC message move blobs faster? The plain mTLS relay of ``baton bench
hop`` (upload then download through a relay process, no crypto) and its cut-through
variant (the coordinator's blob store, down while up), at 1, 2 and 4 MiB per message.

Run: ``python benchmarks/chunk_sizes.py [--size-mib 512] [--reps 3]``. Prints one table:
median seconds, GB/s and the ratio against 1 MiB (the size every Baton endpoint uses,
``baton.wire.channel.CHUNK_BYTES``), all measured in this process's run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from hop_baselines import relay_copy
from hop_world import make_pki, write_model

CHUNKS_MIB = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="baton-chunks-") as tmp:
        root = Path(tmp)
        make_pki(root)
        src, dst = root / "model.bin", root / "copy.bin"
        write_model(src, size)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.reps):
            for mode in ("up then down", "cut-through"):
                for mib in CHUNKS_MIB:
                    seconds = relay_copy(
                        root, src, dst, tls=True, cut=mode == "cut-through", chunk=mib << 20
                    )
                    got = dst.stat().st_size
                    if got != size:
                        raise SystemExit(f"{mode} at {mib} MiB delivered {got} bytes")
                    times.setdefault((mode, mib), []).append(seconds)
                    dst.unlink()
    print(f"mTLS gRPC relay, {args.size_mib} MiB, median of {args.reps}\n")
    print("| relay | message | seconds | GB/s | vs 1 MiB |")
    print("|---|---:|---:|---:|---:|")
    for mode in ("up then down", "cut-through"):
        base = statistics.median(times[(mode, 1)])
        for mib in CHUNKS_MIB:
            med = statistics.median(times[(mode, mib)])
            gbps = size / med / 1e9
            print(f"| {mode} | {mib} MiB | {med:.2f} | {gbps:.3f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
