"""panderm.tasks.registry: the one list of tasks the CLI, the demo and the API refer to (issue 14 item 7)."""
import json
import textwrap

import pytest

from panderm.cli import COMMANDS
from panderm.tasks.registry import DEMO_TASKS, TASKS, Task


def test_every_task_has_its_subcommand_and_module():
    commands = {name for name, _ in COMMANDS}
    for task in TASKS.values():
        assert task.command in commands, task
        module = task.load()
        if task.report_key:
            assert callable(module.demo), task
    assert DEMO_TASKS == ("zeroshot", "retrieval", "linear_probe")
    # the demo's results.json keys are the ones it has always written (analysis/runs.py reads them)
    assert [TASKS[n].report_key for n in DEMO_TASKS] == ["zeroshot", "retrieval_run", "linear_probe_run"]


def test_the_add_a_task_recipe(tmp_path, monkeypatch):
    """docs/ARCHITECTURE.md 'Add a task': a run object of the one shape (`report.TaskRun`) written by
    `report.write_report`, a module with `demo(encoder, sample_root, out_dir)`, and one TASKS entry."""
    from panderm.demo import run_demo, sample_root
    from panderm.models import load_encoder

    (tmp_path / "toy_task.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from panderm.report import write_report

        @dataclass
        class ToyRun:
            names: list
            dim: int

            def to_json(self):
                return {"n_csv": len(self.names)}

            def rows(self):
                return [{"csv": r, "dim": self.dim} for r in self.names]

            def write_files(self, out_dir, analysis=None):
                return self.to_json()

        def demo(encoder, sample_root, out_dir):
            run = ToyRun(sorted(p.name for p in (sample_root / "ph2").glob("*.csv")), encoder.embed_dim)
            write_report(run, out_dir / "toy", {"model": encoder.describe()}, encoder.random_init)
            return run.rows()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(TASKS, "toy", Task("toy", "toy", "toy_task", "a toy task", report_key="toy_rows"))
    report = run_demo("demo", tmp_path / "out", device="cpu", tasks=("toy",))
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    dim = load_encoder("demo", device="cpu").embed_dim
    expected = [{"csv": name, "dim": dim} for name in sorted(p.name for p in (sample_root() / "ph2").glob("*.csv"))]
    assert written["toy_rows"] == report["toy_rows"] == expected and len(expected) >= 2
    assert "features" not in written  # only the tasks asked for
    toy = json.loads((tmp_path / "out" / "toy" / "results.json").read_text())
    assert toy["n_csv"] == len(expected) and toy["provenance"]["model"] == load_encoder("demo").describe()


def test_an_unknown_task_is_a_key_error():
    with pytest.raises(KeyError):
        TASKS["no-such-task"]
