"""Multimodal dataset loaders, paired augmentation, BGR flag and class-balanced sampling."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from panderm.errors import DataError
from panderm.tasks.multimodal.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_CLASSES,
    MultimodalDataset,
    AugParams,
    PairedTransform,
    apply_aug,
    sample_aug_params,
    class_balanced_weights,
    load_derm7pt,
    load_milk11,
    load_multimodal,
    load_multimodal_csv,
    load_pad_ufes20,
    make_datasets,
    weighted_sampler,
)
from panderm.tasks.multimodal.prompts import pad_prompt

NO_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _image(path: Path, seed: int, size=(48, 40)) -> Path:
    """A small image with structure in every channel (so crops, flips and channel order show)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 3, 0] = 255  # a red band on the left: not symmetric under flips
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def pad_csv(sample_dir) -> Path:
    return sample_dir / "pad_ufes20_sample" / "pad_ufes20_sample.csv"


@pytest.fixture(scope="module")
def pad_table(pad_csv):
    return load_pad_ufes20(pad_csv)


# -- PAD-UFES-20 on the bundled real sample ----------------------------------------------

def test_pad_loader_on_real_sample(pad_table, pad_csv):
    raw = pd.read_csv(pad_csv)
    t = pad_table
    assert len(t) == len(raw) == 195 and t.num_classes == 6 and t.classnames == PAD_CLASSES
    assert t.split_counts() == {"train": 114, "val": 44, "test": 37}
    # the clinical image fills both slots, resolved against the CSV's folder
    assert (t.frame["clinical_path"] == t.frame["derm_path"]).all()
    expected_paths = [str((pad_csv.parent / p).absolute()) for p in raw["image_path"]]
    assert t.frame["clinical_path"].tolist() == expected_paths
    # labels: target 0..5 in the order ACK, BCC, MEL, NEV, SCC, SEK
    assert t.labels.tolist() == [PAD_CLASSES.index(code) for code in raw["diagnostic"]]
    assert t.prompts[raw.index[raw["img_id"] == "PAT_122_185_957.png"][0]] == (
        "This is a 79-year-old elderly female patient with a 14.0mm, elevated, itchy lesion on the neck "
        "and Fitzpatrick skin type 1.")
    assert t.prompts == [pad_prompt(raw.iloc[i]) for i in range(len(raw))]
    assert t.meta_columns[:3] == ("smoke", "drink", "age") and len(t.meta_columns) == 17
    test = t.split("test")
    assert len(test) == 37 and set(test.frame["split"]) == {"test"}
    assert test.metadata(0)["region"] == raw[raw["split"] == "test"].iloc[0]["region"]


def test_pad_reference_layout_and_dispatch(tmp_path, pad_csv):
    # the reference's meta/{train,val,test}.csv with clinical_path + target
    raw = pd.read_csv(pad_csv)
    (tmp_path / "meta").mkdir()
    for split in ("train", "val", "test"):
        part = raw[raw["split"] == split].drop(columns=["split", "label"])
        part = part.assign(clinical_path=[str(pad_csv.parent / p) for p in part["image_path"]],
                           target=[PAD_CLASSES.index(c) for c in part["diagnostic"]]).drop(columns=["image_path"])
        part.to_csv(tmp_path / "meta" / f"{split}.csv", index=False)
    t = load_multimodal("PAD", tmp_path, check_images=False, allow_outside_root=True)
    assert t.name == "pad-ufes-20" and t.split_counts() == {"train": 114, "val": 44, "test": 37}
    by_split = pd.concat([raw[raw["split"] == s] for s in ("train", "val", "test")])
    assert t.labels.tolist() == by_split["label"].tolist()
    assert t.prompts == [pad_prompt(by_split.iloc[i]) for i in range(len(by_split))]


