#!/usr/bin/env python
"""Reference door: PanDerm-2 `4_intervention_CBM.py` (zero the SAE latents of a concept in the test codes).

Reads `<result_dir>/before-intervention/classifier_weights.npy` and `<result_dir>/<split>/learned_activation.npy`
(or `--weights` / `--activations`), picks `--top_n` latents — `matching`: the latents with a non-zero weight
whose dictionary direction is closest to the `--concept` text (encoded by `--model`); `topk`: the largest
|weight| — sets them to 0 and writes `<result_dir>/<split>/learned_activation_after_intervention.npy` (or
`--output`) with a `.json` listing the latents. `--data_dir` and `--project_root` are accepted and unused, as in
the reference; `--sae_checkpoint` and `--result_dir` have no default (the reference's are the authors' paths).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import run_door, setup_logging  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top_n", type=int, default=5)
    p.add_argument("--method", default="matching", choices=["matching", "topk"])
    p.add_argument("--split", default="test")
    p.add_argument("--concept", default=None, help="concept text, e.g. hair, 'purple ink', 'calibration scale'")
    p.add_argument("--sae_checkpoint", required=True, help="autoencoder.pth or a panderm SAE folder")
    p.add_argument("--result_dir", default=None, help="folder holding before-intervention/ and <split>/")
    p.add_argument("--weights", default=None, help="classifier weights .npy (overrides --result_dir)")
    p.add_argument("--activations", default=None, help="codes to edit .npy (overrides --result_dir)")
    p.add_argument("--output", default=None, help="edited codes .npy (overrides --result_dir)")
    p.add_argument("--model", default="hf-hub:redlessone/PanDerm2", help="model whose text encoder embeds --concept")
    p.add_argument("--checkpoint", default=None, help="weights file for --model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data_dir", default=None, help="unused (compatibility)")
    p.add_argument("--project_root", default=None, help="unused (compatibility)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    setup_logging()

    def run():
        from panderm.cli_support import resolve_device
        from panderm.errors import PandermError
        from panderm.tasks.concepts.run import intervene_codes

        def path(given, *parts):
            if given:
                return given
            if not args.result_dir:
                raise PandermError("give --result_dir (or --weights, --activations and --output)")
            return os.path.join(args.result_dir, *parts)

        weights = path(args.weights, "before-intervention", "classifier_weights.npy")
        codes = path(args.activations, args.split, "learned_activation.npy")
        out = path(args.output, args.split, "learned_activation_after_intervention.npy")
        info = intervene_codes(args.sae_checkpoint, weights, codes, out, concept=args.concept, method=args.method,
                               top_n=args.top_n, model_id=args.model, checkpoint=args.checkpoint,
                               device=resolve_device(args.device))
        if info["random_init"]:
            print("RANDOM WEIGHTS: the concept text was encoded by an untrained model")
        what = f"matched to {args.concept!r}" if args.method == "matching" else "with the largest |weight|"
        print(f"zeroed {len(info['latents'])} latents {what}: {info['latents']}")
        print(f"saved {out}")

    return run_door(run, "4_intervention_CBM.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
