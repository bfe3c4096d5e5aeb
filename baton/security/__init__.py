"""Who may do what, and proof of it: the PKI, TLS, application keys, the sealed hop envelope
and its signed manifest, replay and chain checks, revocation and the signed audit log."""

__all__ = [
    "audit",
    "audit_entry",
    "chain",
    "envelope",
    "files",
    "identity",
    "keys",
    "manifest",
    "pki",
    "replay",
    "revocation",
    "sealing",
    "streaming",
    "tls",
    "tls13",
]
