"""`panderm compare`: registered by :func:`register` (filled in by the compare work)."""
from __future__ import annotations


def register(sub, add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
