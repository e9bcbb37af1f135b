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
    from panderm.cli.doors import door_flags, parser_flags
    from panderm.compat import main_door
    from panderm.tasks.zeroshot import build_dataset

    csv = tmp_path / "c.csv"
    csv.write_text("image_path,label\na.png,0\n")
    with pytest.raises(PandermError) as err:
        build_dataset(csv, root=tmp_path)
    assert str(err.value) == f"{csv}: a custom dataset needs its class names" and err.value.param == "classnames"
    top = build_parser()
    zeroshot = parser_flags(top, top.parse_args(["zeroshot", "--model", "demo", "--csv", str(csv)]))
    assert err.value.render(zeroshot).endswith("(set it with --classnames)")
    assert err.value.render(door_flags(main_door.build_parser(), main_door.FLAGS)).endswith("(set it with --classnames)")
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

    from panderm.cli import command_flags
    from panderm.cli.doors import door_flags
    from panderm.compat import multimodal_door
    from panderm.errors import require_finite

    PANDERM_MULTIMODAL = command_flags("multimodal", "train")
    MULTIMODAL = door_flags(multimodal_door.reference_parser("train"), multimodal_door.FLAGS)

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


def _door_maps():
    """(name, FLAGS, the parsers that use it) for `panderm` and every reference door."""
    import argparse

    from panderm import cli
    from panderm.compat import (concept_doors, export_door, linear_probe_door, main_door, multimodal_door,
                                segmentation_door)

    def leaves(parser):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [parser] if not subs else [leaf for p in subs[0].choices.values() for leaf in leaves(p)]

    panderm = leaves(cli.build_parser())
    yield "panderm", cli.FLAGS, panderm
    shared: dict[int, tuple] = {}  # a subcommand group (concepts, segment, multimodal) shares one map
    for leaf in panderm:
        if leaf.get_default("door_flags"):
            shared.setdefault(id(leaf.get_default("door_flags")), (leaf.prog, leaf.get_default("door_flags"), []))[2].append(leaf)
    yield from shared.values()
    yield "src/main.py", main_door.FLAGS, [main_door.build_parser()]
    yield "linear_eval.py", linear_probe_door.FLAGS, [linear_probe_door.build_parser("")]
    yield "export_visual_features.py", export_door.FLAGS, [export_door.build_parser("")]
    yield "multimodal_finetune", multimodal_door.FLAGS, [multimodal_door.reference_parser(m) for m in ("train", "test")]
    yield "segmentation/run.py", segmentation_door.FLAGS, [segmentation_door.build_parser("")]
    yield "automated-concept-discovery", concept_doors.FLAGS, [
        getattr(concept_doors, n)("") for n in dir(concept_doors) if n.startswith("build_") and n.endswith("_parser")]


def test_flags_maps_hold_only_what_the_parsers_cannot_say():
    """A door's FLAGS holds whole hints and spellings whose option has another destination; a param named like an
    option is spelled by the parser (`doors.parser_flags`), so the map cannot drift from the parser. Every flag a
    map sends the user to is an option of one of its parsers."""
    from panderm.cli.doors import parser_flags

    for name, flags, parsers in _door_maps():
        options = {o for p in parsers for a in p._actions for o in a.option_strings}
        for param, text in flags.items():
            named = [w.strip("(),'") for w in text.split() if w.startswith("--")]
            if named:  # the flag the hint sends the user to (later ones may be another command's)
                assert named[0] in options, (name, param, named[0])
            if text.startswith("--") and " " not in text:  # a bare spelling: only where the parser says another
                spelled = {parser_flags(p).get(param) for p in parsers}
                assert spelled != {text}, (name, param, "the parser already says " + text)
