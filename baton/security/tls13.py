"""TLS 1.3 only, for every gRPC endpoint of a process: set before gRPC loads."""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

logger = logging.getLogger(__name__)

CIPHER_SUITES_VARIABLE: Final = "GRPC_SSL_CIPHER_SUITES"
"""The environment variable gRPC reads, once, when it loads."""
NO_TLS12_SUITES: Final = "ECDHE-PSK-CHACHA20-POLY1305"
"""The only TLS 1.2 suite offered or accepted: a pre-shared-key suite gRPC never has a key
for, so no TLS 1.2 handshake can complete. TLS 1.3 suites are not configurable and stay
on (AES-GCM, ChaCha20-Poly1305)."""
TLS_VERSION: Final = "TLSv1.3"
"""The only protocol version served (``ssl_tls_version`` of a call's auth context)."""


def pin_tls13() -> bool:
    """Makes this process's gRPC refuse TLS 1.2 (and older) in every handshake, as server
    and as client. It MUST run before ``grpc`` is first imported: gRPC reads its cipher
    suites once, when it loads.

    The coordinator checks the version of every call as well (see
    :func:`baton.security.tls.require_tls13`), so a process that pinned too late still
    serves nothing over TLS 1.2.

    Returns:
        Whether the pin takes effect (gRPC was not loaded yet).
    """
    os.environ[CIPHER_SUITES_VARIABLE] = NO_TLS12_SUITES
    if "grpc" in sys.modules:
        logger.debug("gRPC was loaded before TLS 1.3 was pinned; calls are checked instead")
        return False
    return True
