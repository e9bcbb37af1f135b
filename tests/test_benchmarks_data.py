"""The zero-shot benchmarks and templates as package data (issue 14 item 8).

The class lists, templates and reference-door fields moved from Python source to
``src/panderm/data/zeroshot_*.json``; these tests pin them to their values before the move: a frozen digest
of each list (runs anywhere) and, where the git history is present, an exact comparison with the modules as
they were at the last commit before the move.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from panderm.data import benchmarks as B
from panderm.data import templates as T
from panderm.data.benchmarks import ACCURACY, Benchmark
from panderm.errors import DataError

REPO = Path(__file__).resolve().parents[1]
BEFORE_MOVE = "c78945716f5aa22a7de46098fac019edbad25d79"  # last commit with the lists in Python source

# (length, sha256[:16] of the JSON list) of every list, computed from the modules before the move.
FROZEN = {
    "HAM_CLASSNAMES": (7, "b9e47a93d1f413cc"),
    "PAD_CLASSNAMES": (6, "91314b629f84a1fb"),
    "SNU_134_CLASSNAMES": (134, "58936dbc748a3536"),
    "SD_128_CLASSNAMES": (128, "cfef5383811195b4"),
    "DAFFODIL_5_CLASSNAMES": (5, "cc06a2a52361169f"),
    "PH2_CLASSNAMES": (2, "1eaec108e110c53c"),
    "ISIC20_CLASSNAMES": (2, "1eaec108e110c53c"),
    "DERMNET_CLASSNAMES": (23, "4b76e13869cbee6f"),
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()[:16]


def _records(all_benchmarks) -> list:
    return [[b.name, b.flag, b.default_csv, b.folder, b.metric_mode, [list(p) for p in b.result_keys],
             b.readme_metric, list(b.aliases)] for b in all_benchmarks]


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_class_lists_equal_their_values_before_the_move(name):
    value = getattr(B, name)
    assert isinstance(value, tuple) and all(isinstance(c, str) for c in value)
    assert (len(value), _digest(list(value))) == FROZEN[name]


def test_templates_records_codes_and_order_equal_their_values_before_the_move():
    assert isinstance(T.SKIN_TEMPLATES, tuple)
    assert (len(T.SKIN_TEMPLATES), _digest(list(T.SKIN_TEMPLATES))) == (8, "74bd15a356d1ba67")
    assert _digest(_records(B._ALL)) == "b90497d4e3129933"
    assert hashlib.sha256(json.dumps(B._CODES, sort_keys=True).encode()).hexdigest()[:16] == "70ac094454039fd8"
    assert _digest(list(B.README_ORDER)) == "ec05bcfe2ef701d3"


def _old_module(name: str, relpath: str, tmp_path: Path):
    try:
        text = subprocess.run(["git", "show", f"{BEFORE_MOVE}:{relpath}"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here (e.g. an sdist): the frozen digests above cover this")
    path = tmp_path / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_every_value_equals_the_source_before_the_move(tmp_path):
    old_b = _old_module("_old_benchmarks", "src/panderm/data/benchmarks.py", tmp_path)
    old_t = _old_module("_old_templates", "src/panderm/data/templates.py", tmp_path)
    assert T.SKIN_TEMPLATES == old_t.SKIN_TEMPLATES
    for name in FROZEN:
        assert getattr(B, name) == getattr(old_b, name), name
    assert _records(B._ALL) == _records(old_b._ALL)
    assert [b.classnames for b in B._ALL] == [b.classnames for b in old_b._ALL]
    assert B._CODES == old_b._CODES and B.README_ORDER == old_b.README_ORDER
    assert B.ZERO_SHOT_DIR == old_b.ZERO_SHOT_DIR


def test_the_json_files_are_package_data():
    data = REPO / "src" / "panderm" / "data"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"data/*.json"' in pyproject
    for name in ("zeroshot_benchmarks.json", "zeroshot_templates.json"):
        json.loads((data / name).read_text(encoding="utf-8"))
    # The Python module holds no class list: it loads them.
    assert "inflammed cyst" not in (data / "benchmarks.py").read_text()


def test_a_benchmark_that_is_not_a_reference_one_needs_no_door_fields():
    toy = Benchmark(name="Toy-3", classnames=("a", "b", "c"), aliases=("toy",))
    assert not toy.is_reference and toy.num_classes == 3
    assert toy.metrics == () and toy.reference_keys == ()
    assert toy.reference_results({ACCURACY: 0.5}) == {}
    with pytest.raises(DataError, match="no default CSV"):
        toy.csv_path("/data")
    with pytest.raises(DataError, match="not in the README table"):
        B.readme_average({toy: {ACCURACY: 0.5}})
    assert B.get_benchmark(toy) is toy
    assert all(b.is_reference for b in B.BENCHMARKS.values())


def test_a_reference_benchmark_needs_every_door_field():
    with pytest.raises(ValueError, match="needs"):
        Benchmark(name="X", flag="x", classnames=("a", "b"))
    with pytest.raises(ValueError):
        Benchmark(name="X", classnames=("a",))  # one class is no classifier


def test_zero_shot_reports_a_plain_benchmark_like_a_custom_list(tmp_path):
    """A plain benchmark goes through the zero-shot dataset as a custom list would (headline, reference keys,
    per-sample folder), with its own name."""
    from PIL import Image

    from panderm.tasks.zeroshot import ZeroShotResult, build_dataset

    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    csv = tmp_path / "toy.csv"
    csv.write_text("image_path,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(4)))
    toy = Benchmark(name="Toy-2", classnames=("benign", "malignant"))
    ds = build_dataset(csv, benchmark=toy, root=tmp_path)
    assert ds.name == "Toy-2" and ds.classnames == toy.classnames
    assert ds.folder == "customized_dataset" and ds.headline == "auroc"
    result = ZeroShotResult(ds, probs=None, labels=None, metrics={"accuracy": 0.5, "weighted_f1": 0.4})
    assert result.reference_metrics() == {"zeroshot-customized_dataset-wf1": 0.4,
                                          "zeroshot-customized_dataset-acc": 0.5}
