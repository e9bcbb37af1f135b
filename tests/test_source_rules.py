"""Rules the source keeps (issue 14): checked by reading the files, so a regression fails here."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = [p for root in ("src", "linear_probe", "multimodal_finetune", "automated-concept-discovery", "segmentation",
                       "benchmarks") for p in (REPO / root).rglob("*.py")]


def test_the_scan_sees_the_code():
    names = {p.name for p in CODE}
    assert {"report.py", "features.py", "linear_eval.py", "main.py"} <= names and len(CODE) > 80


def test_no_library_module_switches_the_matplotlib_backend_or_uses_pyplot():
    """A notebook user's backend stays theirs: figures are bare Figure objects (panderm.report.subplots)."""
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "src" / "panderm").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", line)]
    assert not offenders, offenders


def test_comments_cite_files_of_this_repository():
    """The reference notes (ref-*.md) live outside the repository; comments cite docs/REFERENCE.md."""
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in CODE + list((REPO / "tests").rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"ref-[a-z0-9-]+\.md", line)]
    assert not offenders, offenders
