"""The audit log's entry format: its fields, canonical bytes, and the checks of one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "AUDIT_DOMAIN",
    "EVENT_PATTERN",
    "GENESIS",
    "MAX_DETAIL_ITEMS",
    "MAX_DETAIL_TEXT",
    "AuditEntry",
    "DetailValue",
    "canonical_json",
    "detail_problem",
    "parse_entry",
]

AUDIT_DOMAIN: Final = b"baton/v1 audit\x00"
"""Prefix of everything an audit signature covers."""
GENESIS: Final = "0" * 64
"""The ``prev`` of the first entry."""
MAX_DETAIL_ITEMS: Final = 16
MAX_DETAIL_TEXT: Final = 512
"""Longest string in ``detail``, key or value: room for ids and digests, not for data."""
EVENT_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What an event name looks like (:mod:`baton.security.audit` lists the ones Baton records)."""
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX: Final = re.compile(r"(?:[0-9a-f]{2}){1,128}")
DetailValue = str | int | float
"""What ``detail`` may hold."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """One line of an audit log."""

    seq: int
    """Position in the log, from 1."""
    time_ms: int
    """When it was appended, Unix milliseconds."""
    party: str
    """SPIFFE id of the party whose log this is."""
    event: str
    """What happened, e.g. ``"hop_sent"``."""
    run_id: str
    """The run concerned, or ``""``."""
    hop: int | None
    """The hop concerned, or None."""
    detail: Mapping[str, DetailValue]
    """Digests, reason codes and peer ids; never key material, weights or data."""
    prev: str
    """Hex SHA-256 of the previous line (:data:`GENESIS` for the first)."""
    key: str
    """Fingerprint of the key that signed it (see :func:`baton.security.audit.key_fingerprint`)."""
    sig: str
    """Hex signature over :meth:`signed_bytes`."""

    def fields(self, *, with_sig: bool = True) -> dict[str, object]:
        """The entry as a JSON object."""
        out = {name: getattr(self, name) for name in _FIELDS if with_sig or name != "sig"}
        return {**out, "detail": dict(self.detail)}

    def canonical(self) -> bytes:
        """The entry's line in the log, without its newline."""
        return canonical_json(self.fields())

    def signed_bytes(self) -> bytes:
        """What the signature covers."""
        return AUDIT_DOMAIN + canonical_json(self.fields(with_sig=False))

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the line: the next entry's ``prev``."""
        return hashlib.sha256(self.canonical()).hexdigest()


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(AuditEntry))


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no spaces, ASCII: the bytes an entry is hashed and signed as."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def parse_entry(obj: object) -> tuple[AuditEntry | None, str]:
    """The entry a parsed line holds, or None and what is wrong with it."""
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if set(obj) != set(_FIELDS):
        missing, extra = sorted(set(_FIELDS) - set(obj)), sorted(set(obj) - set(_FIELDS))
        return None, f"missing {missing}, unexpected {extra}"
    for name in ("seq", "time_ms"):
        if type(obj[name]) is not int or obj[name] < 0:
            return None, f"{name} is not a non-negative integer"
    for name in ("party", "event", "run_id"):
        if not isinstance(obj[name], str):
            return None, f"{name} is not a string"
    hop = obj["hop"]
    if hop is not None and (type(hop) is not int or hop < 0):
        return None, "hop is neither null nor a non-negative integer"
    if not isinstance(obj["detail"], dict) or detail_problem(obj["detail"]) is not None:
        return None, "detail is not a small flat object of strings and numbers"
    for name, pattern in (("prev", _HEX64), ("key", _HEX64), ("sig", _HEX)):
        if not isinstance(obj[name], str) or not pattern.fullmatch(obj[name]):
            return None, f"{name} is not lower-case hex of the right length"
    return AuditEntry(**obj), ""


def detail_problem(detail: Mapping[Any, object]) -> str | None:
    """Says what makes ``detail`` unacceptable, or None."""
    if len(detail) > MAX_DETAIL_ITEMS:
        return f"more than {MAX_DETAIL_ITEMS} items"
    for name, value in detail.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_DETAIL_TEXT:
            return f"key {name!r} is not a short string"
        if isinstance(value, str):
            if len(value) > MAX_DETAIL_TEXT:
                return f"{name} is longer than {MAX_DETAIL_TEXT} characters"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} is not a string or a number"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{name} is not finite"
    return None
