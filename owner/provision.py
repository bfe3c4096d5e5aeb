"""Provisioning kits: one directory per party of a federation, from one description.

``baton provision federation.toml --out DIR`` writes::

    DIR/ca/                     ca.pem, ca.key (0600): keep this directory offline
    DIR/coordinator/            pki/, coordinator.toml, README.md
    DIR/sites/<name>/           pki/, keys/, data/, site.toml, README.md
    DIR/owner/                  pki/, keys/, admin.toml, plan.toml, README.md

Every TLS certificate and key comes from :func:`baton.security.pki.issue`; application
keys (signing, encryption) from :func:`baton.security.sealing.provision_app_keys`, written
straight into the party's own directory. A site listed in ``own_keys`` gets no private
key at all, TLS included, only ``pki/ca.pem``: its README carries the request steps
(``baton pki tls-request`` and ``baton pki keygen`` at the site, ``baton pki tls-certify``
and ``baton pki certify`` at the CA), so its private keys never exist outside it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from baton.config import load
from baton.errors import ConfigError
from baton.security.identity import LABEL, LABEL_PATTERN, Identity

DEFAULT_PORT = 7443
"""The coordinator's port when the description names none."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CoordinatorSpec:
    """Where the coordinator listens and the names the parties dial it by."""

    addresses: tuple[str, ...]
    """DNS names and IP addresses the coordinator is reached at; every one goes into its
    certificate, and the first is the one the sites and the owner dial."""
    port: int = DEFAULT_PORT
    """The port the coordinator listens on and the parties dial."""
    listen: str = ""
    """The coordinator's listen address; by default ``0.0.0.0:<port>``, or
    ``127.0.0.1:<port>`` when every address is loopback."""

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ConfigError("[coordinator] addresses must name at least one DNS name or IP")
        if not 0 < self.port < 65536:
            raise ConfigError(f"[coordinator] port {self.port} is not between 1 and 65535")

    @property
    def dialled(self) -> str:
        """The address every party dials, ``host:port`` (IPv6 in brackets)."""
        host = self.addresses[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def listen_address(self) -> str:
        """The listen address written into ``coordinator.toml``."""
        if self.listen:
            return self.listen
        if all(_is_loopback(a) for a in self.addresses):
            return f"127.0.0.1:{self.port}"
        return f"0.0.0.0:{self.port}"  # remote sites dial in: every interface

    def split(self) -> tuple[list[str], list[str]]:
        """The addresses as (DNS names, IP addresses), for the certificate's SANs."""
        dns, ips = [], []
        for address in self.addresses:
            try:
                ips.append(str(ipaddress.ip_address(address)))
            except ValueError:
                dns.append(address)
        return dns, ips


@dataclass(frozen=True, kw_only=True, slots=True)
class FederationSpec:
    """A federation description (``federation.toml``): who takes part and where."""

    name: str
    """The federation's name, the trust domain of its certificates (e.g. ``acme-health``)."""
    coordinator: CoordinatorSpec
    """The coordinator's addresses and port."""
    sites: tuple[str, ...]
    """The sites' names (e.g. ``st-mary``), each a kit."""
    owner: str = "study-owner"
    """The study owner's name: signs plans, receives the final model."""
    own_keys: tuple[str, ...] = ()
    """Sites that generate all their keys themselves, TLS included (the CSR flow): their
    kits hold no private key, only the request steps."""
    days: int = 365
    """Validity of every certificate issued, in days."""
    dataset: str = "breast_cancer"
    """The task of the example ``plan.toml`` (an installed task's name)."""

    def __post_init__(self) -> None:
        names = [self.name, self.owner, *self.sites]
        bad = next((n for n in names if not LABEL.fullmatch(n)), None)
        if bad is not None:
            raise ConfigError(f"name {bad!r} is not valid: names must match {LABEL_PATTERN}")
        if not self.sites:
            raise ConfigError("sites must name at least one site")
        if len(set(self.sites)) != len(self.sites):
            raise ConfigError("sites names a site twice")
        if self.owner in self.sites:
            raise ConfigError(f"the owner {self.owner!r} is also named a site")
        unknown = sorted(set(self.own_keys) - set(self.sites))
        if unknown:
            raise ConfigError(f"own_keys names {unknown[0]!r}, which is not one of the sites")
        if self.days < 1:
            raise ConfigError(f"days must be at least 1, not {self.days}")

    def identity(self, kind: str, name: str) -> Identity:
        """The identity of one party of this federation."""
        return Identity(federation=self.name, kind=kind, name=name)


@dataclass(frozen=True, kw_only=True, slots=True)
class Kits:
    """Where :func:`provision` wrote each party's kit."""

    root: Path
    """The output directory."""

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    @property
    def coordinator(self) -> Path:
        return self.root / "coordinator"

    @property
    def owner(self) -> Path:
        return self.root / "owner"

    def site(self, name: str) -> Path:
        """The kit of site ``name``."""
        return self.root / "sites" / name


def load_spec(path: Path) -> FederationSpec:
    """Reads a federation description.

    Raises:
        ConfigError: The file is missing, not TOML, or a key or value is invalid.
    """
    try:
        return load(FederationSpec, path)
    except ConfigError as exc:
        if exc.message.startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc.message}") from None


