"""The schema of ``SqliteStore`` (version 2) and its row <-> record codecs."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from baton.domain import BlobRef, Capabilities, DataProfile, Device
from baton.errors import NotFoundError
from coordinator.store.base import (
    EventKind,
    EventRecord,
    HopRecord,
    HopState,
    RunRecord,
    RunState,
    SiteRecord,
)
from coordinator.store.rules import as_floats, check_replan

if TYPE_CHECKING:
    import sqlite3

SCHEMA_VERSION = 2
"""The schema this code reads and writes, kept in ``PRAGMA user_version``."""

SCHEMA_V1 = """
CREATE TABLE sites (
    site_id TEXT PRIMARY KEY,
    certificate_pem TEXT NOT NULL,
    capabilities_json TEXT NOT NULL,
    profile_json TEXT NOT NULL,
    software_version TEXT NOT NULL,
    signing_certificate_pem TEXT NOT NULL,
    encryption_certificate_pem TEXT NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan_toml TEXT NOT NULL,
    sites_json TEXT NOT NULL,
    cycles INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    total_hops INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    error TEXT NOT NULL,
    result_blob_id TEXT,
    result_size INTEGER,
    plan_signature BLOB NOT NULL,
    owner_signing_certificate_pem TEXT NOT NULL,
    owner_encryption_certificate_pem TEXT NOT NULL
);
CREATE INDEX runs_by_age ON runs (created_ms, run_id);
CREATE TABLE hops (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    hop_index INTEGER NOT NULL,
    cycle INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'assigned', 'completed', 'failed')),
    input_blob_id TEXT,
    input_size INTEGER,
    output_blob_id TEXT,
    output_size INTEGER,
    metrics_before_json TEXT NOT NULL,
    metrics_after_json TEXT NOT NULL,
    num_examples INTEGER NOT NULL,
    train_seconds REAL NOT NULL,
    error TEXT NOT NULL,
    output_manifest BLOB NOT NULL,
    PRIMARY KEY (run_id, hop_index)
);
CREATE INDEX hops_by_site ON hops (site_id, state);
CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    hop_index INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    message TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

AUDIT_OUTBOX = """
CREATE TABLE IF NOT EXISTS audit_outbox (
    outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    run_id TEXT NOT NULL,
    hop INTEGER,
    detail_json TEXT NOT NULL
)
"""
"""Audit entries committed with their state change, until the signed log has them.
Created in every version-1 file that lacks it (an additive table: an older coordinator
ignores it)."""

# Statements with named parameters, filled by the ``*_params`` functions below.
INSERT_SITE = """
INSERT OR REPLACE INTO sites (site_id, certificate_pem, capabilities_json, profile_json,
    software_version, signing_certificate_pem, encryption_certificate_pem, registered_ms,
    last_seen_ms)
VALUES (:site_id, :certificate_pem, :capabilities_json, :profile_json,
    :software_version, :signing_certificate_pem, :encryption_certificate_pem, :registered_ms,
    :last_seen_ms)
"""
INSERT_RUN = """
INSERT INTO runs (run_id, name, plan_toml, sites_json, cycles, strategy, total_hops,
    created_ms, state, error, result_blob_id, result_size, plan_signature,
    owner_signing_certificate_pem, owner_encryption_certificate_pem, start_blob_id,
    start_size, start_manifest)
VALUES (:run_id, :name, :plan_toml, :sites_json, :cycles, :strategy, :total_hops,
    :created_ms, :state, :error, :result_blob_id, :result_size, :plan_signature,
    :owner_signing_certificate_pem, :owner_encryption_certificate_pem, :start_blob_id,
    :start_size, :start_manifest)
"""
SCHEMA_V2 = """
ALTER TABLE runs ADD COLUMN start_blob_id TEXT;
ALTER TABLE runs ADD COLUMN start_size INTEGER;
ALTER TABLE runs ADD COLUMN start_manifest BLOB NOT NULL DEFAULT x''
"""
"""From version 1 to 2: a run's start model (``RunRecord.start_model``), sealed by its owner."""
INSERT_HOP = """
INSERT INTO hops (run_id, hop_index, cycle, site_id, state, input_blob_id, input_size,
    output_blob_id, output_size, metrics_before_json, metrics_after_json, num_examples,
    train_seconds, error, output_manifest)
VALUES (:run_id, :hop_index, :cycle, :site_id, :state, :input_blob_id, :input_size,
    :output_blob_id, :output_size, :metrics_before_json, :metrics_after_json, :num_examples,
    :train_seconds, :error, :output_manifest)
"""
UPDATE_HOP = """
UPDATE hops SET state = :state, input_blob_id = :input_blob_id, input_size = :input_size,
    output_blob_id = :output_blob_id, output_size = :output_size,
    metrics_before_json = :metrics_before_json, metrics_after_json = :metrics_after_json,
    num_examples = :num_examples, train_seconds = :train_seconds, error = :error,
    output_manifest = :output_manifest
WHERE run_id = :run_id AND hop_index = :hop_index
"""


