"""What every door shares: logging setup, one-line errors, exit codes."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from .errors import PandermError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    # Third-party chatter (HTTP retries, open_clip info) is noise in a CLI.
    for name in ("httpx", "urllib3", "huggingface_hub", "open_clip", "timm", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_door(fn: Callable[[], object], prog: str, debug: bool = False) -> int:
    """Run `fn`; bad input becomes one line on stderr and a non-zero exit.

    `--debug` (or PANDERM_DEBUG=1) keeps the traceback.
    """
    debug = debug or os.environ.get("PANDERM_DEBUG") == "1"
    import signal

    def _terminate(signum, frame):
        # SIGTERM (a scheduler's kill) unwinds like Ctrl-C: temp files are removed, progress records kept.
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a notebook worker)
        pass
    try:
        fn()
    except PandermError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def resolve_device(device: str | None) -> str:
    """'cuda' without a GPU falls back to CPU with a warning, as the reference does."""
    import torch

    from .distributed import local_device

    if device is None or device == "auto":
        return local_device("cuda") if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("panderm").warning("CUDA is not available: running on CPU")
        return "cpu"
    return local_device(device)