def test_pad_codes_and_bad_inputs(tmp_path, pad_csv):
    raw = pd.read_csv(pad_csv).iloc[[0, 50, 100, 150]].reset_index(drop=True)
    raw["image_path"] = [str(pad_csv.parent / p) for p in raw["image_path"]]

    def load(frame, **kw):
        frame.to_csv(tmp_path / "pad.csv", index=False)
        return load_pad_ufes20(tmp_path / "pad.csv", allow_outside_root=True, **kw)

    # diagnostic codes map to the same indices as the int labels
    assert load(raw, label_col="diagnostic").labels.tolist() == raw["label"].tolist()
    with pytest.raises(DataError, match=r"pad\.csv: column 'label' has label\(s\) outside 0\.\.5 in row\(s\) 3"):
        load(raw.assign(label=[0, 6, 1, 2]))
    with pytest.raises(DataError, match=r"pad\.csv: column 'fitspatrick' not found"):
        load(raw.drop(columns=["fitspatrick"]))
    with pytest.raises(DataError, match=r"1 of 4 image\(s\) .*missing.*nowhere\.jpg"):
        load(raw.assign(image_path=[*raw["image_path"][:3], str(tmp_path / "nowhere.jpg")]))
    with pytest.raises(DataError, match=r"the 'val' split has no rows"):
        load(raw.assign(split="train")).split("val")


def test_pad_dataset_items(pad_table):
    train = MultimodalDataset(pad_table.split("train"), train=True, meta="text")
    torch.manual_seed(0)
    clinical, derm, meta, label, index = train[3]
    assert clinical.shape == derm.shape == (3, 224, 224) and clinical.dtype == torch.float32
    assert torch.equal(clinical, derm)  # one image, one shared draw: identical, as in the reference
    assert meta == pad_table.split("train").prompts[3]
    assert label.dtype == torch.long and label.ndim == 0 and index == 3
    loader = torch.utils.data.DataLoader(train, batch_size=4, sampler=weighted_sampler(train))
    batch = next(iter(loader))
    assert batch[0].shape == (4, 3, 224, 224) and len(batch[2]) == 4 and isinstance(batch[2][0], str)


def test_pad_one_hot_vocab_from_train(pad_table):
    sets = make_datasets(pad_table, meta="onehot", image_size=32, resize_to=40)
    vocab = sets["train"].vocab
    assert sets["val"].vocab is vocab and sets["test"].vocab is vocab
    x = sets["test"][0][2]
    assert x.dtype == torch.float32 and x.shape == (vocab.dim,)
    # val without the train vocabulary would silently learn its own: refused
    with pytest.raises(DataError, match="vocab=train_dataset.vocab"):
        MultimodalDataset(pad_table.split("val"), train=False, meta="onehot")
    assert sets["val"].transform.train is False and sets["train"].transform.train is True


# -- Derm7pt (a small release built here: the real one is not bundled) ---------------------

DERM7PT_DIAGNOSES = ["basal cell carcinoma", "clark nevus", "melanoma (in situ)", "lentigo",
                     "seborrheic keratosis", "reed or spitz nevus", "melanoma metastasis", "vascular lesion"]


def _derm7pt_release(root: Path, indexes=None, diagnoses=None) -> Path:
    diagnoses = diagnoses or DERM7PT_DIAGNOSES
    rows = []
    for i, diag in enumerate(diagnoses):
        rows.append({"case_num": i + 1, "diagnosis": diag, "elevation": ["flat", "palpable", "nodular"][i % 3],
                     "location": ["back", "head neck", "genital areas", "lower limbs"][i % 4],
                     "sex": ["female", "male"][i % 2], "clinic": f"A/c{i}.png", "derm": f"A/d{i}.png"})
        _image(root / "images" / "A" / f"c{i}.png", i)
        _image(root / "images" / "A" / f"d{i}.png", 100 + i)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "meta" / "meta.csv", index=False)
    indexes = indexes or {"train": [0, 1, 2, 3], "valid": [5, 4], "test": [6, 7]}
    for split, idx in indexes.items():
        pd.DataFrame({"indexes": idx}).to_csv(root / "meta" / f"{split}_indexes.csv", index=False)
    return root


