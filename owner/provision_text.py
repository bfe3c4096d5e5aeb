"""The text files of provisioning kits: each party's config and its README."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from owner.provision import FederationSpec


def _q(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _tls(name: str) -> str:
    return f'[tls]\nca = "pki/ca.pem"\ncert = "pki/{name}.pem"\nkey = "pki/{name}.key"\n'


def coordinator_toml(spec: FederationSpec) -> str:
    """The coordinator's ``coordinator.toml`` (paths relative to the file)."""
    return (
        f"# Coordinator of federation {spec.name}: coordinator serve --config coordinator.toml\n"
        f"listen = {_q(spec.coordinator.listen_address)}\n"
        'state_dir = "state"\nlease_seconds = 15.0\n\n' + _tls("coordinator")
    )


def site_toml(spec: FederationSpec, site: str) -> str:
    """Site ``site``'s ``site.toml`` (paths relative to the file)."""
    return (
        f"# Site {site} of federation {spec.name}: site-node run --config site.toml\n"
        f"coordinator = {_q(spec.coordinator.dialled)}\n"
        'data_dir = "data"\nwork_dir = "work"\n'
        "# signing.key and encryption.key (never leave this site) and their certificates.\n"
        'keys_dir = "keys"\nheartbeat_seconds = 5.0\n\n' + _tls(site)
    )


def admin_toml(spec: FederationSpec) -> str:
    """The study owner's ``admin.toml`` (paths relative to the file)."""
    return (
        f"# Study owner of federation {spec.name}: baton runs --admin admin.toml\n"
        f"coordinator = {_q(spec.coordinator.dialled)}\n"
        "# The owner's signing and encryption keys with their certificates.\n"
        'keys_dir = "keys"\n\n' + _tls(spec.owner)
    )


def plan_toml(spec: FederationSpec) -> str:
    """An example run plan over every site of the federation."""
    sites = ", ".join(_q(s) for s in spec.sites)
    return (
        "# An example run plan; every key is documented in baton/plan.py.\n"
        f'[run]\nname = "{spec.name}-first-run"\nseed = 0\ncycles = 1\nsites = [{sites}]\n\n'
        '[model]\nname = "mlp"\nargs = { hidden = [16] }\n\n'
        f"[task]\ndataset = {_q(spec.dataset)}\n\n"
        '[ordering]\nstrategy = "fixed"\n\n'
        '[training]\noptimizer = "sgd"\nlr = 0.05\nbatch_size = 16\nlocal_epochs = 1\n'
    )


def ca_readme(spec: FederationSpec) -> str:
    """What the CA operator keeps and does."""
    requests = "".join(
        f"    baton pki tls-certify --ca ca --request {s}.csr --kind site --name {s} "
        f"--out certified-{s}\n"
        f"    baton pki certify --ca ca --request {s}-key-request.pem --kind site "
        f"--name {s} --out certified-{s}\n"
        for s in spec.own_keys
    )
    own = (
        "\nThese sites generate all their keys themselves. Each sends you two requests\n"
        "(public keys only): `NAME.csr` for TLS, and `key-request.pem`, which you save as\n"
        "`NAME-key-request.pem`, both beside `ca/`. Having checked who sent them, certify\n"
        "both and send back the three certificates in `certified-NAME/` (`NAME.pem`,\n"
        "`signing.pem`, `encryption.pem`):\n\n" + requests
        if spec.own_keys
        else ""
    )
    return (
        f"# Federation CA of {spec.name}\n\n"
        "`ca.key` signs every certificate of the federation. Keep this directory offline, and\n"
        "never on the coordinator's machine: whoever holds `ca.key` can mint a site.\n"
        "Hand every other directory of this kit to its party; `ca.pem` is in each of them.\n"
        + own
        + "\nRevoke a certificate: `baton pki revoke --ca ca --cert CERT.pem --crl crl.pem`,\n"
        "then copy `crl.pem` to the coordinator (its config's `crl`).\n"
    )


def coordinator_readme(spec: FederationSpec) -> str:
    """The coordinator operator's steps."""
    names = ", ".join(spec.coordinator.addresses)
    return (
        f"# Coordinator of federation {spec.name}\n\n"
        f"Its certificate (`pki/coordinator.pem`) names: {names}. Parties must dial one of\n"
        f"these names; the kits dial `{spec.coordinator.dialled}`. To serve under another\n"
        "name, provision again with that name in `[coordinator] addresses`.\n\n"
        "    coordinator serve --config coordinator.toml\n\n"
        "State (SQLite and sealed blobs) goes to `state/`. The coordinator never holds a key\n"
        "that opens a model, nor `ca.key`.\n"
    )


def site_readme(spec: FederationSpec, site: str) -> str:
    """Site ``site``'s steps: keys (if its own), data, preflight, run."""
    if site in spec.own_keys:
        keys = (
            "## 1. Your keys (generated here; they never leave this machine)\n\n"
            f"    baton pki tls-request --federation {spec.name} --kind site --name {site} "
            "--out pki\n"
            f"    baton pki keygen --federation {spec.name} --kind site --name {site} "
            "--out keys\n\n"
            f"Send `pki/{site}.csr` and `keys/key-request.pem` (public keys only) to the CA\n"
            f"operator. Copy the `{site}.pem` they send back into `pki/`, and `signing.pem`\n"
            "and `encryption.pem` into `keys/`.\n\n"
        )
    else:
        keys = (
            "## 1. Your keys\n\n"
            "`keys/` holds this site's signing and encryption keys (mode 0600) and their\n"
            "certificates; `pki/` its TLS certificate and key. Keep both private.\n\n"
        )
    return (
        f"# Site {site} of federation {spec.name}\n\n" + keys + "## 2. Your data\n\n"
        "Put this site's table in `data/`: `schema.json` (features, label, classes, task),\n"
        "`train.csv` and `val.csv` (header: the feature names, then the label column).\n"
        "Every site of a run must have the same schema. Check it with\n\n"
        "    site-node check-data --config site.toml\n\n"
        "## 3. Preflight, then run\n\n"
        "    site-node check --config site.toml\n"
        "    site-node run --config site.toml\n\n"
        f"The site dials out only, to `{spec.coordinator.dialled}`; nothing dials in.\n"
    )


def owner_readme(spec: FederationSpec) -> str:
    """The study owner's steps: preflight, submit, watch, fetch."""
    return (
        f"# Study owner {spec.owner} of federation {spec.name}\n\n"
        "`keys/signing.key` signs your run plans; the final model is sealed to\n"
        "`keys/encryption.key`. Keep `keys/` and `pki/` private.\n\n"
        "    baton check --admin admin.toml\n"
        "    baton sites --admin admin.toml\n"
        "    baton submit plan.toml --admin admin.toml --watch\n"
        "    baton fetch RUN_ID model.safetensors --admin admin.toml\n\n"
        "`plan.toml` is an example over every site; edit it for your study.\n"
    )
