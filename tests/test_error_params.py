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
    from panderm.cli import FLAGS as PANDERM
    from panderm.compat.export_door import FLAGS as EXPORT
    from panderm.data.images import image_pixel_limit

    with pytest.raises(PandermError) as err:
        with image_pixel_limit(-1):
            pass
    assert str(err.value) == "the pixel limit must be >= 0 (0: no limit), got -1"
    assert err.value.render(PANDERM).endswith("(set it with --max-image-pixels)")
    assert err.value.render(EXPORT).endswith("(set it with --max_image_pixels)")


def test_a_custom_zero_shot_dataset_without_class_names(tmp_path):
    from panderm.cli import FLAGS as PANDERM
    from panderm.compat.main_door import FLAGS as MAIN
    from panderm.tasks.zeroshot import build_dataset

    csv = tmp_path / "c.csv"
    csv.write_text("image_path,label\na.png,0\n")
    with pytest.raises(PandermError) as err:
        build_dataset(csv, root=tmp_path)
    assert str(err.value) == f"{csv}: a custom dataset needs its class names" and err.value.param == "classnames"
    assert err.value.render(PANDERM).endswith("(set it with --classnames)")
    assert err.value.render(MAIN).endswith("(set it with --classnames)")
