"""One result shape (issue 14 item 7): every evaluation task's run is a `report.TaskRun` (`to_json`, `rows`,
`write_files`) and `report.write_report` writes its results.json the same way for all of them."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from panderm.report import RANDOM_WEIGHTS, TaskRun, write_report

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@dataclass
class ToyRun:
    scores: list

    def to_json(self) -> dict:
        return {"mean": float(np.mean(self.scores)), "n": len(self.scores)}

    def rows(self) -> list[dict]:
        return [{"n": len(self.scores)}]

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        (out_dir / "scores.txt").write_text(" ".join(map(str, self.scores)))
        return self.to_json()


def test_write_report_writes_the_files_then_body_warning_and_provenance_last(tmp_path):
    assert isinstance(ToyRun([1, 2]), TaskRun)
    out = tmp_path / "run"
    out.mkdir()
    summary = write_report(ToyRun([1, 2, 6]), out, {"model": "toy"}, random_init=True)
    assert (out / "scores.txt").read_text() == "1 2 6"
    text = (out / "results.json").read_text()
    assert json.loads(text) == summary == {"mean": 3.0, "n": 3, "warning": RANDOM_WEIGHTS, "provenance": {"model": "toy"}}
    assert list(json.loads(text)) == ["mean", "n", "warning", "provenance"]
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "scores.txt"]  # no temp file left
    trained = write_report(ToyRun([4]), out, {"model": "toy"})
    assert "warning" not in trained and json.loads((out / "results.json").read_text()) == trained


@pytest.fixture(scope="module")
def demo_encoder():
    from panderm.models import load_encoder

    return load_encoder("demo", device="cpu")


def _zeroshot(encoder):
    from panderm.data.benchmarks import get_benchmark
    from panderm.tasks import zeroshot

    ds = zeroshot.build_dataset(SAMPLE / "zero-shot-classification" / "ph2-2-zero-shot-test.csv",
                                benchmark=get_benchmark("PH2-2"), root=SAMPLE.parent.parent)
    return zeroshot.run(encoder, [ds], n_bootstrap=20, cache=False)


def _retrieval(encoder):
    from panderm.tasks.retrieval import pipeline
    from panderm.tasks.retrieval.data import load_pairs

    return pipeline.evaluate(encoder, load_pairs(SAMPLE / "ph2" / "ph2.csv", "image_path", "concept_text"),
                             n_bootstrap=20, cache=False)


def _linear_probe(encoder):
    from panderm.tasks.linear_probe import pipeline

    splits = pipeline.load_splits(SAMPLE / "pad_ufes20_sample" / "pad_ufes20_sample.csv")
    return pipeline.run(encoder, splits, "embed", False, percent_data=(1.0,), n_bootstrap=20,
                        extract_kw=dict(cache=False))


@pytest.mark.parametrize("make, files", [
    (_zeroshot, ["PH2-2/confusion_matrix.png", "PH2-2/predictions.csv"]),
    (_retrieval, ["examples.png", "ranks.csv"]),
    (_linear_probe, ["confusion_matrix_percent_1.0_seed0.png", "predictions/percent_1.0_seed0.csv"]),
])
def test_every_evaluation_task_returns_a_task_run(demo_encoder, tmp_path, make, files):
    run = make(demo_encoder)
    assert isinstance(run, TaskRun)
    body = run.to_json()
    json.dumps(body, default=float)  # plain data before any file is written (numpy scalars become floats)
    assert run.rows() and all(isinstance(r, dict) for r in run.rows())
    summary = write_report(run, tmp_path, {"model": "demo"}, random_init=demo_encoder.random_init)
    for name in files:
        assert (tmp_path / name).is_file(), name
    written = json.loads((tmp_path / "results.json").read_text())
    assert list(written)[-2:] == ["warning", "provenance"] and written["warning"] == RANDOM_WEIGHTS
    # the body is to_json's, analyses (calibration) added by write_files where the task has them
    for key, value in json.loads(json.dumps(body, default=float)).items():
        if isinstance(value, dict) and key == "datasets":
            for name, entry in value.items():
                assert {k: written[key][name][k] for k in entry} == entry
        elif key == "runs":
            assert [{k: r[k] for k in e} for r, e in zip(written[key], value)] == value
        else:
            assert written[key] == value, key
    assert summary["provenance"] == {"model": "demo"}


def test_the_trainer_tasks_results_are_task_runs_too():
    from panderm.tasks.finetune import FinetuneRun
    from panderm.tasks.multimodal.report import MultimodalRun
    from panderm.tasks.segmentation.report import SegmentationRun

    for run in (FinetuneRun(None, {}), MultimodalRun(None, {}), SegmentationRun({"task": "segmentation"})):
        assert isinstance(run, TaskRun), type(run).__name__
    assert FinetuneRun(None, {}).filename == "results.json"
    assert FinetuneRun(None, {}, name="eval").filename == "results_eval.json"


def test_segment_records_an_untrained_backbone_in_results_json(tmp_path, capsys):
    """The random-weights warning lands in results.json for the trainer tasks too (segmentation used to print it
    and leave results.json silent); provenance last, the table printed from `rows()`."""
    import pandas as pd

    from panderm.cli import main
    from panderm.report import RANDOM_BACKBONE

    ph2 = pd.read_csv(SAMPLE / "ph2" / "ph2.csv")
    small = pd.concat([ph2[ph2["split"] == s].head(n) for s, n in (("train", 4), ("val", 2), ("test", 2))])
    for col in ("image_path", "mask_path"):
        small[col] = [str(SAMPLE / "ph2" / p) for p in small[col]]
    small.to_csv(tmp_path / "ph2_small.csv", index=False)
    out = tmp_path / "run"
    rc = main(["segment", "train", "--model", "demo", "--csv", str(tmp_path / "ph2_small.csv"), "--freeze-encoder",
               "--epochs", "1", "--batch-size", "4", "--head-channels", "8", "--bootstrap", "0",
               "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    res = json.loads((out / "results.json").read_text())
    assert list(res)[-2:] == ["warning", "provenance"] and res["warning"] == RANDOM_BACKBONE
    assert res["n_images"] == 2 and res["split"] == "test" and res["task"] == "segmentation"
    assert RANDOM_BACKBONE in printed.out
    jac = f"{res['metrics_at_model_size']['jaccard']['mean']:.4f}"
    assert any(line.startswith("test   model_size") and jac in line for line in printed.out.splitlines())
