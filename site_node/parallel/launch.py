"""Launches a hop's training workers and waits for the full trained model.

:func:`prepare` writes the job, the incoming weights and the training data into a private
directory (mode 0700); :func:`launch` starts the workers (``torchrun --standalone`` for
several, ``torchrun`` with a c10d rendezvous for several machines (:mod:`.nodes`), a thread
of this process for one, or forked processes on CPU in tests), passes
rank 0's progress lines (step, loss, samples/s) to a callback while they run, and returns
the path of the trained weights. If any worker fails, the others are stopped, the result
files are removed (nothing half-made is ever sent on), and :class:`WorkerError` carries
the failing worker's reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from baton.errors import TrainingInterrupted, WorkerError
from baton.ml.codec import save_state_file
from baton.wire.channel import sha256_file
from site_node.parallel import checkpoint
from site_node.parallel.job import JOB_FILE, Job
from site_node.parallel.nodes import Rendezvous, torchrun_command

logger = logging.getLogger(__name__)

Starter = Literal["auto", "torchrun", "fork"]
ProgressFn = Callable[[dict[str, Any]], None]
"""Called with each progress line of rank 0: ``{"step", "total", "loss", "samples_per_s"}``,
or ``{"event": "start", "resumed_from", "total"}`` when the workers start."""

_STOP_GRACE_S = 3.0
INPUTS_FILE = "inputs.sha256"
"""Digest of the job file, weights and data that the directory's checkpoints belong to."""


def prepare(
    job: Job, *, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> Path:
    """Writes the job, weights and data into ``job.workdir`` (created private, 0700).

    A directory prepared before for the very same job (same description, weights and
    data: a hop interrupted and started again) keeps its within-hop checkpoints, so the
    workers resume from the newest; checkpoints of any other job are removed.

    Returns:
        The job file.
    """
    job.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(job.dir, 0o700)
    save_state_file(job.weights_path, weights)
    save_state_file(job.data_path, {"x": x, "y": y})
    path = job.dir / JOB_FILE
    path.write_text(job.to_json(), encoding="utf-8")
    inputs = _fingerprint(path, job.weights_path, job.data_path)
    stamp = job.dir / INPUTS_FILE
    try:
        previous = stamp.read_text(encoding="utf-8")
    except FileNotFoundError:
        previous = ""
    if previous != inputs:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
        stamp.write_text(inputs, encoding="utf-8")
    found = checkpoint.latest(job.checkpoint_dir)
    if found is not None:
        logger.info("the job's checkpoint at step %d will be resumed", found[0])
    return path


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_file(p).encode("ascii"))
    return digest.hexdigest()


class _Running(Protocol):
    def failed(self) -> str | None:
        """A failure description once any worker failed, else None."""

    def done(self) -> bool:
        """Whether every worker has exited successfully."""

    def stop(self) -> None:
        """Stops every worker still running."""

    def kill(self) -> None:
        """Kills every worker at once (SIGKILL), as a crash or a preemption would."""


@dataclass(kw_only=True, slots=True)
class _Thread:
    thread: threading.Thread
    error: list[BaseException]

    def failed(self) -> str | None:
        return f"worker failed: {type(self.error[0]).__name__}" if self.error else None

    def done(self) -> bool:
        return not self.thread.is_alive() and not self.error

    def stop(self) -> None:
        self.thread.join()

    def kill(self) -> None:
        raise NotImplementedError("a worker thread cannot be killed")


@dataclass(kw_only=True, slots=True)
class _Processes:
    procs: Sequence[subprocess.Popen[bytes] | multiprocessing.process.BaseProcess]

    def _codes(self) -> list[int | None]:
        return [p.poll() if isinstance(p, subprocess.Popen) else p.exitcode for p in self.procs]

    def failed(self) -> str | None:
        codes = list(enumerate(self._codes()))
        # A worker killed by a signal is the cause; its peers then fail on the lost link.
        for rank, code in sorted(codes, key=lambda rc: (rc[1] or 0) >= 0):
            if code is not None and code < 0:
                return f"worker process {rank} was killed by {signal.Signals(-code).name}"
            if code is not None and code != 0:
                return f"worker process {rank} exited with code {code}"
        return None

    def done(self) -> bool:
        return all(code == 0 for code in self._codes())

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            if isinstance(p, subprocess.Popen):
                p.wait()
            else:
                p.join()

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for p in self.procs:
            if isinstance(p, subprocess.Popen):
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            else:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join()


