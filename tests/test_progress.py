"""Progress (issue 18 item 8): a line per finished tenth when stderr is not a terminal, nothing with -q."""
import logging

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


def test_cli_quiet_flag_anywhere(ham_csv, tmp_path, caplog, capsys):
    """-q after the subcommand's flags silences the progress lines, not the result; -q with -v is a usage error.
    In this process through `main(argv)` (the CLI's process smoke tests are in test_cli_features)."""
    from panderm.cli import main

    def run(*extra, out):
        caplog.clear()
        rc = main(["linear-probe", "--csv", str(ham_csv), "--model", "demo", "--bootstrap", "0", "--seeds", "2",
                   "--no-cache", "--out", str(tmp_path / out), *extra])
        printed = capsys.readouterr()
        return rc, [r.getMessage() for r in caplog.records if r.name.startswith("panderm")], printed

    panderm_log = logging.getLogger("panderm")
    level = panderm_log.level
    try:
        rc, logged, printed = run(out="loud")
        assert rc == 0, printed.err
        assert "linear probe fits: 2/2 fit" in logged and any(m.startswith("encoding") for m in logged), logged
        rc, logged, printed = run("-q", out="quiet")
        assert rc == 0, printed.err
        assert not any("linear probe fits" in m or m.startswith("encoding") for m in logged), logged
        assert "wrote" in printed.out  # the result still prints
        with pytest.raises(SystemExit) as exit_:
            run("-q", "-v", out="both")
        assert exit_.value.code == 2 and "exclude each other" in capsys.readouterr().err
    finally:
        panderm_log.setLevel(level)
        prog.set_quiet(False)


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
