"""The daemon's start-up sweep of plaintext a killed daemon left in its work directory.

A hop's plaintext lives only while the hop runs (``docs/security.md``): the opened input
``<run>/hop-NNNNN.in.safetensors``, the trained output ``<run>/hop-NNNNN.out.safetensors``,
a final model opened for evaluation ``<run>/final.in.safetensors``, and the temporary
``.<name>.*.part`` files they are written through. The daemon deletes them when the hop
ends; a SIGKILL or a power cut skips that. None of them is ever read again after a
restart (a hop delivered again downloads and opens its input anew), so the sweep deletes
them all, before the daemon dials the coordinator.

A hop's job directory (``<run>/hop-NNNNN.job``: the in-process trainer's within-hop
checkpoints, or a parallel hop's plaintext weights, training split and the workers'
checkpoints) is kept for the hop to resume, unless the hop is known to be
finished: this site's outbox holds a sealed output of that hop or of a later hop of the
same run (``<run>/hop-MMMMM.out/entry.json`` with ``MMMMM >= NNNNN``). Job directories of
hops never delivered again go after ``[training] stale_job_hours``
(:func:`site_node.local_training.remove_stale_jobs`).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

_PLAINTEXT = re.compile(r"^\.?(hop-\d{5}\.(in|out)|final\.in)\.safetensors(\..+\.part)?$")
"""Names of a hop's plaintext files and of the temporary files they are written through."""
_HOP = re.compile(r"^hop-(\d{5})\.(job|out)$")


def sweep_plaintext(work_dir: Path, *, job_roots: tuple[Path, ...] = ()) -> list[Path]:
    """Deletes the plaintext hop files under ``work_dir`` and the job directories of
    finished hops under ``work_dir`` and each of ``job_roots`` (a multi-node site's shared
    directory).

    Args:
        work_dir: The site's work directory (``<work_dir>/<run>/...``).
        job_roots: Further roots holding ``<run>/hop-NNNNN.job`` directories.

    Returns:
        The files and directories removed.
    """
    removed: list[Path] = []
    for path in sorted(work_dir.glob("*/*.safetensors*")):
        if path.is_file() and _PLAINTEXT.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    finished = _newest_sealed_hops(work_dir)
    for root in (work_dir, *job_roots):
        for job in sorted(root.glob("*/hop-*.job")):
            match = _HOP.match(job.name)
            newest = finished.get(job.parent.name)
            if match and job.is_dir() and newest is not None and newest >= int(match[1]):
                shutil.rmtree(job, ignore_errors=True)
                removed.append(job)
    for path in removed:
        logger.warning("removed %s: plaintext a stopped daemon left behind", path)
    return removed


def _newest_sealed_hops(work_dir: Path) -> dict[str, int]:
    """The highest hop index with a sealed output in this site's outbox, per run."""
    newest: dict[str, int] = {}
    for entry in work_dir.glob("*/hop-*.out/entry.json"):
        match = _HOP.match(entry.parent.name)
        if match:
            run = entry.parent.parent.name
            newest[run] = max(newest.get(run, -1), int(match[1]))
    return newest
