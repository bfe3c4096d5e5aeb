"""What a federation leaf certificate says: its names, and what it may be used for, by kind.

A party's kind decides its certificate's purpose, and the TLS handshake enforces it:

- a ``coordinator`` certificate is a TLS *server* certificate (extended key usage
  ``serverAuth``), and the only kind that may carry DNS and IP names (the addresses it is
  dialled at);
- a ``site`` or ``admin`` certificate is a TLS *client* certificate (``clientAuth`` only)
  naming the party by its SPIFFE id alone.

Every client (gRPC's BoringSSL, OpenSSL) checks that a server's certificate has the server
purpose, so a site's certificate cannot impersonate the coordinator even where it would
match the dialled name; the coordinator checks the client purpose the same way, and
:func:`baton.security.tls.require_peer` the kind named in the SPIFFE id.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from baton.errors import PkiError
from baton.security.identity import shown

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric import ec

    from baton.security.identity import Identity

SERVER_KIND: Final = "coordinator"
"""The one kind of party that serves TLS: its certificate is a server certificate."""
CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""How far back ``not_valid_before`` is set, so that slightly slow clocks accept new certs."""
_DNS_NAME: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def leaf_names(
    identity: Identity, dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> list[x509.GeneralName]:
    """The SANs of ``identity``'s certificate: its SPIFFE id, then the DNS and IP names.

    Constraints: only a coordinator's certificate may carry DNS or IP names; asking for
    them for another kind MUST fail, since a client certificate that names a host is one
    step from impersonating the server at that host.

    Raises:
        PkiError: If a name is invalid, or DNS/IP names are asked for another kind.
    """
    if (dns_names or ip_addresses) and identity.kind != SERVER_KIND:
        asked = ", ".join([*dns_names, *ip_addresses])
        raise PkiError(
            f"a {identity.kind} certificate cannot carry DNS or IP names ({shown(asked)}): "
            f"only the {SERVER_KIND}'s certificate names the host it is dialled at, and "
            f"a {identity.kind} is named by its SPIFFE id alone"
        )
    for dns_name in dns_names:
        if not _DNS_NAME.fullmatch(dns_name):
            raise PkiError(f"invalid DNS name {shown(dns_name)}")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise PkiError(f"invalid IP address: {exc}") from None
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.spiffe_id)]
    sans += [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    return sans


def purposes(kind: str) -> x509.ExtendedKeyUsage:
    """The extended key usage of a ``kind``'s certificate: server or client, never both."""
    if kind == SERVER_KIND:
        return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    identity: Identity,
    sans: list[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    """Signs a TLS leaf for ``public_key`` naming ``identity``, for its kind's purpose."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(purposes(identity.kind), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    """A keyUsage extension with only the given bits set."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
