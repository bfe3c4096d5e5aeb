"""Network namespaces joined to this host by veth pairs, for processes that must talk across
real links (multi-host fault tests).

Each namespace gets one veth pair: the inner end (``10.77.<k>.2/24``) in the namespace, the
outer end (``10.77.<k>.1/24``) in the namespace of the caller, so a process inside reaches
the caller's side at ``outer`` and the caller reaches it at ``inner``. Namespaces do not
reach each other directly: traffic between them goes through something on the caller's
side, such as :class:`sim.faultproxy.FaultProxy`.

Run a module inside a namespace with ``python -m sim.netns NAMESPACE MODULE ARGS...``
(it replaces itself by ``ip netns exec``, so its process id stays that of the module).
Creating namespaces needs root (or CAP_NET_ADMIN); :func:`unavailable` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from types import TracebackType

from baton.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Namespace:
    """One namespace and its link to the caller's side."""

    name: str
    inner: str
    """The namespace's address (its end of the veth pair)."""
    outer: str
    """The caller's address on the link to the namespace."""


def _ip_path() -> str:
    path = shutil.which("ip")
    if path is None:
        raise FileNotFoundError("ip")
    return path


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_ip_path(), *args], capture_output=True, text=True, check=False)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    probe = f"btprobe{os.getpid()}"
    try:
        made = _ip("netns", "add", probe)
    except FileNotFoundError:
        return "the 'ip' command (iproute2) is not installed"
    if made.returncode != 0:
        return f"'ip netns add' is not permitted here: {made.stderr.strip() or made.returncode}"
    _ip("netns", "del", probe)
    return None


class Lab:
    """Namespaces made on demand and all removed on exit, whatever happened.

    Args:
        tag: Short unique tag in every name (namespaces and veth ends), so labs of
            concurrent processes do not collide; at most 6 characters.
        subnet: Third octet of the first namespace's ``10.77.x.0/24``; one per namespace.
    """

    def __init__(self, tag: str, *, subnet: int) -> None:
        if not tag.isalnum() or len(tag) > 6:
            raise ConfigError(f"lab tag must be 1-6 letters or digits, not {tag!r}")
        if not 1 <= subnet <= 240:
            raise ConfigError(f"lab subnet must be between 1 and 240, not {subnet}")
        self._tag = tag
        self._next = subnet
        self.namespaces: list[Namespace] = []

    def add(self, label: str) -> Namespace:
        """Creates namespace ``bt<tag><label>`` linked to this side; returns it.

        Raises:
            ConfigError: A step failed (its ``ip`` error is in the message).
        """
        name = f"bt{self._tag}{label}"
        k, self._next = self._next, self._next + 1
        ns = Namespace(name=name, inner=f"10.77.{k}.2", outer=f"10.77.{k}.1")
        outer_if, inner_if = f"vo{self._tag}x{k}", f"vi{self._tag}x{k}"
        _ip("link", "del", outer_if)  # a stale end of a lab this one's names were used by
        self._run("netns", "add", name)
        self.namespaces.append(ns)
        self._run("link", "add", outer_if, "type", "veth", "peer", "name", inner_if)
        self._run("link", "set", inner_if, "netns", name)
        self._run("addr", "add", f"{ns.outer}/24", "dev", outer_if)
        self._run("link", "set", outer_if, "up")
        inside = ("-n", name)
        self._run(*inside, "addr", "add", f"{ns.inner}/24", "dev", inner_if)
        self._run(*inside, "link", "set", inner_if, "up")
        self._run(*inside, "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        """Removes every namespace (their veth pairs go with them)."""
        while self.namespaces:
            _ip("netns", "del", self.namespaces.pop().name)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _run(*args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise ConfigError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def main(argv: list[str]) -> None:
    """``NAMESPACE MODULE ARGS...``: becomes ``python -m MODULE ARGS...`` in the namespace."""
    if len(argv) < 2:
        sys.exit("usage: python -m sim.netns NAMESPACE MODULE [ARGS...]")
    namespace, module, *args = argv
    ip = _ip_path()
    os.execv(ip, [ip, "netns", "exec", namespace, sys.executable, "-m", module, *args])  # noqa: S606 (no shell: the arguments pass as they are)


if __name__ == "__main__":
    main(sys.argv[1:])
