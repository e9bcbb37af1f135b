"""`src/main.py`: the reference zero-shot / retrieval flags, reference outputs by default.

Reproduces PanDerm-2 / DermFM-Zero `src/main.py` evaluation: the same flags and
defaults, image paths as `--parent-path` + CSV value (relative to the working
directory), per-sample CSVs under `<logs>/<DATASET-FOLDER>/<model>.csv` and the
reference metric keys in `<logs>/<name>/checkpoints/results.jsonl`. Departures
(documented in docs/REFERENCE.md): no crash on missing classes for top-3, DermNet
(`--zeroshot-eval`) works, labels may be class names, bad input is one line.
"""
from __future__ import annotations

import argparse
import logging

from ..data.benchmarks import BENCHMARKS, load_classnames
from . import add_reference_device_arg
from ..errors import PandermError

# features.PRECISIONS, spelled out: importing features imports torch, and a missing CSV is reported before that.
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32", "pure_bf16", "pure_fp16")

log = logging.getLogger("panderm")

#: The door's `{param: flag}` map: an error's `param` is named by this door's flag.
FLAGS = {"image_root": "--parent-path", "image_col": "--csv-img-key",
         "label_col": "--csv-label-key", "caption_col": "--csv-caption-key", "checkpoint": "--pretrained"}

_EVAL_FLAGS = {b.flag: b for b in BENCHMARKS.values()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="main.py", description="Reference-compatible zero-shot and retrieval evaluation",
                                allow_abbrev=False)
    for flag in _EVAL_FLAGS:
        p.add_argument(flag, dest=flag.lstrip("-").replace("-", "_"), default=None, help=f"CSV for {_EVAL_FLAGS[flag].name}")
    p.add_argument("--zeroshot_eval_custom", default=None, help="CSV of a custom dataset (needs --classnames)")
    p.add_argument("--classnames", default=None, help="class names for the custom CSV: a file or 'a,b,c'")
    p.add_argument("--templates", default=None, help="prompt template file (default: the 8 skin templates)")
    p.add_argument("--csv-img-key", default="filepath", help="CSV column holding the image paths")
    p.add_argument("--csv-label-key", default=None, help="CSV column holding the labels (zero-shot)")
    p.add_argument("--csv-caption-key", default="title", help="CSV column holding the captions (retrieval)")
    p.add_argument("--csv-separator", default="\t", help="accepted and ignored, as in the reference")
    p.add_argument("--parent-path", default="", help="string prefix joined to every image path")
    from ..cli.args import add_allow_absolute_paths
    from ..cli.doors import finish_help

    add_allow_absolute_paths(p)
    p.add_argument("--val-data", default=None, help="retrieval CSV (image, caption)")
    p.add_argument("--train-data", default=None,
                   help="not supported: this door only evaluates (giving it is one error line)")
    p.add_argument("--dataset-type", default="auto", help="dataset format; csv is the one read (auto: csv)")
    p.add_argument("--model", default="RN50",
                   help="model id: open_clip config name, hf-hub:ORG/NAME, an alias (see `panderm models`), ...")
    p.add_argument("--pretrained", default="", help="open_clip pretrained tag or weights file for --model")
    p.add_argument("--batch-size", type=int, default=64, help="images (and captions) per batch")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--precision", default="amp", choices=PRECISIONS,
                   help="numeric precision of the image and text towers")
    add_reference_device_arg(p)
    p.add_argument("--logs", default="./zero-shot-logs/",
                   help="folder for <logs>/<DATASET>/<model>.csv and <logs>/<name>/checkpoints/results.jsonl")
    p.add_argument("--name", default=None,
                   help="run name under --logs (default: time stamp, model, lr, batch size, workers, precision, "
                        "as the reference)")
    p.add_argument("--lr", type=float, default=5.0e-4,
                   help="only written into the run name, as the reference (no training)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--zeroshot-frequency", type=int, default=1,
                   help="accepted as in the reference; zero-shot runs once")
    p.add_argument("--image-mean", type=float, nargs="+", default=None,
                   help="override the model's image normalisation mean (3 floats)")
    p.add_argument("--image-std", type=float, nargs="+", default=None,
                   help="override the model's image normalisation std (3 floats)")
    p.add_argument("--image-interpolation", default=None, choices=["bicubic", "bilinear", "random"],
                   help="override the model's resize interpolation")
    p.add_argument("--image-resize-mode", default=None, choices=["shortest", "longest", "squash"],
                   help="override the model's resize mode")
    p.add_argument("--force-image-size", type=int, default=None, help="override the model's input size (px)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: $PANDERM_CACHE/features)")
    p.add_argument("--report-to", default="",
                   help="accepted as in the reference (wandb/tensorboard logging is not done here)")
    p.add_argument("--group-by", default=None, help="retrieval: column whose equal values count as the same item")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for our results.json CIs (0: off)")
    p.add_argument("--no-cache", action="store_true", help="re-encode images instead of using the feature cache")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def _preprocess_overrides(args, encoder):
    import dataclasses

    spec = dataclasses.replace(encoder.preprocess_spec)  # a copy: specs can be shared module constants
    changed = False
    if args.image_mean:
        spec.mean, changed = tuple(args.image_mean) if len(args.image_mean) == 3 else (args.image_mean[0],) * 3, True
    if args.image_std:
        spec.std, changed = tuple(args.image_std) if len(args.image_std) == 3 else (args.image_std[0],) * 3, True
    if args.image_interpolation:
        # open_clip maps 'random' to bicubic at evaluation time.
        spec.interpolation, changed = ("bilinear" if args.image_interpolation == "bilinear" else "bicubic"), True
    if args.image_resize_mode:
        spec.resize_mode, changed = args.image_resize_mode, True
    if args.force_image_size:
        spec.size, changed = args.force_image_size, True
    if changed:
        encoder.set_preprocess(spec)


