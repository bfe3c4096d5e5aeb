"""A TCP proxy that injects network faults (latency, bandwidth, loss, partitions) at run time.

It sits between a listen address and a target and forwards every connection both ways;
"up" is the direction from the connecting client to the target, "down" the way back. Each
fault can be set and changed while connections are open, from any thread:

- latency: every chunk is held ``seconds`` after it was read before it is written on.
- bandwidth: each direction writes at most so many bytes per second.
- loss: a TCP proxy cannot drop a single packet (TCP would resend it, and the proxy sits
  above TCP), and this kernel has no ``sch_netem`` to drop them below it. What a lost
  segment costs a TCP stream is a stall of one retransmission timeout before the data
  flows again, so loss is modelled as that: each chunk, with probability ``rate``, waits
  ``stall`` seconds (by default Linux's minimum RTO, 200 ms) before it is written on.
- partition: ``"drop"`` resets every open connection and every new one until healed (a
  peer sees its connection fail at once, as after a reboot of a middlebox); ``"hold"``
  stops forwarding but keeps the connections open, and holds new ones unconnected,
  until healed (a cut cable: the peers notice only through their own timeouts).
  :meth:`FaultProxy.partition_after` cuts the link once so many more bytes went one way,
  between two chunks, so a transfer is cut at a byte count, however fast it runs.

The proxy runs an asyncio loop in a daemon thread; :meth:`FaultProxy.stop` closes
everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

READ_BYTES = 16 << 10
"""Largest chunk read at once; the unit of latency, loss and bandwidth accounting."""
IN_FLIGHT_CHUNKS = 8
"""Chunks read but not yet written per direction, beyond which reading waits (so a slow
link pushes back on its sender, as TCP's window does)."""
RTO_SECONDS = 0.2
"""Stall of one modelled lost segment: Linux's minimum retransmission timeout."""

Direction = Literal["up", "down"]
PartitionMode = Literal["drop", "hold"]


@dataclass(slots=True)
class _Link:
    """The faults of one direction."""

    latency: float = 0.0
    bandwidth: float | None = None
    loss: float = 0.0
    stall: float = RTO_SECONDS
    forwarded: int = 0
    cut_at: int | None = None
    """Forwarded count at which the proxy partitions (None: never)."""
    cut_mode: PartitionMode = "hold"


class FaultProxy:
    """Forwards TCP connections from ``listen`` to ``target`` through injectable faults.

    Args:
        target: (host, port) every connection is forwarded to.
        listen: (host, port) to listen on; port 0 picks a free one (see :attr:`address`).
        seed: Seed of the loss draws (reproducible stalls).
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int | None = None,
    ) -> None:
        self._target = target
        self._listen = listen
        self._rng = random.Random(seed)
        self._links: dict[Direction, _Link] = {"up": _Link(), "down": _Link()}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._partition: PartitionMode | None = None
        self._healed: asyncio.Event | None = None
        self._partitioned = threading.Event()
        self.address: tuple[str, int] = listen
        """Where the proxy listens (the port filled in once started)."""
        self.connections = 0
        """Connections accepted so far."""

    # Lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Starts listening; returns the proxy."""
        self._thread.start()
        self._call(self._serve)
        return self

    def stop(self) -> None:
        """Closes the listener and every connection, and ends the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError):
            self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Controls ------------------------------------------------------------------------

    def set_latency(self, up: float = 0.0, down: float = 0.0) -> None:
        """Delays each direction by the given seconds (0: none)."""
        self._links["up"].latency, self._links["down"].latency = _seconds(up), _seconds(down)

    def set_bandwidth(self, up: float | None = None, down: float | None = None) -> None:
        """Limits each direction to the given bytes per second (None: unlimited)."""
        for link, rate in ((self._links["up"], up), (self._links["down"], down)):
            if rate is not None and rate <= 0:
                raise ValueError(f"bandwidth must be positive bytes per second, not {rate}")
            link.bandwidth = rate

    def set_loss(self, rate: float, *, stall: float = RTO_SECONDS) -> None:
        """Stalls each chunk, in both directions, for ``stall`` seconds with probability
        ``rate`` (see the module docstring for why loss is a stall)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"loss rate must be between 0 and 1, not {rate}")
        for link in self._links.values():
            link.loss, link.stall = rate, _seconds(stall)

    def partition(self, mode: PartitionMode = "drop") -> None:
        """Stops forwarding until :meth:`heal` (see the module docstring for the modes)."""
        if mode not in ("drop", "hold"):
            raise ValueError(f"partition mode must be 'drop' or 'hold', not {mode!r}")
        self._call(lambda: self._cut(mode))

    def partition_after(
        self, direction: Direction, count: int, mode: PartitionMode = "hold"
    ) -> None:
        """Partitions (as :meth:`partition`) once ``count`` more bytes went ``direction``:
        right after the chunk that reaches the count is written on, before the next."""
        if count <= 0:
            raise ValueError(f"a cut must come after 1 or more bytes, not {count}")
        if mode not in ("drop", "hold"):
            raise ValueError(f"partition mode must be 'drop' or 'hold', not {mode!r}")
        link = self._links[direction]

        def arm() -> None:
            link.cut_at, link.cut_mode = link.forwarded + count, mode

        self._call(arm)

    def wait_partitioned(self, *, timeout: float) -> None:
        """Waits until the proxy is partitioned (by :meth:`partition` or a
        :meth:`partition_after` cut).

        Raises:
            TimeoutError: Not within ``timeout`` seconds.
        """
        if not self._partitioned.wait(timeout):
            up, down = self.forwarded("up"), self.forwarded("down")
            raise TimeoutError(f"no partition in {timeout:g} s ({up} bytes went up, {down} down)")

    def heal(self) -> None:
        """Forwards again; held connections go on where they stopped."""
        self._call(self._mend)

    def forwarded(self, direction: Direction) -> int:
        """Bytes written on in ``direction`` so far, over all connections."""
        return self._links[direction].forwarded

    def wait_forwarded(self, direction: Direction, count: int, *, timeout: float) -> None:
        """Waits until ``count`` bytes were forwarded in ``direction``.

        Raises:
            TimeoutError: Not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.forwarded(direction) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {self.forwarded(direction)} of {count} bytes went {direction} "
                    f"in {timeout:g} s"
                )
            time.sleep(0.01)

    # The loop's side -----------------------------------------------------------------

    def _call(self, fn: Callable[[], object]) -> None:
        """Runs ``fn`` (a coroutine function or a plain one) on the loop and waits."""

        async def run() -> None:
            result = fn()
            if asyncio.iscoroutine(result):
                await result

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    async def _serve(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._server = await asyncio.start_server(self._accept, *self._listen)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (host, port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # Every connection ends here, not when the closed loop's leftovers are collected
        # (a pump waiting for a heal would then fail in its cleanup): its pumps are
        # cancelled, then its handler returns.
        handlers = set(self._handlers)
        for task in asyncio.all_tasks() - handlers - {asyncio.current_task()}:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=5)

    def _cut(self, mode: PartitionMode) -> None:
        assert self._healed is not None
        self._partition = mode
        self._healed.clear()
        for link in self._links.values():
            link.cut_at = None
        self._partitioned.set()
        if mode == "drop":
            for writer in list(self._writers):
                writer.transport.abort()

    def _mend(self) -> None:
        assert self._healed is not None
        self._partition = None
        self._partitioned.clear()
        self._healed.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self._healed is not None
        self.connections += 1
        self._writers.add(client_w)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if self._partition == "drop":
                return
            await self._healed.wait()
            try:
                target_r, target_w = await asyncio.open_connection(*self._target)
            except OSError:
                return
            self._writers.add(target_w)
            try:
                await asyncio.gather(
                    self._pump(client_r, target_w, self._links["up"]),
                    self._pump(target_r, client_w, self._links["down"]),
                    return_exceptions=True,
                )
            finally:
                self._writers.discard(target_w)
                target_w.transport.abort()
        finally:
            self._writers.discard(client_w)
            self._handlers.discard(handler)
            client_w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Copies one direction through its faults; ends (closing both ways) at EOF or error."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(IN_FLIGHT_CHUNKS)

        async def read() -> None:
            while data := await reader.read(READ_BYTES):
                await queue.put((time.monotonic() + link.latency, data))
            await queue.put((0.0, b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if link.loss and self._rng.random() < link.loss:
                    await asyncio.sleep(link.stall)
                assert self._healed is not None
                await self._healed.wait()
                writer.write(data)
                await writer.drain()
                link.forwarded += len(data)
                if link.cut_at is not None and link.forwarded >= link.cut_at:
                    self._cut(link.cut_mode)
                if link.bandwidth:
                    await asyncio.sleep(len(data) / link.bandwidth)
        finally:
            reading.cancel()
            writer.transport.abort()


def _seconds(value: float) -> float:
    if value < 0:
        raise ValueError(f"a delay must be 0 or more seconds, not {value}")
    return value
