#!/usr/bin/env python
"""Reference door: PanDerm-2 `4_intervention_CBM.py` (zero the SAE latents of a concept in the test codes).

Reads `<result_dir>/<importance_file>` (default `before-intervention/classifier_weights.npy`) and
`<result_dir>/<split>/<activation_file>` (default `learned_activation.npy`), picks `--top_n` latents —
`matching`: the latents with a non-zero weight whose dictionary direction is closest to the `--concept` text
(default 'hair') encoded by `--clip_model_name` (weights from `--clip_checkpoint` if given); `topk`: the largest
|weight| — sets them to 0 and writes `<result_dir>/<split>/<output_file>` (default
`learned_activation_after_intervention.npy`) with a `.json` listing the latents. The file flags join onto
`--result_dir` as in the reference, so an absolute path is used as given. Ours: `--weights`, `--activations` and
`--output` take full paths and override the three; `--model` / `--checkpoint` are other names for
`--clip_model_name` / `--clip_checkpoint`. `--data_dir` and `--project_root` are accepted and ignored (a line says
so), as the reference never uses them. `--sae_checkpoint` and `--result_dir` have no default (the reference's are
the authors' paths) and the model defaults to hf-hub:redlessone/PanDerm2, the one every reference script passes.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, report_ignored, run_door, setup_logging  # noqa: E402

# Parsed by the reference and never read there either.
IGNORED = {
    "data_dir": "unused by the reference too (images and labels are not needed to edit codes)",
    "project_root": "unused by the reference too (it only located the reference's open_clip sources)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--top_n", type=int, default=5, help="number of latents intervened on")
    p.add_argument("--concept", default="hair", help="concept text, e.g. hair, 'purple ink', 'calibration scale'")
    p.add_argument("--method", default="matching", choices=["matching", "topk"],
                   help="matching: latents matched to concept texts; topk: the classifier's top-N latents")
    p.add_argument("--split", default="test", choices=["train", "test"], help="folder under --result_dir to edit")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (text encoder for matching)")
    p.add_argument("--data_dir", default=None, help="ignored (unused by the reference too)")
    p.add_argument("--result_dir", default=None, help="folder holding before-intervention/ and <split>/")
    p.add_argument("--project_root", default=None, help="ignored (unused by the reference too)")
    p.add_argument("--sae_checkpoint", required=True, help="autoencoder.pth or a panderm SAE folder")
    p.add_argument("--clip_model_name", "--model", dest="model", default="hf-hub:redlessone/PanDerm2",
                   help="model whose text encoder embeds --concept")
    p.add_argument("--clip_checkpoint", "--checkpoint", dest="checkpoint", default=None,
                   help="weights file for the model (a 'state_dict' dict and 'module.' prefixes are accepted)")
    p.add_argument("--importance_file", default=os.path.join("before-intervention", "classifier_weights.npy"),
                   help="classifier weights, relative to --result_dir")
    p.add_argument("--activation_file", default="learned_activation.npy",
                   help="codes, relative to <result_dir>/<split>")
    p.add_argument("--output_file", default="learned_activation_after_intervention.npy",
                   help="edited codes, relative to <result_dir>/<split>")
    p.add_argument("--weights", default=None, help="classifier weights .npy (overrides --importance_file)")
    p.add_argument("--activations", default=None, help="codes to edit .npy (overrides --activation_file)")
    p.add_argument("--output", default=None, help="edited codes .npy (overrides --output_file)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    report_ignored(args, IGNORED)

    def run():
        from panderm.cli_support import resolve_device
        from panderm.errors import PandermError
        from panderm.tasks.concepts.run import intervene_codes

        def path(given, *parts):
            if given:
                return given
            if os.path.isabs(parts[-1]):  # os.path.join keeps an absolute last part, as in the reference
                return parts[-1]
            if not args.result_dir:
                raise PandermError("give --result_dir (or --weights, --activations and --output)")
            return os.path.join(args.result_dir, *parts)

        weights = path(args.weights, args.importance_file)
        codes = path(args.activations, args.split, args.activation_file)
        out = path(args.output, args.split, args.output_file)
        info = intervene_codes(args.sae_checkpoint, weights, codes, out, concept=args.concept, method=args.method,
                               top_n=args.top_n, model_id=args.model, checkpoint=args.checkpoint,
                               device=resolve_device(args.device, reference_cuda=True))
        if info["random_init"]:
            print("RANDOM WEIGHTS: the concept text was encoded by an untrained model")
        what = f"matched to {args.concept!r}" if args.method == "matching" else "with the largest |weight|"
        print(f"zeroed {len(info['latents'])} latents {what}: {info['latents']}")
        print(f"saved {out}")

    return run_door(run, "4_intervention_CBM.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
