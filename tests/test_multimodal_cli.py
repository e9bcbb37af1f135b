"""`panderm multimodal train|test` as a user meets it: flag spellings in messages, `--dataset csv` columns,
the test step's report file, a checkpoint trained with other flags, console notes, flag aliases."""
import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from panderm.cli import add_model_args
from panderm.cli import main as panderm_main
from panderm.cli.multimodal import register
from panderm.compat.multimodal_door import run_reference

from test_multimodal_e2e import RUN_FILES, _pad_rows

TINY = ["--num-head", "2", "--meta-num-head", "2", "--att-depth", "1", "--meta-att-depth", "1", "--device", "cpu",
        "--batch-size", "8", "--workers", "0", "--bootstrap", "0", "--allow-absolute-paths"]


def _cli(argv, capsys):
    argv = [str(a) for a in argv]
    if "--model" not in argv:  # --model is required; these checks fail before the model would load
        argv = [argv[0], "--model", "demo", *argv[1:]]
    rc = panderm_main(["multimodal", *argv])
    return rc, capsys.readouterr()


def _door(mode, argv, capsys):
    rc = run_reference(mode, [str(a) for a in argv])
    return rc, capsys.readouterr()


@pytest.fixture(scope="module")
def pad_small(tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("pad") / "pad_small.csv"
    _pad_rows().to_csv(csv, index=False)
    return csv


@pytest.fixture(scope="module")
def own_csv(tmp_path_factory) -> Path:
    """A CSV of one's own: other column names, a metadata sentence column (real PAD photos)."""
    rows = _pad_rows()
    frame = pd.DataFrame({"clin": rows["image_path"], "dermo": rows["image_path"], "y": rows["label"],
                          "part": rows["split"].replace({"val": "valid"}),
                          "sentence": "a lesion on the " + rows["region"].str.lower()})
    csv = tmp_path_factory.mktemp("own") / "own.csv"
    frame.to_csv(csv, index=False)
    return csv


OWN_COLS = ["--clinical-col", "clin", "--derm-col", "dermo", "--label-col", "y", "--split-col", "part"]


@pytest.fixture(scope="module")
def trained_run(tiny_panderm2, own_csv, tmp_path_factory):
    """`panderm multimodal train --dataset csv` with chosen columns, metadata through the text encoder."""
    out = tmp_path_factory.mktemp("mm") / "run"
    common = ["--model", f"local-dir:{tiny_panderm2}", "--dataset", "csv", "--data-path", own_csv, *OWN_COLS,
              "--prompt-col", "sentence", "--class-num", 6, "--use-cli", "--use-derm", *TINY]
    rc = panderm_main(["multimodal", "train", *[str(a) for a in common], "--use-meta", "--use-text-encoder",
                       "--epochs", "1", "--output-dir", str(out)])
    assert rc == 0
    return out, common


# -- 1. messages name the flags of the command in use --------------------------------------

def test_messages_name_the_cli_spellings(pad_small, tmp_path, capsys):
    base = ["--dataset", "pad", "--data-path", pad_small, "--use-cli", *TINY]
    rc, cap = _cli(["train", *base, "--class-num", 3, "--output-dir", tmp_path / "a"], capsys)
    assert rc != 0 and "--class-num 3" in cap.err and "--class_num" not in cap.err, cap.err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    rc, cap = _cli(["train", *base, "--output-dir", busy], capsys)
    assert rc != 0 and "--output-dir" in cap.err and "--out " not in cap.err + " ", cap.err
    rc, cap = _cli(["test", *base, "--model", "demo", "--output-dir", tmp_path / "empty"], capsys)
    assert rc != 0 and "--model-path" in cap.err and "--model_path" not in cap.err, cap.err


def test_door_messages_keep_the_reference_spellings(pad_small, tmp_path, capsys):
    base = ["--dataset", "pad", "--data_dir", pad_small, "--use_cli", "--cuda", "false", "--allow_absolute_paths"]
    rc, cap = _door("train", [*base, "--class_num", 3, "--output_dir", tmp_path / "a"], capsys)
    assert rc != 0 and "--class_num 3" in cap.err, cap.err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    rc, cap = _door("train", [*base, "--output_dir", busy], capsys)
    assert rc != 0 and "--output_dir" in cap.err and "another --out " not in cap.err + " ", cap.err


# -- 2. --dataset csv: the columns are flags ------------------------------------------------

def test_csv_columns_are_flags_and_test_keeps_the_training_record(trained_run, capsys):
    out, common = trained_run
    # panderm multimodal adds the reliability diagram (docs/ANALYSIS.md) to the door's files
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "reliability.png"])
    trained = json.loads((out / "results.json").read_text())
    assert "best_epoch" in trained and trained["n_test"] == 8
    rc, cap = _cli(["test", *common, "--use-meta", "--use-text-encoder", "--output-dir", out], capsys)
    assert rc == 0, cap.err
    # 3. the test step writes its own report; the training run's results.json is untouched
    assert json.loads((out / "results.json").read_text()) == trained
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "reliability.png", "results_test.json"])
    tested = json.loads((out / "results_test.json").read_text())
    assert tested["metrics"] == pytest.approx(trained["metrics"], nan_ok=True)
    assert "results_test.json" in cap.out