def test_derm7pt_loader(tmp_path):
    t = load_derm7pt(_derm7pt_release(tmp_path))
    assert t.num_classes == 5 and t.classnames == ("BCC", "NEV", "MEL", "MISC", "SK")
    assert t.frame["split"].tolist() == ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    # BCC 0, NEV 1, MEL 2, MISC 3, SK 4 - in index-file order (valid lists 5 before 4)
    assert t.labels.tolist() == [0, 1, 2, 3, 1, 4, 2, 3]
    assert t.frame["clinical_path"][4].endswith("images/A/c5.png")
    assert t.frame["derm_path"][4].endswith("images/A/d5.png")
    assert t.prompts[0] == "This is a female flat lesion on back."
    assert t.prompts[1] == "This is a male palpable lesion on head and neck."
    assert t.prompts[2] == "This is a female nodular lesion on genital area."
    x = make_datasets(t, meta="onehot", image_size=32, resize_to=40)["train"][0][2]
    assert x.shape == (3 + 2 + 4,)  # elevation, sex, location categories seen in train


@pytest.mark.parametrize("indexes, message", [
    ({"train": [0, 1, 2], "valid": [3, 9], "test": [4]},
     r"valid_indexes\.csv: column 'indexes' points outside .*meta\.csv \(rows 0\.\.7\) in row\(s\) 3 \(e\.g\. 9\)"),
    ({"train": [0, 1, 2], "valid": [3, 2], "test": [4]},
     r"valid_indexes\.csv: row 3 lists meta\.csv row 2, already in train_indexes\.csv"),
    ({"train": [0, 1.5], "valid": [2], "test": [3]},
     r"train_indexes\.csv: column 'indexes' holds non-integer value\(s\) in row\(s\) 3"),
    ({"train": [0, 1], "valid": [2], "test": []}, r"CSV has a header but no rows: .*test_indexes\.csv"),
    ({"train": [0, 1], "valid": [2]}, r"CSV not found: .*test_indexes\.csv"),
])
def test_derm7pt_bad_indexes(tmp_path, indexes, message):
    root = _derm7pt_release(tmp_path, indexes=indexes)
    with pytest.raises(DataError, match=message):
        load_derm7pt(root)


def test_derm7pt_unknown_diagnosis_and_missing_column(tmp_path):
    root = _derm7pt_release(tmp_path, diagnoses=DERM7PT_DIAGNOSES[:7] + ["psoriasis"])
    with pytest.raises(DataError, match=r"meta\.csv: column 'diagnosis' .*psoriasis.*row\(s\) 9"):
        load_derm7pt(root)
    meta = pd.read_csv(root / "meta" / "meta.csv").drop(columns=["location"])
    meta.to_csv(root / "meta" / "meta.csv", index=False)
    with pytest.raises(DataError, match=r"meta\.csv: column 'location' not found"):
        load_derm7pt(root)


# -- MILK-11 -----------------------------------------------------------------------------

def _milk(root: Path, targets=None) -> Path:
    (root / "meta").mkdir(parents=True, exist_ok=True)
    targets = targets or {"train": [0, 3, 10], "val": [1], "test": [2, 10]}
    n = 0
    for split, labels in targets.items():
        rows = []
        for t in labels:
            _image(root / "img" / f"c{n}.png", n)
            _image(root / "img" / f"d{n}.png", 50 + n)
            rows.append({"clinical_path": f"img/c{n}.png", "derm_path": f"img/d{n}.png", "age": 20 + 10 * n,
                         "sex": "mf"[n % 2], "site": "head_neck_face", "target": t})
            n += 1
        pd.DataFrame(rows).to_csv(root / "meta" / f"{split}.csv", index=False)
    return root


def test_milk_loader(tmp_path):
    t = load_milk11(_milk(tmp_path))
    assert t.num_classes == 11 and t.labels.tolist() == [0, 3, 10, 1, 2, 10]
    assert t.frame["split"].tolist() == ["train"] * 3 + ["val"] + ["test"] * 2
    assert t.frame["derm_path"][0] == str((tmp_path / "img" / "d0.png").absolute())
    assert t.prompts[0] == "This is a 20-year-old male with a lesion on the head, neck, and face."
    ds = MultimodalDataset(t.split("val"), train=False, meta="none", image_size=32)
    clinical, derm, meta, label, _ = ds[0]
    assert not torch.equal(clinical, derm) and meta.numel() == 0 and int(label) == 1


