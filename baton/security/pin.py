"""Clients pin the coordinator by its certificate's kind as well as by the name it holds.

The handshake does the pinning for certificates issued by :mod:`baton.security.pki` today:
only a coordinator's certificate is a TLS server certificate (extended key usage
``serverAuth``, see :mod:`baton.security.pki_leaf`), and gRPC's BoringSSL refuses any other
as a server ("unsupported certificate purpose"), whatever names it holds.

Certificates issued before that carry both purposes, and a site's or an admin's could name a
host. For those, :func:`coordinator_problem` looks before a client talks: it opens a TLS 1.3
connection of its own to the coordinator's address (no client certificate: a TLS 1.3
server shows its certificate before it asks for the client's), verifies the certificate
against the federation CA and reads the kind its SPIFFE id names. A verified certificate of
another kind, or of another federation, is refused; when no verified certificate comes back
(nothing listens, an unknown CA, a timeout) it says nothing, and the client's own gRPC
connection reports that failure in its usual words. The look is a separate connection, so
it stops an impostor that answers every connection alike, not one that can tell them apart:
revoke or re-issue old certificates that name hosts (``baton pki revoke``).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from baton.errors import PkiError
from baton.security.pki import identity_from_certificate
from baton.security.pki_leaf import SERVER_KIND

if TYPE_CHECKING:
    from baton.security.tls import TlsMaterial

PROBE_TIMEOUT_S: Final = 5.0
"""Seconds for the look's TCP connection and its handshake, each."""


def kind_problem(cert: x509.Certificate, federation: str) -> str:
    """Why ``cert``, presented by a server, is not a coordinator's of ``federation``, or ``""``."""
    try:
        identity = identity_from_certificate(cert.public_bytes(serialization.Encoding.PEM))
    except PkiError as exc:
        return f"not a coordinator: the certificate presented names no party ({exc.message})"
    if identity.kind != SERVER_KIND or identity.federation != federation:
        return (
            f"not a coordinator: the server presented the certificate of {identity.spiffe_id}; "
            f"only a {SERVER_KIND} of federation {federation!r} may serve"
        )
    return ""


def coordinator_problem(
    target: str, material: TlsMaterial, *, server_name: str = "", timeout: float = PROBE_TIMEOUT_S
) -> str:
    """Looks at the certificate the server at ``target`` presents; says why it is not the
    coordinator's, or ``""`` (also when no verified certificate came back: see above).

    Args:
        target: ``host:port`` or ``[v6]:port``, as the client dials it.
        material: The client's TLS material: its CA and federation.
        server_name: The name the client expects instead of the host (sent as SNI).
        timeout: Seconds for the TCP connection and the handshake, each.
    """
    try:
        host, port = split_target(target)
    except ValueError:
        return ""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the client's gRPC connection checks the name itself
    context.load_verify_locations(cadata=material.ca_pem.decode("ascii"))
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=sni(server_name or host)) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return ""
    if der is None:
        return ""
    return kind_problem(x509.load_der_x509_certificate(der), material.identity.federation)


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError if the port is no number."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def sni(host: str) -> str | None:
    """The SNI to send: a DNS name, never an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None
