"""What every door shares (the `panderm` command and the reference doors in compat/): logging setup, one-line
errors, exit codes, the `--help` formatter and the cheap input checks made before torch is imported."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable

from ..errors import DataError, PandermError


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    from ..progress import set_quiet

    set_quiet(quiet)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    # Third-party chatter (HTTP retries, open_clip info) is noise in a CLI.
    # open_clip logs through the root logger itself, hence root → WARNING; panderm's own loggers keep INFO
    # (progress notes such as "resuming an interrupted extraction at row N").
    for name in ("httpx", "urllib3", "huggingface_hub", "open_clip", "timm", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("panderm").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def report_ignored(args, ignored: dict[str, str]) -> None:
    """One line per reference flag that was given but changes nothing here, with the reason."""
    for flag, why in ignored.items():
        if getattr(args, flag) is not None:
            print(f"--{flag} {getattr(args, flag)!r} ignored: {why}")


def parser_flags(parser: argparse.ArgumentParser, args: argparse.Namespace | None = None) -> dict[str, str]:
    """`{dest: flag}` for the options of `parser` and of the subcommands `args` chose (first long spelling).

    An error whose `param` is named like a setting is then spelled the way this door spells it; only params
    with another name (or a whole hint) need an entry in the door's FLAGS map."""
    out: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                out.update(parser_flags(chosen, args))  # the subcommand's own option wins
        elif action.option_strings and action.dest != "help":
            longs = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
            out.setdefault(action.dest, longs[0])
    return out


def door_flags(parser: argparse.ArgumentParser, flags: dict[str, str] | None = None,
               args: argparse.Namespace | None = None) -> dict[str, str]:
    """The `{param: flag}` map a door renders errors with: its parser's options (`parser_flags`), with the door's
    own FLAGS (other names, whole hints) over them."""
    return {**parser_flags(parser, args), **(flags or {})}


def run_door(fn: Callable[[], object], prog: str, debug: bool = False, flags: dict[str, str] | None = None,
             parser: argparse.ArgumentParser | None = None, args: argparse.Namespace | None = None) -> int:
    """Run `fn`; bad input becomes one line on stderr and a non-zero exit.

    An error's `param` (e.g. "image_root") is named by this door's flag for it: `flags` first, else the option
    of `parser` (and of the subcommand `args` chose) with that destination. `--debug` (or PANDERM_DEBUG=1)
    keeps the traceback.
    """
    debug = debug or os.environ.get("PANDERM_DEBUG") == "1"
    flags = door_flags(parser, flags, args) if parser is not None else dict(flags or {})
    def _terminate(signum, frame):
        # SIGTERM (a scheduler's kill) unwinds like Ctrl-C: temp files are removed, progress records kept.
        raise KeyboardInterrupt

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
        pass
    from ..report import discard_claimed, forget_claimed, forget_inputs, release_run_dirs

    forget_claimed()
    forget_inputs()
    try:
        fn()
    except PandermError as exc:
        if debug:
            raise
        discard_claimed()  # output folders this run created: a failed run leaves nothing behind
        _close_progress_bars()
        print(f"{prog}: error: {exc.render(flags)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        forget_claimed()  # keep checkpoints and progress records: --resume continues from them
        _close_progress_bars()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug or exc.errno not in _STORAGE_ERRNOS:
            raise
        discard_claimed()
        _close_progress_bars()
        print(f"{prog}: error: {storage_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:  # a door called in-process (tests, notebooks) leaves the handler as it was
            signal.signal(signal.SIGTERM, previous)
        release_run_dirs()
    forget_claimed()
    return 0


def door_main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], object], prog: str,
              flags: dict[str, str] | None, argv=None, ignored: dict[str, str] | None = None) -> int:
    """A reference door's whole main: parse `argv`, set up logging, say which reference flags change nothing
    here (`ignored`: `{dest: why}`), then run `body(args)` as :func:`run_door` does."""
    args = parser.parse_args(argv)
    setup_logging()
    report_ignored(args, ignored or {})
    return run_door(lambda: body(args), prog, debug=args.debug, flags=flags, parser=parser)