def reference_preprocess(model_id: str, encoder) -> None:
    """The transform the reference's src/main.py gives this model, where it differs from the model's own.

    Its PIL loader ignores EXIF orientation. `--model monet --pretrained openai` goes through open_clip's
    load_openai_model, which keeps open_clip's default preprocessing (OpenAI CLIP mean/std), not MONET's
    ImageNet constants.
    """
    import dataclasses

    from ..models import PreprocessSpec, resolve_alias

    spec = encoder.preprocess_spec
    if resolve_alias(model_id.strip()).model_id == resolve_alias("MONET").model_id:
        spec = PreprocessSpec(size=spec.size)
    encoder.set_preprocess(dataclasses.replace(spec, exif_transpose=False))


def run(args) -> None:
    from ..cli.doors import check_inputs

    # A missing CSV is one line before torch is imported and the model loads.
    given = {flag: getattr(args, flag.lstrip("-").replace("-", "_")) for flag in _EVAL_FLAGS}
    check_inputs([(v, f) for f, v in given.items() if v] + [(args.zeroshot_eval_custom, "--zeroshot_eval_custom"),
                                                            (args.val_data, "--val-data")])
    from ..cli.doors import resolve_device
    from ..data.templates import SKIN_TEMPLATES, load_templates
    from ..models import load_encoder, model_short_name
    from ..report import RANDOM_WEIGHTS, format_table, provenance, write_report
    from ..tasks import zeroshot
    from ..tasks.reference_logs import ReferenceLogs, experiment_name

    if args.train_data:
        raise PandermError("--train-data: training is not part of this toolkit (evaluation only)")
    flags = {flag: getattr(args, flag.lstrip("-").replace("-", "_")) for flag in _EVAL_FLAGS}
    wanted = {f: v for f, v in flags.items() if v}
    if not wanted and not args.zeroshot_eval_custom and not args.val_data:
        raise PandermError("nothing to evaluate: give --zeroshot-eval1..7, --zeroshot_eval_custom or --val-data")
    if (wanted or args.zeroshot_eval_custom) and not args.csv_label_key:
        raise PandermError("--csv-label-key is required for zero-shot classification (e.g. --csv-label-key label)")
    templates = load_templates(args.templates) if args.templates else SKIN_TEMPLATES

    # Validate every CSV before the model is loaded.
    datasets = []
    for flag, csv in wanted.items():
        bench = _EVAL_FLAGS[flag]
        datasets.append(zeroshot.build_dataset(csv, benchmark=bench, image_col=args.csv_img_key,
                                               label_col=args.csv_label_key, concat_prefix=args.parent_path,
                                               allow_outside_root=args.allow_outside_root))
    if args.zeroshot_eval_custom:
        if not args.classnames:
            raise PandermError("--zeroshot_eval_custom needs --classnames FILE or 'a,b,c'")
        datasets.append(zeroshot.build_dataset(args.zeroshot_eval_custom, load_classnames(args.classnames),
                                               image_col=args.csv_img_key, label_col=args.csv_label_key,
                                               concat_prefix=args.parent_path, name="customized_dataset",
                                               allow_outside_root=args.allow_outside_root))
    retrieval_table = None
    if args.val_data:
        from ..tasks.retrieval.data import load_pairs

        # The reference's retrieval CsvDataset opens paths as written (relative to the working directory):
        # --parent-path is for the zero-shot CSVs only.
        retrieval_table = load_pairs(args.val_data, args.csv_img_key, args.csv_caption_key, concat_prefix="",
                                     group_by=args.group_by,
                                     allow_outside_root=args.allow_outside_root)

    name = args.name or experiment_name(args.model, args.lr, args.batch_size, args.workers, args.precision)
    logs = ReferenceLogs(args.logs, name, vars(args))
    try:
        device = resolve_device(args.device)
        encoder = load_encoder(args.model, checkpoint=args.pretrained or None, device=device)
        reference_preprocess(args.model, encoder)
        _preprocess_overrides(args, encoder)
        short = model_short_name(args.model)
        metrics: dict = {}
        results = zeroshot.run(encoder, datasets, templates, batch_size=args.batch_size, num_workers=args.workers,
                               precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
                               n_bootstrap=args.bootstrap, reference=True)
        for r in results:
            logs.write_per_sample(r.dataset.folder, short, r.predictions_frame(args.csv_img_key))
            metrics.update(r.reference_metrics())
        if retrieval_table is not None:
            from ..tasks.retrieval import pipeline as retrieval_run

            settings = retrieval_run.ReferenceSettings(args.batch_size, args.workers, args.precision,
                                                       cache=not args.no_cache, cache_dir=args.cache_dir,
                                                       group_by=args.group_by)
            metrics.update(retrieval_run.reference_metrics(encoder, retrieval_table, settings))
        logs.log_metrics(metrics)
        if results:
            write_report(results, logs.run_dir, provenance(encoder, [d.table.csv_path for d in datasets],
                                                            seed=args.seed), encoder.random_init)
            if encoder.random_init:
                print(RANDOM_WEIGHTS)
            print(format_table(results.rows()))
        print(f"results: {logs.run_dir / 'checkpoints' / 'results.jsonl'}")
    finally:
        logs.close()


def main(argv=None) -> int:
    from ..cli.doors import door_main

    return door_main(build_parser(), run, "main.py", FLAGS, argv)