def test_milk_label_out_of_range_and_missing_column(tmp_path):
    root = _milk(tmp_path, {"train": [0, 11], "val": [1], "test": [2]})
    with pytest.raises(DataError, match=r"train\.csv: column 'target' has label\(s\) outside 0\.\.10 in row\(s\) 3"):
        load_milk11(root)
    pd.read_csv(root / "meta" / "val.csv").drop(columns=["derm_path"]).to_csv(root / "meta" / "val.csv", index=False)
    pd.DataFrame({"clinical_path": ["img/c0.png"], "derm_path": ["img/d0.png"], "age": [30], "sex": ["m"],
                  "site": ["trunk"], "target": [0]}).to_csv(root / "meta" / "train.csv", index=False)
    with pytest.raises(DataError, match=r"val\.csv: column 'derm_path' not found"):
        load_milk11(root)


# -- generic CSV -------------------------------------------------------------------------

def _generic(tmp_path: Path, **overrides) -> Path:
    frame = pd.DataFrame({
        "clinical_path": [f"c{i}.png" for i in range(4)], "derm_path": [f"d{i}.png" for i in range(4)],
        "label": [0, 1, 1, 0], "split": ["train", "train", "valid", "test"],
        "age": [30, 70, 8, 45], "sex": ["f", "m", "m", "f"], "site": ["trunk", "foot", "genital", "hand"],
    })
    for i in range(4):
        _image(tmp_path / f"c{i}.png", i)
        _image(tmp_path / f"d{i}.png", 10 + i)
    for k, v in overrides.items():
        frame[k] = v
    frame.to_csv(tmp_path / "cases.csv", index=False)
    return tmp_path / "cases.csv"


def test_generic_csv(tmp_path):
    csv = _generic(tmp_path)
    t = load_multimodal_csv(csv, meta_columns=["age", "sex", "site"], prompt="milk11", num_classes=2)
    assert t.frame["split"].tolist() == ["train", "train", "val", "test"]
    assert t.prompts[1] == "This is a 70-year-old male elderly patient with a lesion on the foot."
    assert t.prompts[2] == "This is a 8-year-old child with a lesion on the genital area."
    only_clinical = load_multimodal_csv(csv, derm_col=None, meta_columns=["age"])
    assert (only_clinical.frame["derm_path"] == only_clinical.frame["clinical_path"]).all()
    with pytest.raises(DataError, match="no metadata sentences"):
        MultimodalDataset(only_clinical, train=False)  # meta="text" but no prompt source


@pytest.mark.parametrize("kwargs, overrides, message", [
    ({"meta_columns": ["age", "bmi"]}, {}, r"cases\.csv: column 'bmi' not found"),
    ({"num_classes": 2}, {"label": [0, 1, 2, 0]}, r"column 'label' has label\(s\) outside 0\.\.1 in row\(s\) 4"),
    ({}, {"split": ["train", "train", "holdout", "test"]},
     r"column 'split' has split value\(s\) holdout in row\(s\) 4"),
    ({}, {"derm_path": ["d0.png", "d1.png", "gone.png", "d3.png"]}, r"1 of 8 image\(s\).*missing.*gone\.png"),
    ({}, {"label": [0, 1, None, 0]}, r"column 'label' is empty in row\(s\) 4"),
])
def test_generic_csv_errors(tmp_path, kwargs, overrides, message):
    with pytest.raises(DataError, match=message):
        load_multimodal_csv(_generic(tmp_path, **overrides), **kwargs)


def test_empty_split_is_an_error(tmp_path):
    t = load_multimodal_csv(_generic(tmp_path, split=["train", "train", "test", "test"]))
    expected = r"cases\.csv: the 'val' split has no rows; splits present: train \(2\), test \(2\)"
    with pytest.raises(DataError, match=expected):
        t.split("valid")
    with pytest.raises(DataError, match="the 'val' split has no rows"):
        make_datasets(t, meta="none")


# -- paired augmentation and the BGR flag ------------------------------------------------