def provision(spec: FederationSpec, out: Path) -> Kits:
    """Writes every party's kit under ``out``, which must not hold a kit yet.

    Raises:
        ConfigError: ``out`` already holds a kit, or cannot be written.
        PkiError: A certificate cannot be issued (e.g. an invalid DNS name).
    """
    from baton.security.files import make_dir, write_new
    from baton.security.pki import CA_CERT_FILE, create_ca, issue
    from baton.security.sealing import provision_app_keys
    from owner import provision_text as text

    kits = Kits(root=out)
    if kits.ca.exists():
        raise ConfigError(f"{kits.ca} already exists; provision into a new directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror}") from None
    ca_pem = create_ca(kits.ca, spec.name).read_bytes()
    dns, ips = spec.coordinator.split()
    coordinator = spec.identity("coordinator", "coordinator")
    issue(
        kits.ca,
        kits.coordinator / "pki",
        coordinator,
        dns_names=dns,
        ip_addresses=ips,
        days=spec.days,
    )
    _write(kits.coordinator / "coordinator.toml", text.coordinator_toml(spec))
    _write(kits.coordinator / "README.md", text.coordinator_readme(spec))
    owner = spec.identity("admin", spec.owner)
    issue(kits.ca, kits.owner / "pki", owner, days=spec.days)
    provision_app_keys(kits.ca, kits.owner / "keys", owner)
    _write(kits.owner / "admin.toml", text.admin_toml(spec))
    _write(kits.owner / "plan.toml", text.plan_toml(spec))
    _write(kits.owner / "README.md", text.owner_readme(spec))
    for name in spec.sites:
        site_dir = kits.site(name)
        site = spec.identity("site", name)
        if name in spec.own_keys:
            make_dir(site_dir / "pki")
            write_new(site_dir / "pki" / CA_CERT_FILE, ca_pem, role="CA certificate")
        else:
            issue(kits.ca, site_dir / "pki", site, days=spec.days)
            provision_app_keys(kits.ca, site_dir / "keys", site)
        (site_dir / "data").mkdir(mode=0o700, exist_ok=True)
        _write(site_dir / "site.toml", text.site_toml(spec, name))
        _write(site_dir / "README.md", text.site_readme(spec, name))
    _write(kits.ca / "README.md", text.ca_readme(spec))
    return kits


def _write(path: Path, content: str) -> None:
    """Writes a kit's text file (configs and READMEs hold no secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def _is_loopback(address: str) -> bool:
    """Whether ``address`` is ``localhost`` or a loopback IP."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