def test_csv_column_flags_parse_in_both_spellings():
    p = argparse.ArgumentParser()
    register(p.add_subparsers(), add_model_args)
    args = p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x.csv", *OWN_COLS,
                         "--meta-cols", "a, b"])
    assert (args.clinical_col, args.derm_col, args.label_col, args.split_col, args.meta_cols) == \
        ("clin", "dermo", "y", "part", "a, b")
    defaults = p.parse_args(["multimodal", "test", "--model", "demo", "--data-path", "x.csv"])
    assert (defaults.clinical_col, defaults.derm_col, defaults.label_col, defaults.split_col) == \
        ("clinical_path", "derm_path", "label", "split")
    from panderm.compat.multimodal_door import reference_parser

    ref = reference_parser("train").parse_args(["--clinical_col", "c", "--derm_col", "none", "--label_col", "l",
                                                "--split_col", "s"])
    assert (ref.clinical_col, ref.derm_col, ref.label_col, ref.split_col) == ("c", "none", "l", "s")


def test_csv_with_one_image_column_and_wrong_column_names(own_csv, tmp_path, capsys):
    base = ["--model", "demo", "--dataset", "csv", "--data-path", own_csv, "--use-cli", *TINY]
    rc, cap = _cli(["train", *base, "--output-dir", tmp_path / "a"], capsys)  # default names: not in this CSV
    assert rc != 0 and "clinical_path" in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
    rc, cap = _cli(["train", *base, *OWN_COLS[:2], "--derm-col", "none", *OWN_COLS[4:], "--epochs", 1,
                    "--output-dir", tmp_path / "b"], capsys)
    assert rc == 0, cap.err
    pred = pd.read_csv(tmp_path / "b" / "detailed_predictions.csv")
    assert (pred["image_path"] == pred["image_path_2"]).all()  # the one image in both slots
    # 5. the demo model has random weights: the console says so, as the other commands do
    assert "RANDOM WEIGHTS: these numbers come from an untrained model" in cap.out
    rc, cap = _cli(["train", "--dataset", "pad", "--data-path", own_csv, "--clinical-col", "clin", "--use-cli",
                    *TINY, "--output-dir", tmp_path / "c"], capsys)
    assert rc != 0 and "--clinical-col applies to --dataset csv only" in cap.err, cap.err


def test_folder_without_meta_points_to_dataset_csv(tmp_path, capsys):
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "cases.csv").write_text("a,b\n1,2\n")
    for dataset in ("derm7pt", "milk11", "pad"):
        rc, cap = _cli(["train", "--dataset", dataset, "--data-path", folder, "--use-cli", *TINY,
                        "--output-dir", tmp_path / "o"], capsys)
        assert rc != 0 and ("no meta/ folder" in cap.err or "meta.csv" in cap.err), (dataset, cap.err)
        assert "--dataset csv --data-path FILE.csv" in cap.err, (dataset, cap.err)
    rc, cap = _door("train", ["--dataset", "derm7pt", "--data_dir", folder, "--use_cli", "--cuda", "false",
                              "--output_dir", tmp_path / "o"], capsys)
    assert rc != 0 and "--dataset csv --data_path FILE.csv" in cap.err, cap.err


# -- 4. test with other model flags than training -------------------------------------------

def test_test_with_other_flags_names_the_differing_settings(trained_run, tmp_path, capsys):
    out, common = trained_run
    rc, cap = _cli(["test", *common, "--output-dir", out], capsys)  # without --use-meta --use-text-encoder
    assert rc != 0 and len(cap.err.strip().splitlines()) == 1, cap.err
    err = cap.err
    assert "trained with a different model configuration" in err, err
    assert "trained with use_meta=True, use_text_encoder=True" in err, err
    assert "this run has use_meta=False, use_text_encoder=False" in err, err
    assert "--use-meta" in err and "--use_meta" not in err, err


def test_door_test_with_other_flags_names_the_differing_settings(trained_run, own_csv, tiny_panderm2, tmp_path,
                                                                  capsys):
    out, _ = trained_run
    rc, cap = _door("test", ["--model_name", f"local-dir:{tiny_panderm2}", "--dataset", "csv", "--data_dir",
                             own_csv, "--class_num", 6, "--clinical_col", "clin", "--derm_col", "dermo", "--label_col", "y",
                             "--split_col", "part", "--prompt_col", "sentence", "--use_cli", "--use_derm",
                             "--use_meta", "--use_text_encoder", "--num_head", 2, "--meta_num_head", 2,
                             "--att_depth", 1, "--meta_att_depth", 1, "--cuda", "false", "--bootstrap", 0,
                             "--allow_absolute_paths", "--fusion", "cross attention",
                             "--model_path", out / "best.pt", "--output_dir", tmp_path / "t"], capsys)
    assert rc != 0 and "fusion='concatenate'" in cap.err and "fusion='cross_attention'" in cap.err, cap.err
    assert "--fusion" in cap.err, cap.err


