"""`panderm demo`: the tasks on the bundled real sample, with short tables."""
from __future__ import annotations

from ..tasks.registry import DEMO_TASKS
from .args import DEVICE_HELP
from .doors import resolve_device


def _demo(args) -> None:
    from ..demo import run_demo

    run_demo(args.model, args.out, device=resolve_device(args.device), checkpoint=args.checkpoint,
             tasks=("features", *DEMO_TASKS))


def register(sub, add_model_args=None) -> None:
    p = sub.add_parser("demo", help="run the tasks on the bundled real sample and print short tables",
                       allow_abbrev=False)
    p.add_argument("--model", default="demo", help="model id (default: a tiny random-weight demo model)")
    p.add_argument("--checkpoint", default=None, help="weights file (or open_clip pretrained tag) for --model")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--out", default="demo-output", help="output folder")
    p.set_defaults(func=_demo)