# A full disk, a read-only or foreign folder, a quota: the user's storage, not a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def storage_error_line(exc: OSError) -> str:
    """'cannot write PATH: No space left on device (errno 28)'; the path where the OS names one."""
    where = exc.filename if exc.filename is not None else "the output"
    what = exc.strerror or os.strerror(exc.errno)
    return f"cannot write {where}: {what} (errno {exc.errno}); nothing partial was kept"


def _close_progress_bars() -> None:
    """Close progress bars an exception left open, so the final message starts its own line."""
    from ..progress import abandon_all

    abandon_all()
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:  # a bar in a broken state must not hide the real message
            pass


def _shows_default(value) -> bool:
    """A default worth printing: a value, not None, not a store_true/store_false flag's bool, not empty."""
    if value is None or value is argparse.SUPPRESS or isinstance(value, bool):
        return False
    return not (isinstance(value, (str, list, tuple)) and len(value) == 0)


def _help_formatter():
    class DefaultOnceFormatter(argparse.HelpFormatter):
        """`--help` shows each option's default exactly once: appended as "(default: X)" unless the help text
        already names its default (or there is none to show)."""

        def _get_help_string(self, action):
            text = action.help or ""
            if (action.option_strings and _shows_default(action.default)
                    and not re.search(r"\bdefault\b", text, flags=re.I) and "%(default)" not in text):
                text += " (default: %(default)s)"
            return text

    return DefaultOnceFormatter


def finish_help(parser):
    """Give `parser` and all its subcommand parsers the one `--help` formatter (each default shown once)."""
    parser.formatter_class = _help_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                finish_help(sub)
    return parser


def resolve_device(device: str | None, flag: str = "--device", reference_cuda: bool = False) -> str:
    """`panderm.runtime.resolve_device`, its errors naming this door's `flag`."""
    from ..runtime import resolve_device as resolve

    return resolve(device, flag, reference_cuda)


def check_inputs(files: list[tuple[object, str]] = (), out: tuple[object, str] | None = None,
                 overwrite: bool = False, overwrite_flag: str | None = "--overwrite") -> None:
    """The cheap checks a door makes before torch is imported or a model is loaded.

    `files`: (path, flag) of each input CSV (or data folder) given; a missing one is one line at once.
    `out`: (path, flag) of a run folder that must not already hold a run (unless `overwrite`); the library
    makes the same check again when it claims the folder.
    """
    for path, flag in files:
        if path is None or str(path) == "":
            continue
        if not Path(path).exists():
            raise DataError(f"CSV not found: {path} ({flag})")
    if out is not None and out[0] is not None and not overwrite:
        folder, flag = Path(out[0]), out[1]
        if folder.exists() and not folder.is_dir():
            raise PandermError(f"output path exists and is not a folder: {folder} ({flag})")
        if folder.is_dir() and any(folder.iterdir()):
            way = f"pass {overwrite_flag} or " if overwrite_flag else ""
            raise PandermError(f"output folder {folder} already holds a run; {way}choose another {flag}")


def precheck(csv: tuple[str, ...] = ("csv",), out: str | None = "out", flags: dict[str, str] | None = None):
    """`args -> None` running `check_inputs` on the attributes `csv` (input files) and `out` (a run folder).

    `flags` maps an attribute to its flag spelling (default: --attr-name).
    """
    names = flags or {}

    def flag(attr: str) -> str:
        return names.get(attr, "--" + attr.replace("_", "-"))

    def check(args) -> None:
        files = []
        for attr in csv:
            value = getattr(args, attr, None)
            for one in (value if isinstance(value, (list, tuple)) else [value]):
                files.append((one, flag(attr)))
        folder = (getattr(args, out, None), flag(out)) if out else None
        # --overwrite replaces the run, --resume continues it, --eval reads it
        again = any(bool(getattr(args, name, False)) for name in ("overwrite", "resume", "eval"))
        check_inputs(files, folder, overwrite=again)

    return check
