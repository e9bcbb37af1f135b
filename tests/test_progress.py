"""Progress (issue 18 item 8): a line per finished tenth when stderr is not a terminal, nothing with -q."""
import logging
import subprocess
import sys

import pytest

from panderm import progress as prog


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="panderm.progress")
    prog.set_quiet(False)
    yield lambda: [r.getMessage() for r in caplog.records if r.name == "panderm.progress"]
    prog.set_quiet(False)


def test_lines_per_tenth_and_one_at_the_end(lines):
    bar = prog.progress(100, "fits", "fit")
    for _ in range(100):
        bar.update()
    bar.close()
    assert lines() == [f"fits: {k}/100 fit" for k in range(10, 101, 10)]


def test_short_loops_report_every_unit_and_a_break_reports_where_it_stopped(lines):
    assert list(prog.track(range(3), "epochs", unit="epoch")) == [0, 1, 2]
    assert lines() == ["epochs: 1/3 epoch", "epochs: 2/3 epoch", "epochs: 3/3 epoch"]
    for i in prog.track(range(25), "steps", unit="batch"):
        if i == 7:
            break
    assert lines()[3:] == ["steps: 2/25 batch", "steps: 4/25 batch", "steps: 6/25 batch", "steps: 7/25 batch"]


def test_quiet_and_disabled_print_nothing(lines):
    prog.set_quiet(True)
    list(prog.track(range(50), "quiet"))
    prog.set_quiet(False)
    list(prog.track(range(50), "off", enabled=False))
    assert lines() == []


def test_cli_quiet_flag_anywhere(ham_csv, tmp_path):
    def run(*extra, out):
        return subprocess.run([sys.executable, "-m", "panderm", "linear-probe", "--csv", str(ham_csv), "--model",
                               "demo", "--bootstrap", "0", "--seeds", "2", "--no-cache", "--out", str(tmp_path / out), *extra],
                              capture_output=True, text=True)

    loud = run(out="loud")
    assert loud.returncode == 0, loud.stderr
    assert "linear probe fits: 2/2 fit" in loud.stderr and "encoding" in loud.stderr
    quiet = run("-q", out="quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "linear probe fits" not in quiet.stderr and "encoding" not in quiet.stderr
    assert "wrote" in quiet.stdout  # the result still prints
    both = run("-q", "-v", out="both")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_an_error_abandons_open_bars_without_a_late_line(lines):
    """Ctrl-C: run_door prints 'interrupted' last; the unwound loop's bar must not print after it."""
    from panderm.cli.doors import run_door

    def interrupted():
        batches = prog.track(range(20), "epoch", unit="batch")  # a name holds the loop open past the unwinding
        for i in batches:
            if i == 5:
                raise KeyboardInterrupt

    assert run_door(interrupted, "panderm") == 130
    import gc

    gc.collect()  # the interrupted generator is closed here at the latest
    assert lines() == ["epoch: 2/20 batch", "epoch: 4/20 batch"]
