"""The copy of a hop's output that a site seals to itself, sealed while the output uploads.

A hop's output is sealed twice: to its recipient (what travels) and to the site itself (kept
in the outbox, only to re-seal the model for another recipient if the coordinator reroutes
the hop). Only the first stands between training and the upload: the outbox records the
output as soon as it is sealed to its recipient, the upload starts, and :class:`OwnCopy`
seals the second copy in a worker thread meanwhile. The hop completes at the coordinator
only once both are recorded. A site stopped before that hands the same ciphertext on after
its restart, and trains the hop again only if it must re-seal it
(:func:`site_node.outbox.hand_on_again`).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from baton.domain import Assignment
from baton.security.envelope import HopContext, RecipientKey, seal_file
from baton.security.sealing import AppKeys
from baton.security.tls import TlsMaterial
from site_node.handover import Verified
from site_node.outbox import Outbox, Sent

logger = logging.getLogger(__name__)

OWN_COPY_TTL_SECONDS: Final = 30 * 24 * 3600
"""How long the copy a site seals to itself may be opened (longer than any retention)."""


def seal_own_copy(
    plain: Path, dest: Path, *, a: Assignment, checked: Verified, tls: TlsMaterial, keys: AppKeys
) -> bytes:
    """Seals ``plain`` (hop ``a``'s output) to this site itself into ``dest``; returns the
    signed manifest."""
    me = tls.identity.spiffe_id
    return seal_file(
        plain,
        dest,
        ctx=HopContext(
            run_id=a.run_id,
            hop_index=a.hop_index,
            sender=me,
            recipient=me,
            previous_manifest_hash=checked.input_digest,
            plan_hash=checked.plan_digest,
            schema_hash=checked.schema_digest,
        ),
        sender_key=keys.signing_key,
        recipients=[RecipientKey(spiffe_id=me, public_key=keys.encryption_key.public_key())],
        ttl_seconds=OWN_COPY_TTL_SECONDS,
    )


class OwnCopy:
    """Seals ``plain`` to this site into ``sent.own_sealed`` in a worker thread, then
    deletes ``plain`` (which it owns from now on: the model's last plaintext copy).

    Args:
        plain: Hop ``a``'s output, in plaintext.
        sent: The output as sealed to its recipient, recorded in the outbox.
        a: The hop.
        checked: What the checks before training established.
        tls: The site's TLS material (its identity).
        keys: The site's application keys.
    """

    def __init__(
        self,
        plain: Path,
        sent: Sent,
        *,
        a: Assignment,
        checked: Verified,
        tls: TlsMaterial,
        keys: AppKeys,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-own-copy")

        def seal() -> bytes:
            try:
                own = sent.own_sealed
                return seal_own_copy(plain, own, a=a, checked=checked, tls=tls, keys=keys)
            finally:
                plain.unlink(missing_ok=True)

        self._sealing = self._pool.submit(seal)

    def settle(self, outbox: Outbox, sent: Sent, *, quiet: bool = False) -> Sent:
        """Waits for the copy and records it in ``sent``'s outbox entry; returns ``sent``
        with it. ``quiet``: a failure to seal it is logged, not raised (``sent`` returned
        as it was), for a caller that is already raising another error.

        Raises:
            SealError: The copy could not be sealed (not when ``quiet``).
        """
        try:
            own = self._sealing.result()
        except Exception:
            if not quiet:
                raise
            logger.exception("hop %d: the copy sealed to this site failed", sent.hop_index + 1)
            return sent
        finally:
            self._pool.shutdown(wait=True)
        sent = dataclasses.replace(sent, own_manifest=own)
        outbox.put(sent)
        return sent
