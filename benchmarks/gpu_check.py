"""GPU check: correctness of every task on one device against CPU, extraction speed, and memory, in one run.

    python benchmarks/gpu_check.py                      # --device cuda, full sizes (under 8 minutes on a GPU)
    python benchmarks/gpu_check.py --device cuda:1 --out gpu-check-output
    python benchmarks/gpu_check.py --device cpu --quick # every code path on CPU in about a minute

Correctness (benchmarks/gpu_check_correctness.py): each task's smallest end-to-end run on the bundled sample on
the device, compared with the same run on CPU in float32, PASS/FAIL per check with the measured deviation and
its tolerance. Speed and memory (benchmarks/gpu_check_speed.py): model-only and end-to-end `extract_features`
images/s for a PanDerm-2-sized CAE ViT-L/16 and a ViT-B/16 (tiny towers with --quick and on CPU), bf16 and
fp16, with and without torch.compile, batch_size="auto"; loader wait vs model time; peak device memory.
Writes gpu_check.json and gpu_check.md (a block for docs/BENCHMARKS.md) into --out; the exit code is 1 when a
correctness check does not pass. Random weights everywhere: nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import gpu_check_correctness as correctness  # noqa: E402
import gpu_check_speed as speed  # noqa: E402

DEFAULT_BUDGET_S = 420  # the 8 minutes, less the start-up and the margin a shared machine needs


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is at the time: each run's log lines land in its own log file
    (the runs redirect sys.stderr) instead of in the handler's stream from the first run."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def device_info(device: torch.device) -> dict:
    info = {"requested": str(device), "type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": speed.cpu_count(), "python": platform.python_version(), "driver": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, total_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", driver=_driver_version(device))
    else:
        info["name"] = _cpu_name()
    return info


def _driver_version(device: torch.device) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                              f"--id={device.index or 0}"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- report
def _fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _mib(v) -> str:
    return "–" if v is None else f"{v / 2**20:.0f}"


def _worst(check: dict) -> str:
    if not check.get("measures"):
        return check.get("error", "")[:120]
    m = max(check["measures"], key=lambda m: m["deviation"] / m["tolerance"] if m["tolerance"] else
            (0.0 if m["deviation"] == 0 else float("inf")))
    return f"{m['what']}: {m['deviation']:.3g} (tol {m['tolerance']:g})"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")  # measure names hold |Δ|: escaped, or they would split the table cell


def correctness_table(checks: list[dict]) -> list[str]:
    lines = ["| check | device run (computes in) | reference | result | worst measure: deviation (tolerance) |",
             "|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['name']} | {c.get('device_run', '')} ({c.get('effective_precision', '')}) | "
                     f"{c.get('reference_run', 'cpu fp32')} | {c['status']} | {_cell(_worst(c))} |")
    return lines


def speed_table(rows: list[dict]) -> list[str]:
    lines = ["| model | precision | compile | auto batch | model-only img/s | e2e small img/s (× model-only) | "
             "e2e large img/s (× model-only) | loader wait % / model % (small, large) | bottleneck (small, large) | "
             "peak MiB (model-only, e2e large) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['precision']} | {'yes' if r['compile'] else 'no'} |"
        if r.get("status") != "ok":
            lines.append(f"{head} – | {r.get('status')}: {_cell(r.get('reason', ''))} | | | | | |")
            continue
        mo, s, g = r["model_only"], r["e2e"]["small"], r["e2e"]["large"]
        compile_note = f" (compile {r['compile_s']:.0f} s)" if r.get("compile_s") is not None else ""
        lines.append(f"{head} {r['batch_size_auto']} | {mo['img_s']:.1f}{compile_note} | "
                     f"{s['img_s']:.1f} ({s['ratio_to_model_only']:.2f}) | "
                     f"{g['img_s']:.1f} ({g['ratio_to_model_only']:.2f}) | "
                     f"{s['loader_wait_pct']:.0f} / {s['model_busy_pct']:.0f}, {g['loader_wait_pct']:.0f} / "
                     f"{g['model_busy_pct']:.0f} | {s['bottleneck']}, {g['bottleneck']} | "
                     f"{_mib(mo['peak_mem_bytes'])}, {_mib(g['peak_mem_bytes'])} |")
    return lines


def markdown(report: dict) -> str:
    d = report["device"]
    passed = sum(c["status"] == "PASS" for c in report["correctness"])
    where = (f"{d['name']} ({d.get('total_memory_gib')} GiB, compute capability {d.get('capability')}), "
             f"driver {d.get('driver') or 'unknown'}" if d["type"] == "cuda" else f"CPU only: {d['name']}")
    small = next((r["e2e"]["small"]["images"] for r in report["speed"] if r.get("status") == "ok"), None)
    large = next((r["e2e"]["large"]["images"] for r in report["speed"] if r.get("status") == "ok"), None)
    lines = [f"### GPU check — {d['name']} ({report['date']})", "",
             f"`{report['command']}` — {where}; torch {d['torch']}, CUDA {d['cuda'] or '–'}, cuDNN "
             f"{d['cudnn'] or '–'}, {d['cpu_count']} CPU cores; "
             f"{'quick sizes' if report['quick'] else 'full sizes'}; wall {report['wall_s']:.0f} s.", "",
             f"Correctness: {passed} / {len(report['correctness'])} checks pass (device run vs the same run on CPU "
             "in float32; tolerances in benchmarks/gpu_check_correctness.py).", "",
             *correctness_table(report["correctness"]), "",
             f"Speed: `extract_features` with batch_size=\"auto\", {d['cpu_count']} DataLoader workers, no cache; "
             f"small = {small} pre-resized JPEGs (short side = model input), large = {large} JPEGs of 1024 px "
             "(upscaled from the bundled images), decoded at the reduced DCT scale as `panderm features` does; "
             "model-only = the same forward on preprocessed images already on the device. Loader wait % / model % "
             "are shares of the extraction loop (model calls synchronised).", "",
             *speed_table(report["speed"]), "",
             "Models: " + "; ".join(f"`{m['model']}`: {m['description']} (built in {m['build_s']} s)"
                                    for m in report["models"]) + ". RANDOM WEIGHTS: speed and agreement only.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    p.add_argument("--quick", action="store_true", help="tiny towers and few images (always so on CPU)")
    p.add_argument("--out", default="gpu-check-output", help="folder for gpu_check.json / gpu_check.md and the runs")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"wall seconds after which no new speed row starts (default: {DEFAULT_BUDGET_S} on CUDA "
                        "without --quick, else none); the correctness checks always run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start, started = time.monotonic(), time.strftime("%Y-%m-%d %H:%M")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = torch.device("meta")  # not a device name: refused below with the others
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: error: --device {args.device}: CUDA is not available here (use --device cpu)",
              file=sys.stderr)
        return 2
    if device.type not in ("cuda", "cpu"):
        print(f"gpu_check: error: --device {args.device}: use cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            print(f"gpu_check: error: --device {args.device}: this machine has {torch.cuda.device_count()} GPU(s)",
                  file=sys.stderr)
            return 2
        torch.cuda.set_device(device)  # every run, timer and memory counter then refers to the same GPU
    quick = args.quick or device.type == "cpu"
    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    # The demo model and any cache go under --out unless the caller chose a place: nothing stale is reused.
    os.environ.setdefault("PANDERM_CACHE", str(work / "cache"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=_CurrentStderr())
    budget = args.budget_s if args.budget_s is not None else (DEFAULT_BUDGET_S if device.type == "cuda" and not quick
                                                              else None)
    info = device_info(device)
    print(f"gpu_check: {info['name']} ({device}), torch {info['torch']}, {'quick' if quick else 'full'} sizes; "
          f"run logs under {work / 'logs'}", flush=True)

    print("correctness (device run vs the same run on CPU):", flush=True)
    workers = 2 if device.type == "cuda" else 0  # the same count in both runs; 0 keeps the CPU check fast
    cctx = correctness.Ctx(device=device, quick=quick, work=work, logs=work / "logs", workers=workers)
    checks = correctness.run_all(cctx, progress=lambda s: print(s, flush=True))

    print("speed and memory:", flush=True)
    sctx = speed.SpeedCtx(device=device, quick=quick, work=work,
                          deadline=None if budget is None else start + budget, compile_all=not quick)
    rows, models = speed.run_all(sctx, progress=lambda s: print(s, flush=True))

    report = {"schema": 1, "date": started, "quick": quick, "command": "python benchmarks/gpu_check.py "
              + " ".join(a for a in (f"--device {args.device}", "--quick" if args.quick else "") if a),
              "device": info, "correctness_passed": all(c["status"] == "PASS" for c in checks),
              "correctness": checks, "speed": rows, "models": models, "tolerances": {
                  "features": correctness.FEATURE_TOL, **correctness.TOL}}
    report["wall_s"] = round(time.monotonic() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    md = markdown(report)
    (out / "gpu_check.md").write_text(md, encoding="utf-8")
    print()
    print(md)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    if not report["correctness_passed"]:
        bad = [c["name"] for c in checks if c["status"] != "PASS"]
        print(f"gpu_check: {len(bad)} correctness check(s) did not pass: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