def _pil(seed: int, size=(60, 50)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    arr[: size[1] // 4, :, 1] = 0  # asymmetric, so every flip and turn changes the picture
    return Image.fromarray(arr)


def test_paired_augmentation_gives_identical_crops():
    img = _pil(1)
    paired = PairedTransform(train=True, image_size=32, resize_to=48, paired=True)
    outputs = []
    for seed in range(8):
        a, b = paired(img, img.copy(), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a, b), seed
        outputs.append(a)
    # the augmentation is really random: different draws give different pictures
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    eval_out = PairedTransform(train=False, image_size=32)(img, img)[0]
    assert any(not torch.allclose(eval_out, o) for o in outputs)


def test_paired_augmentation_same_geometry_on_different_images():
    # derm = photographic negative of clinical: with the same crop/flip/turn, and no
    # normalisation, the outputs must still be exact negatives of each other.
    clinical = _pil(2)
    derm = Image.fromarray(255 - np.asarray(clinical))
    t = PairedTransform(train=True, image_size=32, resize_to=48, paired=True, **NO_NORM)
    for seed in range(6):
        a, b = t(clinical, derm, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(a + b, torch.ones_like(a), atol=2e-6, rtol=0)


def test_independent_augmentation_differs():
    img = _pil(3)
    t = PairedTransform(train=True, image_size=32, resize_to=48, paired=False)
    differ = [not torch.equal(*t(img, img, generator=torch.Generator().manual_seed(s))) for s in range(8)]
    assert any(differ)


def test_independent_flag_through_the_dataset(tmp_path):
    csv = _generic(tmp_path)
    frame = pd.read_csv(csv)
    frame["derm_path"] = frame["clinical_path"].str.replace("c", "copy_c", regex=False)
    for p in frame["clinical_path"]:
        Image.open(tmp_path / p).save(tmp_path / p.replace("c", "copy_c"))  # same pixels, another file
    frame.to_csv(csv, index=False)
    table = load_multimodal_csv(csv).split("train")
    same = MultimodalDataset(table, train=True, meta="none", image_size=32, resize_to=40)
    apart = MultimodalDataset(table, train=True, meta="none", image_size=32, resize_to=40, paired_augmentation=False)
    for seed in range(5):
        torch.manual_seed(seed)
        c, d, *_ = same[0]
        assert torch.equal(c, d)
    differ = []
    for seed in range(8):
        torch.manual_seed(seed)
        c, d, *_ = apart[0]
        differ.append(not torch.equal(c, d))
    assert any(differ)


def test_augmentation_draws_follow_the_reference_ranges():
    draws = [sample_aug_params(48, 48, generator=torch.Generator().manual_seed(s)) for s in range(400)]
    for p in draws:
        assert 0 <= p.top and p.top + p.height <= 48 and 0 <= p.left and p.left + p.width <= 48
        assert 0.08 * 48 * 48 * 0.9 <= p.height * p.width <= 48 * 48  # scale 0.08-1 (rounding slack)
        assert 3 / 4 * 0.85 <= p.width / p.height <= 4 / 3 * 1.15  # ratio 3/4-4/3 (rounding slack)
    areas = np.array([p.height * p.width for p in draws]) / 48 ** 2
    assert areas.min() < 0.2 and areas.max() > 0.9  # the crops do vary in size
    assert 0.4 < np.mean([p.vflip for p in draws]) < 0.6 and 0.4 < np.mean([p.hflip for p in draws]) < 0.6
    # RandomRotate90(p=0.5) draws 0..3 turns when it fires: no turn 5/8 of the time
    assert 0.55 < np.mean([p.rot90 == 0 for p in draws]) < 0.70
    assert {p.rot90 for p in draws} == {0, 1, 2, 3}


def test_apply_aug_crops_flips_and_turns():
    image = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)
    crop = AugParams(top=1, left=2, height=4, width=4, vflip=False, hflip=False, rot90=0)
    torch.testing.assert_close(apply_aug(image, crop, 4), image[:, 1:5, 2:6])  # same size: an exact crop
    flipped = apply_aug(image, AugParams(1, 2, 4, 4, vflip=True, hflip=True, rot90=1), 4)
    torch.testing.assert_close(flipped, torch.rot90(image[:, 1:5, 2:6].flip(-2).flip(-1), 1, dims=(-2, -1)))
    # the transform applies exactly the draw it is given, after the resize to resize_to
    img = _pil(6)
    t = PairedTransform(train=True, image_size=16, resize_to=48, **NO_NORM)
    params = AugParams(5, 7, 20, 24, vflip=True, hflip=False, rot90=3)
    resized = t._resize(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255, 48)
    torch.testing.assert_close(t.one(img, params), apply_aug(resized, params, 16))


def test_eval_transform_is_deterministic():
    img = _pil(4)
    t = PairedTransform(train=False, image_size=32)
    torch.manual_seed(0)
    a = t(img, img)
    torch.manual_seed(1)
    b = t(img, img)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], a[1]) and a[0].shape == (3, 32, 32)


