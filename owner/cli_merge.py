"""``baton merge`` and ``baton base-hash``: a fine-tuned language model's result as a full
checkpoint, and the pin a plan gives its base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from baton import exit_codes
from baton.entry import exit_on_error
from baton.errors import BatonError, ConfigError, DataError, ModelError

# torch and transformers are imported when a command runs: ``baton --help`` stays fast.

_CODES: dict[type[BatonError], int] = {
    ConfigError: exit_codes.CLI_CONFIG,
    ModelError: exit_codes.CLI_MODEL,
    DataError: exit_codes.CLI_DATA,
}


def register(app: typer.Typer) -> None:
    """Adds ``merge`` and ``base-hash`` to the ``baton`` app."""

    @app.command("merge")
    def merge(
        result: Annotated[
            Path, typer.Argument(metavar="RESULT", help="A result from 'baton fetch'.")
        ],
        base: Annotated[Path, typer.Option(help="The base checkpoint directory the run pinned.")],
        out: Annotated[Path, typer.Option(help="A new directory for the merged checkpoint.")],
    ) -> None:
        """Fold a fine-tuned language model's adapters into its base and write a checkpoint
        that plain transformers loads (AutoModelForCausalLM.from_pretrained(OUT))."""
        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            from baton.ml.llm.merge import merge as run_merge

            pin = run_merge(result, base, out)
        typer.echo(f"merged {result} onto base {pin} into {out}")

    @app.command("base-hash")
    def base_hash(
        directory: Annotated[
            Path, typer.Argument(metavar="DIR", help="A pretrained checkpoint directory.")
        ],
    ) -> None:
        """Print the content hash of a base checkpoint: a plan's model.args.base_sha256."""
        with exit_on_error(_CODES, exit_codes.CLI_ERROR):
            from baton.ml.llm.base import base_hash as hash_of

            digest = hash_of(directory)
        typer.echo(digest)
