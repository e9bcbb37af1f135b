"""`panderm models [--filter TEXT]`: the model aliases."""
from __future__ import annotations


def _models(args) -> None:
    from ..models.registry import ALIASES
    from ..report import format_table

    rows = [{"alias": name, "loads": alias.model_id + (f" (pretrained {alias.pretrained})" if alias.pretrained else ""),
             "notes": alias.note} for name, alias in ALIASES.items()]
    rows.append({"alias": "demo", "loads": "built on the fly", "notes": "tiny random-weight model (demos and tests)"})
    wanted = (args.filter or "").lower()
    rows = [r for r in rows if wanted in " ".join(r.values()).lower()]
    print(format_table(rows) if rows else f"no alias matches {args.filter!r}")


def register(sub, add_model_args=None) -> None:
    p = sub.add_parser("models", help="list model aliases", allow_abbrev=False)
    p.add_argument("--filter", default=None, metavar="TEXT", help="only aliases whose name, target or notes hold TEXT")
    p.set_defaults(func=_models)
