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
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402

IGNORED = concept_doors.IGNORED_INTERVENTION


def build_parser():
    return concept_doors.build_intervention_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_intervention(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
