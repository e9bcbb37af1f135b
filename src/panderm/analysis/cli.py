"""The analysis subcommands (compare, sweep, audit): each module owns its parser and its run function."""
from __future__ import annotations

from . import audit_cli, compare_cli, sweep_cli

COMMANDS = (compare_cli, sweep_cli, audit_cli)


def register(sub, add_model_args) -> None:
    for module in COMMANDS:
        module.register(sub, add_model_args)
