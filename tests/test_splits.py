"""panderm.data.splits: one CSV with a split column → train / val / test tables."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.data.splits import Splits, load_splits
from panderm.errors import DataError
from panderm.tasks.linear_probe import pipeline as linear_probe_run


@pytest.fixture
def csv(tmp_path):
    rows = []
    for i, (split, label) in enumerate([("train", 0), ("train", 1), ("Validation", 1), ("test", 0), ("test", 1)]):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"image_path": f"{i}.png", "label": label, "split": split})
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_cuts_the_csv_by_split_with_val_aliases(csv):
    s = load_splits(csv)
    assert isinstance(s, Splits) and list(s.tables) == ["train", "val", "test"]
    assert [len(t) for t in s.tables.values()] == [2, 1, 2]
    assert s.n_classes == 2 and s.class_labels() == ["0", "1"] and s.classnames is None
    assert s.tables["val"].paths[0].name == "2.png"


def test_the_linear_probe_name_is_the_same_loader_and_each_door_names_its_column_flag(csv):
    from panderm.cli import FLAGS as PANDERM
    from panderm.compat.linear_probe_door import FLAGS as LP_DOOR

    assert linear_probe_run.ProbeSplits is Splits and linear_probe_run.load_splits is load_splits
    with pytest.raises(DataError) as err:
        load_splits(csv, image_col="img")
    assert "set it with" not in str(err.value) and err.value.param == "image_col"
    assert err.value.render({**PANDERM, "image_col": "--image-col"}).endswith("(set it with --image-col)")
    assert err.value.render(LP_DOOR).endswith("(set it with --image_key)")
    with pytest.raises(DataError) as err:
        load_splits(csv, split_col="fold")
    assert err.value.param == "split_col" and "'fold' not found (values train/val/test)" in str(err.value)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(split=f["split"].replace("test", "dev")), r"value\(s\) \['dev'\]"),
    (lambda f: f[f["split"] != "test"], "no rows with split == 'test'"),
    (lambda f: f.drop(columns="split"), "column 'split' not found"),
    (lambda f: f.assign(label=0), "at least two classes"),
])
def test_bad_split_columns_are_one_line(csv, edit, message):
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(DataError, match=message):
        load_splits(csv)