def site_params(site: SiteRecord) -> dict[str, Any]:
    """Named parameters of ``INSERT_SITE`` for a site."""
    return {
        "site_id": site.site_id,
        "certificate_pem": site.certificate_pem,
        "capabilities_json": json.dumps(asdict(site.capabilities)),
        "profile_json": json.dumps(asdict(site.profile)),
        "software_version": site.software_version,
        "signing_certificate_pem": site.signing_certificate_pem,
        "encryption_certificate_pem": site.encryption_certificate_pem,
        "registered_ms": site.registered_ms,
        "last_seen_ms": site.last_seen_ms,
    }


def site_from_row(row: sqlite3.Row) -> SiteRecord:
    """A site from a ``sites`` row."""
    caps = json.loads(row["capabilities_json"])
    profile = json.loads(row["profile_json"])
    return SiteRecord(
        site_id=row["site_id"],
        certificate_pem=row["certificate_pem"],
        capabilities=Capabilities(
            cpu_count=caps["cpu_count"],
            memory_bytes=caps["memory_bytes"],
            devices=tuple(Device(**d) for d in caps["devices"]),
        ),
        profile=DataProfile(**{**profile, "label_histogram": tuple(profile["label_histogram"])}),
        software_version=row["software_version"],
        signing_certificate_pem=row["signing_certificate_pem"],
        encryption_certificate_pem=row["encryption_certificate_pem"],
        registered_ms=row["registered_ms"],
        last_seen_ms=row["last_seen_ms"],
    )


