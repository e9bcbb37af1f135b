"""Subcommands contributed by the task modules (each registers its own parser)."""
from __future__ import annotations


def register(sub, add_model_args) -> None:
    """Task subcommands are added here as tasks land."""
    return None
