"""`panderm models`: a header, aligned columns, every alias plus `demo`, and --filter."""
from panderm.cli import main
from panderm.models.registry import ALIASES


def test_models_lists_every_alias_and_demo_under_a_header(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["alias", "loads", "notes"] and set(lines[1]) <= {"-", " "}
    names = [line.split()[0] for line in lines[2:]]
    assert names == [*ALIASES, "demo"]
    starts = {line.index(line.split()[1]) for line in lines[2:]}  # the second column starts at one offset
    assert len(starts) == 1


def test_models_filter(capsys):
    assert main(["models", "--filter", "DINOv2"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names and all("dinov2" in n.lower() for n in names)
    assert main(["models", "--filter", "no-such-model"]) == 0
    assert "no alias matches" in capsys.readouterr().out


def test_demo_sample_from_panderm_sample_or_a_message_that_says_what_to_set(tmp_path, monkeypatch):
    import pytest

    from panderm import demo
    from panderm.errors import DataError

    checkout = demo.sample_root()
    monkeypatch.setenv("PANDERM_SAMPLE", str(checkout))
    assert demo.sample_root() == checkout
    monkeypatch.setenv("PANDERM_SAMPLE", str(tmp_path))
    with pytest.raises(DataError, match="PANDERM_SAMPLE=.* does not hold the bundled sample"):
        demo.sample_root()
    monkeypatch.delenv("PANDERM_SAMPLE")
    monkeypatch.setattr(demo, "__file__", str(tmp_path / "site-packages" / "panderm" / "demo.py"))
    with pytest.raises(DataError, match="set PANDERM_SAMPLE=PATH/TO/panderm/data/sample"):
        demo.sample_root()
