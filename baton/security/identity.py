"""Who a party is, in words every tool shares without loading cryptography: SPIFFE
identities, the kinds of party, the CA's file names and the revocation vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from baton.errors import PkiError

KINDS: Final = ("site", "admin", "coordinator")
"""The kinds of party a SPIFFE id may name."""

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
DEFAULT_CRL_DAYS: Final = 30
"""How long a newly issued CRL stays fresh: re-issue it (``baton pki crl``) before then."""
REASONS: Final = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
"""Revocation reasons accepted, by their RFC 5280 names (``certificateHold`` is not: a
revocation in Baton is final)."""

LABEL_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{0,62}$"
LABEL: Final = re.compile(LABEL_PATTERN)
SCHEME: Final = "spiffe://"


def shown(text: str, limit: int = 120) -> str:
    """Quotes untrusted text for an error message, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _problem(federation: str, kind: str, name: str) -> str | None:
    """Says what is wrong with the parts of an identity, or None if they are valid."""
    if not LABEL.fullmatch(federation):
        return f"federation {shown(federation)} must match {LABEL_PATTERN}"
    if kind not in KINDS:
        return f"kind {shown(kind)} is not one of {', '.join(KINDS)}"
    if not LABEL.fullmatch(name):
        return f"name {shown(name)} must match {LABEL_PATTERN}"
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Identity:
    """A party of a federation, named by its SPIFFE id.

    Constraints: constructing an Identity with an invalid part MUST raise PkiError.
    """

    federation: str
    """The federation (SPIFFE trust domain), e.g. ``"acme-health"``."""
    kind: str
    """One of ``"site"``, ``"admin"``, ``"coordinator"``."""
    name: str
    """The party's name within its kind, e.g. ``"st-mary"``."""

    def __post_init__(self) -> None:
        problem = _problem(self.federation, self.kind, self.name)
        if problem is not None:
            raise PkiError(f"invalid identity: {problem}")

    @property
    def spiffe_id(self) -> str:
        """The SPIFFE id ``spiffe://<federation>/<kind>/<name>``."""
        return f"{SCHEME}{self.federation}/{self.kind}/{self.name}"

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """Parses ``spiffe://<federation>/<kind>/<name>``.

        Args:
            uri: The SPIFFE id, e.g. taken from a certificate's URI SAN.

        Returns:
            The identity it names.

        Raises:
            PkiError: If ``uri`` is not exactly of that form with valid parts.
        """
        if not uri.startswith(SCHEME):
            raise PkiError(f"invalid SPIFFE id {shown(uri)}: the scheme must be spiffe://")
        parts = uri[len(SCHEME) :].split("/")
        if len(parts) != 3 or not all(parts):
            raise PkiError(
                f"invalid SPIFFE id {shown(uri)}: expected spiffe://<federation>/<kind>/<name>"
            )
        federation, kind, name = parts
        problem = _problem(federation, kind, name)
        if problem is not None:
            raise PkiError(f"invalid SPIFFE id {shown(uri)}: {problem}")
        return cls(federation=federation, kind=kind, name=name)
