"""The ``baton`` command: the PKI tools and the study owner's run commands.

Other installed packages add commands through the ``baton.commands`` entry-point group
(each entry point is a ``register(app)`` function); Baton's own simulations (``baton demo``,
``baton lab``) arrive that way, so the owner's tools never import them.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Annotated

from baton.entry import make_app, version_option
from owner.cli_bench import register as register_bench
from owner.cli_check import register as register_check
from owner.cli_logs import register as register_logs
from owner.cli_merge import register as register_merge
from owner.cli_new import register as register_new
from owner.cli_pki import pki_app
from owner.cli_predict import register as register_predict
from owner.cli_provision import register as register_provision
from owner.cli_report import register as register_report
from owner.cli_runs import register
from owner.cli_task import register as register_task
from owner.cli_verify import register as register_verify

# Every command module imports only typer, rich and the kernel's light modules at the top,
# and the rest when its command runs: ``baton --help`` loads no gRPC, torch or key code.

COMMANDS_GROUP = "baton.commands"
"""Entry-point group of functions that add commands to ``baton``."""

logger = logging.getLogger(__name__)

app = make_app("Baton: sequential learning across hospitals.")


@app.callback()
def _root(
    version: Annotated[bool, version_option("baton")] = False,
) -> None:
    """Baton: sequential learning across hospitals."""


app.add_typer(pki_app, name="pki", help="Create the federation CA and issue certificates.")
register(app)
register_verify(app)
register_task(app)
register_predict(app)
register_new(app)
register_merge(app)
register_provision(app)
register_check(app)
register_report(app)
register_logs(app)
register_bench(app)
for _ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
    _ep.load()(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