def start_workers(
    job: Job,
    job_path: Path,
    starter: Starter = "auto",
    *,
    rendezvous: Rendezvous | None = None,
    local_addr: str = "",
) -> _Running:
    """Starts the workers of ``job`` without waiting for them: this node's share of them
    when ``rendezvous`` spreads the job over several nodes."""
    # The worker module pulls in torch.distributed's checkpoint and pipelining (about 2 s of
    # imports): a site loads it on its first parallel hop, here, before any fork, not at start.
    from site_node.parallel.worker import run_worker

    world = job.plan.world_size
    if rendezvous is not None:
        if starter == "fork" or world % rendezvous.nodes != 0:
            raise ValueError(
                f"{world} workers cannot be spread by torchrun over {rendezvous.nodes} nodes"
            )
        command = torchrun_command(
            job_path,
            nproc=world // rendezvous.nodes,
            rendezvous=rendezvous,
            host=True,
            local_addr=local_addr,
        )
        return _Processes(procs=[_popen(command, job)])
    if world == 1:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                run_worker(job_path, rank=0, world_size=1, init_method=None)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="baton-trainer", daemon=True)
        thread.start()
        return _Thread(thread=thread, error=errors)
    if starter == "fork":
        if job.device != "cpu":
            raise ValueError("forked workers are for CPU only; use torchrun with CUDA")
        ctx = multiprocessing.get_context("fork")
        init = f"file://{job.dir / f'rendezvous-{uuid.uuid4().hex}'}"
        procs = [
            ctx.Process(target=_forked, args=(job_path,), kwargs=_fork_args(r, world, init))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        return _Processes(procs=procs)
    command = torchrun_command(job_path, nproc=world, rendezvous=None)
    return _Processes(procs=[_popen(command, job)])


def _popen(command: list[str], job: Job) -> subprocess.Popen[bytes]:
    with (job.dir / "workers.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _forked(job_path: Path, *, rank: int, world_size: int, init_method: str) -> None:
    # One compute thread per worker: the CPU cores are shared among the workers, and an
    # OpenMP pool inherited through fork from a parent that used it never answers (the
    # child's first parallel kernel would wait for it forever).
    torch.set_num_threads(1)
    from site_node.parallel.worker import run_worker  # already loaded by start_workers

    code = 1
    try:
        run_worker(job_path, rank=rank, world_size=world_size, init_method=init_method)
        code = 0
    finally:
        # End the forked child here, not through multiprocessing's exit path: that waits
        # for the child's threads, and a thread inherited in a locked state through fork
        # (or left behind by the collective library) can hold a failed rank alive forever,
        # so the launcher never sees it fail and its peers wait in a collective. The
        # failure itself is already in the job's errors/ directory (run_worker).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork_args(rank: int, world: int, rendezvous: str) -> dict[str, Any]:
    return {"rank": rank, "world_size": world, "init_method": rendezvous}


def launch(
    job_path: Path,
    *,
    starter: Starter = "auto",
    progress: ProgressFn | None = None,
    poll_s: float = 0.05,
    should_stop: Callable[[], bool] | None = None,
    rendezvous: Rendezvous | None = None,
    local_addr: str = "",
) -> Path:
    """Runs the job at ``job_path`` to the end and returns the trained weights' path.

    Args:
        job_path: A job file written by :func:`prepare`.
        starter: ``torchrun`` (or ``auto``) for several workers; ``fork`` starts them as
            forked children of this process (CPU only: for tests, where it saves the
            seconds of start-up per process). One worker always runs in a thread here.
        progress: Receives rank 0's progress lines as they appear.
        poll_s: How often to look at the workers and the progress file.
        should_stop: Asked at every poll; True stops the workers.
        rendezvous: Spreads the workers over several nodes (see
            :mod:`site_node.parallel.nodes`); this node starts its share and hosts the
            rendezvous. The job directory must be one every node sees.
        local_addr: This node's address for the other nodes (with ``rendezvous``).

    Raises:
        WorkerError: A worker failed; the message is the failing rank's reason.
        TrainingInterrupted: ``should_stop`` said so; the checkpoints stay.
    """
    job = Job.read(job_path)
    for stale in (job.output_path, job.result_path):
        stale.unlink(missing_ok=True)
    for old in job.errors_dir.glob("rank-*.json"):
        old.unlink()
    job.progress_path.unlink(missing_ok=True)
    running = start_workers(job, job_path, starter, rendezvous=rendezvous, local_addr=local_addr)
    tail = _Tail(job.progress_path, progress)
    stopped = False
    try:
        while True:
            tail.poll()
            failure = running.failed()
            if failure is not None or running.done():
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
            time.sleep(poll_s)
    finally:
        running.stop()
    tail.poll()
    if stopped:
        raise TrainingInterrupted("the site is stopping; the hop resumes from its checkpoint")
    if failure is None and not (job.output_path.exists() and job.result_path.exists()):
        failure = "the workers exited without writing a result"
    if failure is not None:
        job.output_path.unlink(missing_ok=True)
        job.result_path.unlink(missing_ok=True)
        cause, from_baton = reason(job)
        if cause is None and rendezvous is not None and _rendezvous_timed_out(job):
            cause = (
                f"not all {rendezvous.nodes} nodes joined the rendezvous at "
                f"{rendezvous.endpoint} within {rendezvous.join_timeout_s:.0f}s "
                "(is 'site-node worker-node' running on the others?)"
            )
        if cause is None or (not from_baton and "killed by" in failure):
            cause = failure
        raise WorkerError(f"training failed: {cause}", retryable=not from_baton)
    return job.output_path


def _rendezvous_timed_out(job: Job) -> bool:
    try:
        log = (job.dir / "workers.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "RendezvousTimeoutError" in log


def reason(job: Job) -> tuple[str | None, bool]:
    """The most telling failure reason the workers left, and whether it is a Baton error:
    a Baton error first, else the earliest one (the others usually fail because a peer
    went away); None if the workers left no reason."""
    records = []
    for path in job.errors_dir.glob("rank-*.json"):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    if not records:
        return None, False
    first = min(records, key=lambda r: (not r.get("baton", False), r.get("time", 0.0)))
    return f"rank {first['rank']}: {first['type']}: {first['message']}", bool(first["baton"])


class _Tail:
    """Follows a growing JSON-lines file, passing each complete line on."""

    def __init__(self, path: Path, callback: ProgressFn | None) -> None:
        self.path, self.callback, self.offset = path, callback, 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        for raw in chunk[:end].splitlines():
            line = json.loads(raw)
            logger.info("training progress: %s", line)
            if self.callback is not None:
                self.callback(line)


def read_result(job: Job) -> dict[str, Any]:
    """What the workers reported (``steps``, ``losses``, ``samples_per_s``, ``resumed_from``)."""
    value: dict[str, Any] = json.loads(job.result_path.read_text(encoding="utf-8"))
    return value
