"""Live rotation of the coordinator's TLS certificate: new handshakes get a replaced pair."""

from __future__ import annotations

import logging
import threading

import grpc
from cryptography import x509

from baton.errors import PkiError
from baton.security.pki_leaf import SERVER_KIND
from baton.security.tls import TlsFiles, TlsMaterial, require_kind
from baton.wire.channel import file_stamp

logger = logging.getLogger(__name__)


class ReloadingServerCredentials:
    """mTLS server credentials that follow the certificate and key files as they change.

    grpc asks for the certificate configuration at each handshake; the files are then
    looked at (``stat`` only) and re-read only when their modification time, size or inode
    changed. A new pair is served once it passes :meth:`TlsFiles.load`, is a
    coordinator's (:func:`~baton.security.tls.require_kind`) and still names the same
    identity under the same CA; otherwise the pair in force keeps serving and a
    warning is logged once per change of the files. Connections already open keep the
    certificate they were made with. Changing the CA or the identity needs a restart.

    Args:
        files: Where the CA, certificate and key are.
        initial: The material loaded from ``files`` at start-up.
    """

    def __init__(self, files: TlsFiles, initial: TlsMaterial) -> None:
        self._files = files
        self._current = initial
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._failed_stamp: tuple[tuple[int, ...], ...] | None = None

    @property
    def current(self) -> TlsMaterial:
        """The material served to new connections."""
        with self._lock:
            return self._current

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials requiring a client certificate from the CA, reloading as above."""
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._current),
            self.fetch,  # type: ignore[arg-type]  # grpc takes None as "no change"; stubs omit it
            require_client_authentication=True,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if the files hold a new valid pair, else None (no change).

        Called by grpc at each handshake, from its own threads; never raises.
        """
        try:
            return self._fetch()
        except Exception:  # a raise here would fail the handshake; keep serving instead
            logger.exception("cannot check the TLS files for a new certificate")
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            try:
                material = self._files.load()
                self._check_same_party(material)
            except PkiError as exc:
                if stamp != self._failed_stamp:
                    logger.warning("keeping the TLS certificate in force: %s", exc.message)
                    self._failed_stamp = stamp
                return None
            self._stamp, self._current, self._failed_stamp = stamp, material, None
        logger.info(
            "serving a new TLS certificate for %s (serial %x) to new connections",
            material.identity.spiffe_id,
            _serial(material),
        )
        return _configuration(material)

    def _check_same_party(self, material: TlsMaterial) -> None:
        require_kind(material, SERVER_KIND, source=str(self._files.cert))
        if material.ca_pem != self._current.ca_pem:
            raise PkiError(
                f"CA certificate {self._files.ca} changed; restart the coordinator to change CA"
            )
        if material.identity != self._current.identity:
            raise PkiError(
                f"certificate {self._files.cert} names {material.identity.spiffe_id}, "
                f"not {self._current.identity.spiffe_id}"
            )

    def _stamps(self) -> tuple[tuple[int, ...], ...]:
        return (file_stamp(self._files.cert), file_stamp(self._files.key))


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
    )


def _serial(material: TlsMaterial) -> int:
    return x509.load_pem_x509_certificate(material.cert_pem).serial_number