@pytest.mark.parametrize("train", [False, True])
def test_bgr_flag_flips_channels_exactly(train):
    img = _pil(5)
    for norm in (NO_NORM, dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)):
        rgb = PairedTransform(train=train, image_size=32, resize_to=48, bgr=False, **norm)
        bgr = PairedTransform(train=train, image_size=32, resize_to=48, bgr=True, **norm)
        out_rgb = rgb(img, img, generator=torch.Generator().manual_seed(7))[0]
        out_bgr = bgr(img, img, generator=torch.Generator().manual_seed(7))[0]
        mean = torch.tensor(norm["mean"]).view(3, 1, 1)
        std = torch.tensor(norm["std"]).view(3, 1, 1)
        # un-normalise: the BGR pixels are the RGB pixels with channels reversed
        torch.testing.assert_close(out_bgr * std + mean, (out_rgb * std + mean).flip(0), atol=1e-6, rtol=0)
        assert not torch.allclose(out_bgr, out_rgb)
    # and the first channel of the BGR tensor is the blue channel of the image
    plain = PairedTransform(train=False, image_size=50, bgr=True, **NO_NORM).one(img.resize((50, 50)))
    expected_blue = torch.from_numpy(np.asarray(img.resize((50, 50)))[:, :, 2].astype(np.float32) / 255)
    torch.testing.assert_close(plain[0], expected_blue, atol=1e-6, rtol=0)


# -- class-balanced sampling -------------------------------------------------------------

def test_class_balanced_weights():
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = class_balanced_weights(labels)
    # N / (K * n_class) with N = 6, K = 3
    np.testing.assert_allclose(w, [6 / 9, 6 / 9, 6 / 9, 2.0, 1.0, 1.0])
    assert w.sum() == pytest.approx(len(labels))
    for c in range(3):
        assert w[labels == c].sum() == pytest.approx(len(labels) / 3)
    # a class index missing from the data (K counts present classes, as the reference did)
    np.testing.assert_allclose(class_balanced_weights([1, 1, 4]), [0.75, 0.75, 1.5])
    with pytest.raises(DataError):
        class_balanced_weights([])


def test_weighted_sampler_works_for_derm7pt_tables(tmp_path):
    # the reference's sampler read `train_dataset.df`, which Derm7pt does not have
    root = _derm7pt_release(tmp_path, indexes={"train": [0, 1, 2, 3, 5], "valid": [4], "test": [6, 7]})
    table = load_derm7pt(root).split("train")  # labels BCC, NEV, MEL, MISC, NEV
    dataset = MultimodalDataset(table, train=True, image_size=32, resize_to=40)
    for source in (table, dataset, table.labels):
        np.testing.assert_allclose(class_balanced_weights(source), [1.25, 0.625, 1.25, 1.25, 0.625])
    labels = np.array([0] * 90 + [1] * 9 + [2])
    sampler = weighted_sampler(labels, num_samples=6000, generator=torch.Generator().manual_seed(0))
    drawn = labels[np.fromiter(iter(sampler), dtype=np.int64)]
    assert len(drawn) == 6000
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / 6000, [1 / 3] * 3, atol=0.04)
    assert len(weighted_sampler(labels)) == 100
