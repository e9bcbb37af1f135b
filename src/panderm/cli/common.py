"""Steps every evaluating subcommand's handler takes: load the model after the data was validated, claim the
run folder, print the result table. Handlers import these; no handler imports another handler's module."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..report import RANDOM_WEIGHTS
from .doors import resolve_device


def encoder_and_run_dir(args, preprocess=None):
    """Load the model (after the data was validated), then claim the run folder."""
    from ..models import load_encoder
    from ..report import prepare_run_dir

    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=resolve_device(args.device),
                           allow_random_init=args.allow_random_init, preprocess=preprocess)
    # the reference's own transform (--reference-preprocess) comes with the reference's full decoding
    encoder.set_draft_decode(not args.full_decode and not getattr(args, "reference_preprocess", False))
    return encoder, prepare_run_dir(args.out, args.overwrite)


def print_results(encoder, table: str, out, notes=()) -> None:
    if encoder.random_init:
        print(RANDOM_WEIGHTS)
    print(table)
    for line in notes:
        print(line)
    print(f"wrote {out / 'results.json'}")


def claim(args):
    """The `--out` run folder, claimed (refused where it holds a run, unless `--overwrite`)."""
    from ..report import prepare_run_dir

    return prepare_run_dir(args.out, args.overwrite)


def load_model(args):
    from ..models import load_encoder

    return load_encoder(args.model, checkpoint=args.checkpoint, device=resolve_device(args.device),
                        allow_random_init=args.allow_random_init)


def files_model(model_id: str, files) -> dict:
    """Provenance `model` for a step without an image/text encoder: an id and the sha256 of its weight files."""
    from ..report import file_sha256

    found = []
    for f in map(Path, files):
        found += sorted(g for g in f.rglob("*") if g.is_file()) if f.is_dir() else ([f] if f.is_file() else [])
    digest = hashlib.sha256("".join(file_sha256(f) for f in found).encode()).hexdigest()[:16]
    return {"model_id": model_id, "fingerprint": digest, "files": [str(f) for f in found]}


def finish(out, data: dict, table_rows: list[dict], encoder=None, csv_files=(), seed=None, random_init=False,
           inputs=(), model=None, device=None) -> None:
    """Write `results.json` (with provenance) and print the table: the end of every `panderm concepts` action."""
    from ..report import format_table, provenance, write_json

    if device is None and encoder is None:
        device = "cpu"
    data = {**data, "provenance": provenance(encoder, csv_files, seed=seed, inputs=inputs, model=model,
                                             device=device)}
    write_json(out / "results.json", data)
    if random_init:
        print("RANDOM WEIGHTS: the concept texts were encoded by an untrained model")
    print(format_table(table_rows))
    print(f"wrote {out / 'results.json'}")
