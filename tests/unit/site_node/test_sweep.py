"""The start-up sweep deletes every plaintext hop file and finished hops' job directories,
and keeps what a restarted hop still needs (sealed files, unfinished jobs, the outbox)."""

from __future__ import annotations

from pathlib import Path

from site_node.sweep import sweep_plaintext


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"plaintext weights")
    return path


def test_plaintext_and_finished_jobs_go_and_the_rest_stays(tmp_path: Path) -> None:
    work, shared = tmp_path / "work", tmp_path / "shared"
    gone = [
        _touch(work / "run-a" / "hop-00003.in.safetensors"),
        _touch(work / "run-a" / "hop-00003.out.safetensors"),
        _touch(work / "run-a" / ".hop-00003.out.safetensors.k2j9x.part"),
        _touch(work / "run-b" / "final.in.safetensors"),
        _touch(work / "run-b" / ".final.in.safetensors.a1b2.part"),
        # run-a sealed hop 3: its job and an older one are finished.
        _touch(work / "run-a" / "hop-00003.job" / "model.safetensors").parent,
        _touch(work / "run-a" / "hop-00001.job" / "checkpoints" / "latest.json").parent.parent,
        _touch(shared / "run-a" / "hop-00003.job" / "data.safetensors").parent,
    ]
    kept = [
        _touch(work / "run-a" / "hop-00003.out" / "entry.json"),
        _touch(work / "run-a" / "hop-00003.out" / "sealed"),
        _touch(work / "run-a" / "hop-00004.in.sealed"),
        # A later hop of run-a, and run-b's hop, were never sealed: they resume.
        _touch(work / "run-a" / "hop-00005.job" / "model.safetensors"),
        _touch(work / "run-b" / "hop-00000.job" / "model.safetensors"),
        _touch(shared / "run-b" / "hop-00002.job" / "model.safetensors"),
        _touch(work / "run-b" / "notes.safetensors.txt"),
        _touch(work / "audit.jsonl"),
    ]

    removed = sweep_plaintext(work, job_roots=(shared,))

    assert sorted(removed) == sorted(gone)
    assert [p for p in gone if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert sweep_plaintext(work, job_roots=(shared,)) == []


def test_an_empty_or_missing_work_directory_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_plaintext(tmp_path / "missing") == []
    assert sweep_plaintext(tmp_path) == []
