"""Exit codes of Baton's processes, one range per role; retired numbers are never reused.

| range   | role                          |
|---------|-------------------------------|
| 0       | success                       |
| 2       | command-line usage error      |
| 60-79   | CLI tools (`baton`)           |
| 100-119 | coordinator (`coordinator`)   |
| 130     | interrupted (Ctrl-C)          |
| 200-219 | site node (`site-node`)       |

A process exit status is one byte, so the ranges stay below 256 (a "301" would reach the
shell as 45) and clear of 126-128 and of 129-192, which shells use for "killed by signal N".
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
USAGE: Final = 2
INTERRUPTED: Final = 130

# Coordinator.
COORDINATOR_CONFIG: Final = 100
"""The coordinator's configuration or command line is invalid."""
COORDINATOR_PKI: Final = 101
"""The coordinator's certificate, key or CA file is missing or unusable."""
COORDINATOR_STORE: Final = 102
"""The state store or blob directory cannot be opened."""
COORDINATOR_BIND: Final = 103
"""The listen address cannot be bound."""

# Site node.
SITE_CONFIG: Final = 200
"""The site's configuration is invalid."""
SITE_PKI: Final = 201
"""The site's certificate, key or CA file is missing or unusable."""
SITE_DATA: Final = 202
"""The site's local dataset is missing or fails validation."""
SITE_UNREACHABLE: Final = 203
"""The coordinator stayed unreachable after every retry."""
SITE_DATA_GATE: Final = 204
"""The site's dataset is readable but fails the data gate (``site-node check-data``)."""
SITE_PREFLIGHT: Final = 205
"""``site-node check`` found a problem: see its checklist."""

# CLI tools.
CLI_CONFIG: Final = 60
"""A plan or option given to the CLI is invalid."""
CLI_PKI: Final = 61
"""A certificate or key the CLI needs is missing or unusable."""
CLI_UNREACHABLE: Final = 62
"""The coordinator could not be reached."""
CLI_RUN_FAILED: Final = 63
"""The run the CLI followed failed (``submit --watch``, ``watch``)."""
CLI_DEMO_PROCESS: Final = 64
"""A process the demo started exited early."""
CLI_MODEL: Final = 65
"""A model file given to the CLI cannot be read or rebuilt (``baton predict``)."""
CLI_DATA: Final = 66
"""A data file given to the CLI does not fit the model, or its output cannot be written."""
CLI_RUN_CANCELLED: Final = 67
"""The run the CLI followed was cancelled."""
CLI_RUN_REJECTED: Final = 68
"""The run the CLI followed failed because a site rejected a sealed model it received:
a signature, chain, recipient or integrity check failed (a verification failure)."""
CLI_PREFLIGHT: Final = 69
"""``baton check`` found a problem: see its checklist."""
CLI_ERROR: Final = 79
"""Any other Baton error in a CLI tool."""
