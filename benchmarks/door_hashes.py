"""sha256 of every result file the reference doors write on the bundled sample (issue 14: "byte-identical").

Runs each door (src/main.py zero-shot and retrieval, src/export_visual_features.py, linear_probe/linear_eval.py,
multimodal_finetune/train.py + test.py, the concept doors, segmentation/run.py) with the demo model on CPU,
one thread, into WORK, then hashes every file it wrote. Text files are hashed after replacing WORK and the
repository path by placeholders, and the package versions a results file records (`"versions": {...}` in its
provenance) by one placeholder, so the hashes do not depend on where the run happened or on which release of
pandas or transformers the venv installed that day. A file whose bytes
differ between two runs of the same code (a time stamp, a duration) is listed as volatile and not compared.

The bytes of float results depend on the CPU's kernels as well as on the code: the same commit gives other
embeddings on an AVX-512 machine than on an AVX2 one. `--check` compares with a record made on a machine like
this one (the record names the CPU it was made on); `--against REV` needs no record: it runs the doors of REV
(a temporary git worktree) and of this working tree on this machine and compares the two.

    python benchmarks/door_hashes.py --record benchmarks/door_hashes.json   # twice-run, stable files recorded
    python benchmarks/door_hashes.py --check benchmarks/door_hashes.json    # exit 1 on any changed file
    python benchmarks/door_hashes.py --against c789457                      # REV vs the working tree, here

Run it from the repository root with the package importable (the project's venv).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
S = "data/sample"


_VERSIONS = re.compile(rb'"versions": \{[^{}]*\}')


def cpu() -> str:
    """The CPU model and its widest vector extension: what decides the float kernels torch and numpy pick."""
    model = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    isa = next((f for f in ("avx512f", "avx2", "avx") if f" {f}" in flags), "")
    return f"{model} ({isa})" if isa else model


def _door_commands(work: Path) -> list[tuple[str, list[str]]]:
    w = str(work)
    lp = f"{S}/pad_ufes20_sample/pad_ufes20_sample.csv"
    return [
        ("main.py zeroshot", ["src/main.py", "--zeroshot-eval1", f"{S}/zero-shot-classification/pad-zero-shot-test.csv",
                              "--csv-img-key", "image_path", "--csv-label-key", "label", "--model", "demo",
                              "--logs", f"{w}/zs", "--name", "run"]),
        ("main.py retrieval", ["src/main.py", "--val-data", f"{w}/pairs.csv", "--csv-img-key", "filename",
                               "--csv-caption-key", "caption", "--model", "demo", "--logs", f"{w}/ret",
                               "--name", "run"]),
        ("export door", ["src/export_visual_features.py", "--model_name", "demo", "--csv_path", f"{S}/ph2/ph2.csv",
                         "--img_col", "image_path", "--data_root", f"{S}/ph2", "--output_dir", f"{w}/export"]),
        ("linear_eval.py", ["linear_probe/linear_eval.py", "--csv_path", lp, "--image_key", "image_path",
                            "--model", "demo", "--percent_data", "0.5", "--csv_filename", "results.csv",
                            "--output_dir", f"{w}/lp", "--root_path", f"{S}/pad_ufes20_sample",
                            "--model_preprocess"]),
        ("multimodal train", ["multimodal_finetune/train.py", *_mm_common(w), "--epochs", "2"]),
        ("multimodal test", ["multimodal_finetune/test.py", *_mm_common(w)]),
        ("train_sae.py", ["automated-concept-discovery/train_sae.py", "--save_dir", f"{w}/export",
                          "--expansion", "2", "--epochs", "3", "--batch_size", "64", "--quiet"]),
        ("0_extract", ["automated-concept-discovery/0_extract_sae_activations.py", "--checkpoint",
                       f"{w}/export/autoencoder.pth", "--embeddings", f"{w}/export/all_embeddings.npy",
                       "--output", f"{w}/codes/learned_activation.npy"]),
        ("1_train_clf", ["automated-concept-discovery/1_train_clf_binary-class.py", "--csv", f"{w}/ph2_mel.csv",
                         "--embeddings", f"{w}/codes/learned_activation.npy", "--output", f"{w}/cbm",
                         "--n_splits", "3"]),
        ("segmentation/run.py", ["segmentation/run.py", "--csv", f"{S}/ph2/ph2.csv", "--dataset", "PH2",
                                 "--model", "demo", "--allow_random_init", "--img_size", "64", "--smoke_test", "--device", "cpu",
                                 "--save_dir", f"{w}/seg"]),
    ]


def _mm_common(w: str) -> list[str]:
    return ["--model_name", "demo", "--dataset", "pad", "--data_dir", f"{S}/pad_ufes20_sample/pad_ufes20_sample.csv", "--class_num", "6",
            "--batch_size", "8", "--hidden_dim", "32", "--meta_dim", "32", "--use_cli", "--use_meta",
            "--use_text_encoder", "--output_dir", f"{w}/mm", "--cuda", "false"]


def _inputs(work: Path, repo: Path) -> None:
    """Door inputs made from the bundled sample: PH2 image/caption pairs and a PH2 melanoma CSV."""
    rows = list(csv.DictReader(open(repo / S / "ph2" / "ph2.csv", newline="")))
    with open(work / "pairs.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["filename", "caption"])
        for r in rows:
            out.writerow([os.path.relpath(repo / S / "ph2" / r["image_path"], repo), r["concept_text"]])
    with open(work / "ph2_mel.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ImageID", "diag", "melanoma"])
        for r in rows:
            out.writerow([r["image_id"], r["diag"], int(r["diag"] == "melanoma")])


def run_doors(work: Path, repo: Path = REPO) -> dict[str, str]:
    """Run every door of the checkout `repo` (its own src/ first on the path) into `work`; hash what they wrote."""
    work.mkdir(parents=True, exist_ok=True)
    _inputs(work, repo)
    given = {p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PANDERM_CACHE=str(work / "cache"),
               MPLBACKEND="Agg", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo / "src"), os.environ.get("PYTHONPATH")])))
    for label, cmd in _door_commands(work):
        proc = subprocess.run([sys.executable, *cmd], cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"ran {label}", flush=True)
    hashes = {}
    for p in sorted(work.rglob("*")):
        rel = p.relative_to(work).as_posix()
        if not p.is_file() or rel in given or rel.startswith("cache/"):
            continue
        data = p.read_bytes()
        for old, new in ((str(work), "<WORK>"), (str(repo), "<REPO>")):
            data = data.replace(old.encode(), new.encode())
        data = _VERSIONS.sub(b'"versions": "<VERSIONS>"', data)
        hashes[rel] = hashlib.sha256(data).hexdigest()
    return hashes


def _report(base: dict[str, str], now: dict[str, str], volatile: set[str], base_name: str, now_name: str) -> int:
    changed = [k for k, v in base.items() if k not in volatile and now.get(k) != v]
    new = sorted(set(now) - set(base) - volatile)
    for k in changed:
        print(f"CHANGED {k}" if k in now else f"MISSING {k}")
    for k in new:
        print(f"NEW     {k}")
    n = len([k for k in base if k not in volatile])
    print(f"{n - len(changed)}/{n} files byte-identical to {base_name} (now {now_name})")
    return 1 if changed or new else 0


def _head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, help="run twice, write the stable hashes here")
    mode.add_argument("--check", type=Path, help="run once, compare with this record")
    mode.add_argument("--against", metavar="REV", help="run REV's doors and this working tree's, here; compare")
    ap.add_argument("--volatile-from", type=Path, default=REPO / "benchmarks" / "door_hashes.json",
                    help="with --against: the record whose volatile files (time stamps) are not compared")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="door-hashes-"))
    try:
        if args.against:
            volatile = set(json.loads(args.volatile_from.read_text())["volatile"])  # read before minutes of work
            rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.against}^{{commit}}"], cwd=REPO,
                                 capture_output=True, text=True)
            if rev.returncode != 0:
                raise SystemExit(f"door_hashes: {args.against!r} is not a commit of {REPO}")
            base_repo = tmp / "base"
            subprocess.run(["git", "worktree", "add", "--detach", str(base_repo), rev.stdout.strip()], cwd=REPO,
                           check=True, capture_output=True)
            try:
                base = run_doors(tmp / "a", base_repo)
                base_name = _head(base_repo)[:7]
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(base_repo)], cwd=REPO,
                               capture_output=True)
            now = run_doors(tmp / "b")
            print(f"on {cpu()}")
            return _report(base, now, volatile, base_name, f"{_head(REPO)[:7]} + working tree")
        first = run_doors(tmp / "a")
        commit = _head(REPO)
        if args.record:
            second = run_doors(tmp / "b")
            stable = {k: v for k, v in first.items() if second.get(k) == v}
            volatile = sorted((set(first) | set(second)) - set(stable))
            record = {"commit": commit, "cpu": cpu(), "files": stable, "volatile": volatile}
            args.record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"{len(stable)} stable files recorded, {len(volatile)} volatile: {', '.join(volatile) or '-'}")
            return 0
        record = json.loads(args.check.read_text())
        if record.get("cpu", "an unrecorded CPU") != cpu():
            print(f"note: recorded on {record.get('cpu', 'an unrecorded CPU')}, checked on {cpu()}: float results "
                  f"may differ by the CPU alone (--against REV compares on one machine)")
        return _report(record["files"], first, set(record["volatile"]), record["commit"][:7], commit[:7])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