def run_params(run: RunRecord) -> dict[str, Any]:
    """Named parameters of ``INSERT_RUN`` for a run."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "plan_toml": run.plan_toml,
        "sites_json": json.dumps(list(run.sites)),
        "cycles": run.cycles,
        "strategy": run.strategy,
        "total_hops": run.total_hops,
        "created_ms": run.created_ms,
        "state": RunState(run.state).value,
        "error": run.error,
        **_blob_params("result", run.result),
        "plan_signature": bytes(run.plan_signature),
        "owner_signing_certificate_pem": run.owner_signing_certificate_pem,
        "owner_encryption_certificate_pem": run.owner_encryption_certificate_pem,
        **_blob_params("start", run.start_model),
        "start_manifest": bytes(run.start_manifest),
    }


def run_from_row(row: sqlite3.Row) -> RunRecord:
    """A run from a ``runs`` row."""
    return RunRecord(
        run_id=row["run_id"],
        name=row["name"],
        plan_toml=row["plan_toml"],
        sites=tuple(json.loads(row["sites_json"])),
        cycles=row["cycles"],
        strategy=row["strategy"],
        total_hops=row["total_hops"],
        created_ms=row["created_ms"],
        state=RunState(row["state"]),
        error=row["error"],
        result=_blob_from_row(row, "result"),
        plan_signature=bytes(row["plan_signature"]),
        owner_signing_certificate_pem=row["owner_signing_certificate_pem"],
        owner_encryption_certificate_pem=row["owner_encryption_certificate_pem"],
        start_model=_blob_from_row(row, "start"),
        start_manifest=bytes(row["start_manifest"]),
    )


def hop_params(hop: HopRecord) -> dict[str, Any]:
    """Named parameters of ``INSERT_HOP`` and ``UPDATE_HOP`` for a hop."""
    return {
        "run_id": hop.run_id,
        "hop_index": hop.hop_index,
        "cycle": hop.cycle,
        "site_id": hop.site_id,
        "state": HopState(hop.state).value,
        **_blob_params("input", hop.input),
        **_blob_params("output", hop.output),
        "metrics_before_json": metrics_json(hop.metrics_before),
        "metrics_after_json": metrics_json(hop.metrics_after),
        "num_examples": hop.num_examples,
        "train_seconds": float(hop.train_seconds),
        "error": hop.error,
        "output_manifest": bytes(hop.output_manifest),
    }


def hop_from_row(row: sqlite3.Row) -> HopRecord:
    """A hop from a ``hops`` row."""
    return HopRecord(
        run_id=row["run_id"],
        hop_index=row["hop_index"],
        cycle=row["cycle"],
        site_id=row["site_id"],
        state=HopState(row["state"]),
        input=_blob_from_row(row, "input"),
        output=_blob_from_row(row, "output"),
        metrics_before=json.loads(row["metrics_before_json"]),
        metrics_after=json.loads(row["metrics_after_json"]),
        num_examples=row["num_examples"],
        train_seconds=row["train_seconds"],
        error=row["error"],
        output_manifest=bytes(row["output_manifest"]),
    )


def event_from_row(row: sqlite3.Row) -> EventRecord:
    """An event from an ``events`` row."""
    return EventRecord(
        run_id=row["run_id"],
        seq=row["seq"],
        kind=EventKind(row["kind"]),
        time_ms=row["time_ms"],
        hop_index=row["hop_index"],
        site_id=row["site_id"],
        message=row["message"],
        metrics=json.loads(row["metrics_json"]),
    )


def _blob_params(prefix: str, ref: BlobRef | None) -> dict[str, Any]:
    if ref is None:
        return {f"{prefix}_blob_id": None, f"{prefix}_size": None}
    return {f"{prefix}_blob_id": ref.blob_id, f"{prefix}_size": ref.size}


def _blob_from_row(row: sqlite3.Row, prefix: str) -> BlobRef | None:
    blob_id, size = row[f"{prefix}_blob_id"], row[f"{prefix}_size"]
    return None if blob_id is None else BlobRef(blob_id=blob_id, size=size)


def metrics_json(metrics: dict[str, float]) -> str:
    """A metrics dict as JSON, values as floats (NaN and infinities kept)."""
    # allow_nan keeps a diverged loss (NaN, inf) rather than refusing the whole hop.
    return json.dumps(as_floats(metrics), allow_nan=True)


# -- reading and writing records inside a transaction ---------------------------------


def get_site_row(db: sqlite3.Connection, site_id: str) -> SiteRecord:
    row = db.execute("SELECT * FROM sites WHERE site_id = ?", (site_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"unknown site {site_id!r}", site_id=site_id)
    return site_from_row(row)


def get_run_row(db: sqlite3.Connection, run_id: str) -> RunRecord:
    row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"unknown run {run_id!r}", run_id=run_id)
    return run_from_row(row)


def get_hop_row(db: sqlite3.Connection, run_id: str, hop_index: int) -> HopRecord:
    get_run_row(db, run_id)
    row = db.execute(
        "SELECT * FROM hops WHERE run_id = ? AND hop_index = ?", (run_id, hop_index)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id!r} has no hop {hop_index}", run_id=run_id, hop=hop_index)
    return hop_from_row(row)


def put_hop_row(db: sqlite3.Connection, hop: HopRecord) -> HopRecord:
    db.execute(UPDATE_HOP, hop_params(hop))
    return replace(
        hop, metrics_before=dict(hop.metrics_before), metrics_after=dict(hop.metrics_after)
    )


def replan_rows(
    db: sqlite3.Connection, run_id: str, from_index: int, hops: list[HopRecord], *, total_hops: int
) -> None:
    """``Store.replan_hops`` inside the caller's write transaction."""
    get_run_row(db, run_id)
    rows = db.execute(
        "SELECT * FROM hops WHERE run_id = ? AND hop_index >= ?", (run_id, from_index)
    ).fetchall()
    check_replan(run_id, from_index, [hop_from_row(r) for r in rows], hops)
    db.execute("DELETE FROM hops WHERE run_id = ? AND hop_index >= ?", (run_id, from_index))
    db.executemany(INSERT_HOP, [hop_params(replace(h, state=HopState.PENDING)) for h in hops])
    db.execute("UPDATE runs SET total_hops = ? WHERE run_id = ?", (total_hops, run_id))
