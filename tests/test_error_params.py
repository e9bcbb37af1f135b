"""Library errors that name a setting (`param`): run folders, limits; each door names its own flags."""
import pytest

from panderm.errors import PandermError
from panderm.report import forget_claimed, prepare_run_dir


def test_a_folder_holding_a_run_is_refused_and_each_door_says_how_out(tmp_path):
    from panderm.cli import FLAGS as PANDERM
    from panderm.cli.multimodal import FLAGS as PANDERM_MULTIMODAL
    from panderm.compat.multimodal_door import FLAGS as MULTIMODAL

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "results.json").write_text("{}")
    with pytest.raises(PandermError) as err:
        prepare_run_dir(busy)
    assert str(err.value) == f"output folder {busy} already holds a run" and err.value.param == "run_dir"
    assert err.value.render(PANDERM) == f"output folder {busy} already holds a run (pass --overwrite or choose " \
                                        "another --out)"
    assert err.value.render(MULTIMODAL).endswith("(pass --overwrite or choose another --output_dir)")
    assert err.value.render(PANDERM_MULTIMODAL).endswith("(pass --overwrite or choose another --output-dir)")
    assert (busy / "results.json").read_text() == "{}"  # refused, untouched
    try:
        assert prepare_run_dir(busy, overwrite=True) == busy
    finally:
        forget_claimed()



def test_a_negative_pixel_limit_names_the_setting_and_each_door_its_flag():
    from panderm.cli import build_parser
    from panderm.cli.doors import parser_flags
    from panderm.compat.export_door import FLAGS as EXPORT
    from panderm.data.images import image_pixel_limit

    top = build_parser()
    features = parser_flags(top, top.parse_args(["features", "--model", "demo", "--csv", "c.csv", "--out", "f.npy"]))
    with pytest.raises(PandermError) as err:
        with image_pixel_limit(-1):
            pass
    assert str(err.value) == "the pixel limit must be >= 0 (0: no limit), got -1"
    assert err.value.render(features).endswith("(set it with --max-image-pixels)")
    assert err.value.render(EXPORT).endswith("(set it with --max_image_pixels)")


def test_a_custom_zero_shot_dataset_without_class_names(tmp_path):
    from panderm.cli import build_parser
    from panderm.cli.doors import parser_flags
    from panderm.compat.main_door import FLAGS as MAIN
    from panderm.tasks.zeroshot import build_dataset

    csv = tmp_path / "c.csv"
    csv.write_text("image_path,label\na.png,0\n")
    with pytest.raises(PandermError) as err:
        build_dataset(csv, root=tmp_path)
    assert str(err.value) == f"{csv}: a custom dataset needs its class names" and err.value.param == "classnames"
    top = build_parser()
    zeroshot = parser_flags(top, top.parse_args(["zeroshot", "--model", "demo", "--csv", str(csv)]))
    assert err.value.render(zeroshot).endswith("(set it with --classnames)")
    assert err.value.render(MAIN).endswith("(set it with --classnames)")
    retrieval = parser_flags(top, top.parse_args(["retrieval", "--model", "demo", "--csv", str(csv)]))
    assert err.value.render(retrieval) == str(err.value)  # no such flag there: nothing added


def test_parser_flags_spell_each_setting_as_the_door_does():
    from panderm.cli import build_parser
    from panderm.cli.doors import parser_flags
    from panderm.compat.linear_probe_door import build_parser as lp_parser
    from panderm.compat.main_door import build_parser as main_parser

    top = build_parser()
    finetune = parser_flags(top, top.parse_args(["finetune", "--model", "demo", "--csv", "x.csv"]))
    assert finetune["checkpoint"] == "--checkpoint" and finetune["lr"] == "--lr"
    assert finetune["disable_rel_pos_bias"] == "--disable-rel-pos-bias" and finetune["debug"] == "--debug"
    nested = parser_flags(top, top.parse_args(["concepts", "retrieve", "--model", "demo", "--text", "a", "--sae",
                                               "s.pth", "--codes", "c.npy", "--csv", "x.csv", "--out", "o"]))
    assert nested["truth_col"] == "--truth-col" and "lr" not in nested  # only the chosen subcommand's options
    assert parser_flags(top) == {"debug": "--debug", "verbose": "--verbose", "quiet": "--quiet",
                                 "version": "--version"}
    assert parser_flags(lp_parser(""))["batch_size"] == "--batch_size"
    assert parser_flags(main_parser())["group_by"] == "--group-by"


@pytest.mark.parametrize("drop, flags, tail", [
    (False, {"checkpoint": "--checkpoint"}, "(set it with --checkpoint)"),
    (True, {"checkpoint": "--checkpoint"}, "(drop --checkpoint)"),
    (True, {"checkpoint": "leave the weights out"}, "(leave the weights out)"),
    (False, {}, ""),  # a door without the setting adds nothing: the message names it in words
    (True, {"other": "--other"}, ""),
])
def test_render_says_give_or_drop(drop, flags, tail):
    assert PandermError("no", param="checkpoint", drop=drop).render(flags) == f"no {tail}".strip()


def test_a_nan_learning_rate_is_named_by_each_door():
    from dataclasses import dataclass

    from panderm.cli.multimodal import FLAGS as PANDERM_MULTIMODAL
    from panderm.compat.multimodal_door import FLAGS as MULTIMODAL
    from panderm.errors import require_finite

    @dataclass
    class Settings:
        lr: float = float("nan")
        epochs: int = 3

    with pytest.raises(PandermError) as err:
        require_finite(Settings(), {"lr": "learning_rate"})
    assert str(err.value) == "learning rate must be a finite number, got nan"
    assert err.value.render(MULTIMODAL).endswith("(set it with --learning_rate)")
    assert err.value.render(PANDERM_MULTIMODAL).endswith("(set it with --learning-rate)")
    with pytest.raises(PandermError) as err:
        require_finite(Settings())
    assert err.value.param == "lr" and str(err.value) == "lr must be a finite number, got nan"


def test_several_settings_are_named_together():
    err = PandermError("trained with use_meta=True", param=("use_meta", "meta_fusion_mode"))
    assert err.render({"use_meta": "--use-meta", "meta_fusion_mode": "--meta-fusion-mode"}) == \
        "trained with use_meta=True (check --use-meta, --meta-fusion-mode)"
    assert err.render({"use_meta": "--use_meta"}) == "trained with use_meta=True (check --use_meta)"
    assert err.render({}) == "trained with use_meta=True"
