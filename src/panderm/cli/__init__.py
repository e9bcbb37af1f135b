"""The `panderm` command: one subcommand per task.

The CLI does the right thing by default (the model's own preprocessing, RGB
images, seeded classifiers); reference behaviour is behind flags and in the
reference-compatible doors (src/main.py, linear_probe/, ...; their flag dialects live in panderm.compat).

`COMMANDS` is the one list of subcommands, in `panderm --help` order: each entry names the subcommand and the
function of its module (below panderm/cli/) that adds its parser.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import analysis, concepts, demo, features, finetune, linear_probe, models, multimodal, retrieval, segment
from . import zeroshot
from .args import add_model_args
from .doors import door_flags, finish_help, run_door, setup_logging

__all__ = ["COMMANDS", "add_model_args", "build_parser", "main"]

COMMANDS = (
    ("features", features.register_features),
    ("preresize", features.register_preresize),
    ("demo", demo.register),
    ("models", models.register),
    ("linear-probe", linear_probe.register),
    ("retrieval", retrieval.register),
    ("zeroshot", zeroshot.register),
    ("concepts", concepts.register),
    ("finetune", finetune.register),
    ("multimodal", multimodal.register),
    ("segment", segment.register),
    ("compare", analysis.register_compare),
    ("sweep", analysis.register_sweep),
    ("audit", analysis.register_audit),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panderm", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"panderm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log more detail (debug messages)")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or notes; results, warnings and errors still print")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, register in COMMANDS:
        register(sub, add_model_args)
        if name not in sub.choices:  # the list is the single source of the subcommand names
            raise RuntimeError(f"COMMANDS entry {name!r}: its register function added no such subcommand")
    return finish_help(parser)


#: What `panderm` says for an error's `param` where its parser cannot: a setting whose option has another name,
#: or a whole hint. Every other param is named by the option with that destination (`doors.parser_flags`).
FLAGS = {"image_root": "--root", "run_dir": "pass --overwrite or choose another --out"}


def command_flags(*words: str) -> dict[str, str]:
    """The `{param: flag}` map `panderm <words>` renders errors with, e.g. `command_flags("segment", "train")`."""
    parser = build_parser()
    args, at, flags = argparse.Namespace(), parser, dict(FLAGS)
    for word in words:
        sub = next(a for a in at._actions if isinstance(a, argparse._SubParsersAction))
        setattr(args, sub.dest, word)
        at = sub.choices[word]
        flags.update(at.get_default("door_flags") or {})
    return door_flags(parser, flags, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug, -q and -v are global flags; users type them after the subcommand too ("panderm features ... -q").
    flags = {"--debug": "debug", "-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
    given = {flags[a] for a in argv if a in flags}
    if {"quiet", "verbose"} <= given:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    args = parser.parse_args([a for a in argv if a not in flags])
    for name in ("debug", "quiet", "verbose"):
        setattr(args, name, name in given)
    setup_logging(args.verbose, args.quiet)
    # `panderm sweep` runs its cells through this very entry point; handed on so the library needs no import
    # of the command line.
    args.cli_main, args.cli_parser = main, parser

    def run():
        if getattr(args, "precheck", None) is not None:
            args.precheck(args)  # missing CSV, --out holding a run: one line before torch is imported
        from ..distributed import finish, init_from_env

        init_from_env()  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
        args.func(args)
        finish()

    return run_door(run, "panderm", debug=args.debug, flags={**FLAGS, **getattr(args, "door_flags", {})},
                    parser=parser, args=args)