# -- 5. hidden_dim note only when given -------------------------------------------------------

def test_hidden_dim_note_only_when_given(pad_small, tmp_path, caplog, capsys):
    from panderm.compat import multimodal_door as cli

    seen = {}

    def fake_train(args):
        seen["hidden_dim"] = args.hidden_dim

    p = argparse.ArgumentParser()
    register(p.add_subparsers(), add_model_args)
    assert p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x"]).hidden_dim is None
    assert cli.reference_parser("train").parse_args([]).hidden_dim is None
    base = ["--model", "demo", "--dataset", "pad", "--data-path", pad_small, "--use-cli", *TINY, "--epochs", 1]
    with caplog.at_level(logging.INFO, logger="panderm.cli.multimodal"):
        rc, cap = _cli(["train", *base, "--output-dir", tmp_path / "a"], capsys)
        assert rc == 0, cap.err
        assert "ignored" not in caplog.text
        caplog.clear()
        rc, cap = _cli(["train", *base, "--hidden-dim", "7", "--output-dir", tmp_path / "b"], capsys)
        assert rc == 0, cap.err
        assert "hidden_dim 7 ignored" in caplog.text


# -- 6. flag aliases shared with the rest of panderm ------------------------------------------

def test_out_and_weighted_sampler_aliases():
    p = argparse.ArgumentParser()
    register(p.add_subparsers(), add_model_args)
    args = p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x", "--out", "o",
                         "--weighted-sampler"])
    assert args.output_dir == "o" and args.weight_sampler is True
    args = p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x", "--output-dir", "o2",
                         "--weight-sampler"])
    assert args.output_dir == "o2" and args.weight_sampler is True
    assert p.parse_args(["multimodal", "test", "--model", "demo", "--data-path", "x", "--out", "o"]).output_dir == "o"


@pytest.mark.parametrize("changes, param", [
    ({"num_classes": 1}, "class_num"), ({"att_depth": 0}, "att_depth"), ({"meta_num_head": 0}, "meta_num_head"),
    ({"use_cli": False, "use_derm": False}, "modality")])
def test_model_settings_name_the_setting_and_each_dialect_its_flag(changes, param):
    """ModelConfig names the setting (`param`); panderm multimodal and the reference doors render their flags."""
    import dataclasses

    from panderm.cli import build_parser, command_flags
    from panderm.cli.doors import door_flags
    from panderm.cli.multimodal import FLAGS as CLI_FLAGS
    from panderm.compat.multimodal_door import FLAGS as DOOR_FLAGS
    from panderm.compat.multimodal_door import reference_parser
    from panderm.errors import PandermError
    from panderm.tasks.multimodal.model import FusionConfig

    cfg = dataclasses.replace(FusionConfig(num_classes=3), **changes)
    with pytest.raises(PandermError) as err:
        cfg.check()
    assert err.value.param == param and "--" not in str(err.value)
    cli_map, door_map = command_flags("multimodal", "train"), door_flags(reference_parser("train"), DOOR_FLAGS)
    cli, door = err.value.render(cli_map), err.value.render(door_map)
    assert cli.endswith(f"(set it with {cli_map[param]})") and door.endswith(f"(set it with {door_map[param]})")
    if param != "modality":  # a setting of its own: each dialect's spelling of it
        assert (cli_map[param], door_map[param]) == ("--" + param.replace("_", "-"), "--" + param)
    # every flag the two maps name is a flag of its parser
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    train = next(a for a in sub["multimodal"]._actions if a.__class__.__name__ == "_SubParsersAction").choices["train"]
    cli_opts = {o for a in train._actions for o in a.option_strings}
    door_opts = {o for a in reference_parser("train")._actions for o in a.option_strings}
    assert {w for v in CLI_FLAGS.values() for w in v.split() if w.startswith("--")} <= cli_opts
    assert {w for v in DOOR_FLAGS.values() for w in v.split() if w.startswith("--")} <= door_opts


@pytest.mark.parametrize("changes, param", [
    ({"lr": 0.0}, "learning_rate"), ({"accum_freq": 0}, "accum_freq"), ({"monitor": "bleu"}, "monitor"),
    ({"drop_path": 1.0}, "drop_path")])
def test_training_settings_name_the_setting_and_each_dialect_its_flag(changes, param):
    import dataclasses

    from panderm.cli import command_flags
    from panderm.cli.doors import door_flags
    from panderm.compat import multimodal_door
    from panderm.errors import PandermError
    from panderm.tasks.multimodal.train import TrainConfig

    with pytest.raises(PandermError) as err:
        dataclasses.replace(TrainConfig(), **changes).check()
    assert err.value.param == param and "--" not in str(err.value)
    cli_map = command_flags("multimodal", "train")
    door_map = door_flags(multimodal_door.reference_parser("train"), multimodal_door.FLAGS)
    assert err.value.render(cli_map).endswith(f"(set it with --{param.replace('_', '-')})")
    assert err.value.render(door_map).endswith(f"(set it with --{param})")
