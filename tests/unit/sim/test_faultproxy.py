"""The fault proxy forwards bytes unchanged, and delays, throttles, stalls and cuts them on
demand, on loopback."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sim.faultproxy import READ_BYTES, FaultProxy


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A TCP server on loopback that sends back whatever it reads."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := _recv(conn):
                conn.sendall(data)

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stopping.set()
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(echo, seed=1) as p:
        yield p


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(1 << 16)
    except OSError:
        return b""


def _dial(proxy: FaultProxy) -> socket.socket:
    conn = socket.create_connection(proxy.address, timeout=5)
    conn.settimeout(5)
    return conn


def _round_trip(conn: socket.socket, data: bytes) -> bytes:
    sender = threading.Thread(target=conn.sendall, args=(data,))
    sender.start()
    got = bytearray()
    while len(got) < len(data) and (chunk := _recv(conn)):
        got.extend(chunk)
    sender.join()
    return bytes(got)


def test_bytes_pass_unchanged_both_ways_and_are_counted(proxy: FaultProxy) -> None:
    data = os.urandom(300_000)
    with _dial(proxy) as conn:
        assert _round_trip(conn, data) == data
    proxy.wait_forwarded("down", len(data), timeout=5)  # counted just after the write
    assert proxy.forwarded("up") == len(data)
    assert proxy.forwarded("down") == len(data)


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.set_latency(up=0.1, down=0.15)
    with _dial(proxy) as conn:
        start = time.monotonic()
        assert _round_trip(conn, b"ping") == b"ping"
        assert time.monotonic() - start >= 0.25


def test_bandwidth_limits_throughput(proxy: FaultProxy) -> None:
    proxy.set_bandwidth(up=400_000)
    data = os.urandom(120_000)
    with _dial(proxy) as conn:
        start = time.monotonic()
        assert _round_trip(conn, data) == data
        assert time.monotonic() - start >= 0.25  # 120 kB at 400 kB/s: 0.3 s


def test_loss_stalls_chunks_for_a_retransmission_timeout(proxy: FaultProxy) -> None:
    proxy.set_loss(1.0, stall=0.1)
    with _dial(proxy) as conn:
        start = time.monotonic()
        assert _round_trip(conn, b"x") == b"x"
        assert time.monotonic() - start >= 0.2  # one stall each way


def test_a_drop_partition_resets_connections_until_healed(proxy: FaultProxy) -> None:
    with _dial(proxy) as conn:
        assert _round_trip(conn, b"before") == b"before"
        proxy.partition("drop")
        assert _recv(conn) == b""  # reset
    with _dial(proxy) as conn:  # a new connection is accepted, then reset
        assert _recv(conn) == b""
    proxy.heal()
    with _dial(proxy) as conn:
        assert _round_trip(conn, b"after") == b"after"


def test_a_hold_partition_keeps_the_bytes_until_healed(proxy: FaultProxy) -> None:
    with _dial(proxy) as conn:
        assert _round_trip(conn, b"a") == b"a"
        proxy.partition("hold")
        conn.sendall(b"held")
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.recv(16)
        conn.settimeout(5)
        proxy.heal()
        got = b""
        while len(got) < 4:
            got += conn.recv(16)
        assert got == b"held"


def test_a_cut_after_a_byte_count_holds_the_rest_until_healed(proxy: FaultProxy) -> None:
    data = os.urandom(300_000)
    proxy.partition_after("up", 100_000)
    with _dial(proxy) as conn:
        sender = threading.Thread(target=conn.sendall, args=(data,))
        sender.start()
        proxy.wait_partitioned(timeout=5)
        cut_at = proxy.forwarded("up")
        assert 100_000 <= cut_at < 100_000 + READ_BYTES
        proxy.heal()
        got = bytearray()
        while len(got) < len(data) and (chunk := _recv(conn)):
            got.extend(chunk)
        sender.join()
    assert bytes(got) == data
    with pytest.raises(TimeoutError, match=r"^no partition in 0.01 s \(300000 bytes went up"):
        proxy.wait_partitioned(timeout=0.01)  # healed, and the cut was used up


def test_stopping_a_held_proxy_ends_every_connection_first(
    echo: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    proxy = FaultProxy(echo).start()
    with caplog.at_level(logging.ERROR, logger="asyncio"), _dial(proxy) as conn:
        assert _round_trip(conn, b"a") == b"a"
        proxy.partition("hold")
        conn.sendall(b"held")
        time.sleep(0.1)  # the proxy reads the bytes and waits for a heal with them
        proxy.stop()
        del proxy
        gc.collect()  # a connection still pending would be destroyed (and logged) here
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.set_loss(1.5), "loss rate must be between 0 and 1, not 1.5"),
        (lambda p: p.set_bandwidth(up=0), "bandwidth must be positive bytes per second, not 0"),
        (lambda p: p.set_latency(up=-1), "a delay must be 0 or more seconds, not -1"),
        (lambda p: p.partition("cut"), "partition mode must be 'drop' or 'hold', not 'cut'"),
        (lambda p: p.partition_after("up", 0), "a cut must come after 1 or more bytes, not 0"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(
    proxy: FaultProxy, call: object, message: str
) -> None:
    assert callable(call)
    with pytest.raises(ValueError) as raised:
        call(proxy)
    assert str(raised.value) == message


def test_waiting_for_bytes_that_never_come_times_out(proxy: FaultProxy) -> None:
    with pytest.raises(TimeoutError, match=r"^only 0 of 10 bytes went up in 0.05 s$"):
        proxy.wait_forwarded("up", 10, timeout=0.05)
