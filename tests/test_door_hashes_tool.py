"""benchmarks/door_hashes.py's comparison: what counts as changed, missing, new or volatile."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("door_hashes", REPO / "benchmarks" / "door_hashes.py")
door_hashes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(door_hashes)


def test_report_names_every_difference_and_skips_volatile_files(capsys):
    base = {"a.csv": "1", "b.json": "2", "gone.npy": "3", "log.jsonl": "4"}
    now = {"a.csv": "1", "b.json": "X", "log.jsonl": "other", "extra.png": "5", "out.log": "6"}
    rc = door_hashes._report(base, now, {"log.jsonl", "out.log"}, "base", "now")
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert lines == ["CHANGED b.json", "MISSING gone.npy", "NEW     extra.png",
                     "1/3 files byte-identical to base (now now)"]


def test_report_passes_when_only_volatile_files_differ(capsys):
    rc = door_hashes._report({"a": "1", "t": "2"}, {"a": "1", "t": "3"}, {"t"}, "b", "n")
    assert rc == 0 and capsys.readouterr().out.strip() == "1/1 files byte-identical to b (now n)"


def test_cpu_names_the_vector_extension_where_proc_cpuinfo_has_flags():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = door_hashes.cpu()
    assert name
    if " avx512f" in text:
        assert name.endswith("(avx512f)")
    elif " avx2" in text:
        assert name.endswith("(avx2)")
