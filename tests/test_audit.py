"""Issue 16 item 4: `panderm audit` finds planted duplicates, near-duplicates, leaks and unreadable files, and
`--fix-splits` leaves none of them across splits, stratified and deterministic."""
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.analysis.audit import audit_dataset, fix_splits, remaining_leaks
from panderm.analysis.audit_hash import cosine_pairs, gray_thumbnail, hamming, hamming_pairs, image_facts, phash_pair
from panderm.cli import main
from panderm.errors import DataError

PAD = "pad_ufes20_sample"


def _pad(sample_dir):
    return pd.read_csv(sample_dir / PAD / f"{PAD}.csv")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, sample_dir):
    """12 real PAD images of 12 patients (4 per split) plus the planted problems; returns (csv, expected)."""
    pad = _pad(sample_dir)
    one_each = pad[~pad["patient_id"].isin(["PAT_701"])].drop_duplicates("patient_id")
    picked = pd.concat([one_each[one_each["split"] == s].head(4) for s in ("train", "val", "test")])
    folder = tmp_path_factory.mktemp("planted")
    (folder / "images").mkdir()
    rows = []
    for k, (_, r) in enumerate(picked.iterrows()):
        name = f"images/img{k:02d}.jpg"
        shutil.copy(sample_dir / PAD / r["image_path"], folder / name)
        rows.append({"image_path": name, "label": int(r["label"]), "split": r["split"], "patient_id": f"P{k:02d}"})
    # img00..img03 are train, img04..img07 val, img08..img11 test.
    shutil.copy(folder / "images/img00.jpg", folder / "images/copy_of_00.jpg")
    src = Image.open(folder / "images/img01.jpg").convert("RGB")
    src.resize((src.width // 2, src.height // 2), Image.Resampling.BILINEAR).save(
        folder / "images/small_01.jpg", quality=70)
    Image.open(folder / "images/img02.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        folder / "images/mirror_02.jpg", quality=90)
    (folder / "images/broken.jpg").write_bytes((folder / "images/img03.jpg").read_bytes()[:300])
    rows += [
        {"image_path": "images/copy_of_00.jpg", "label": rows[0]["label"], "split": "test", "patient_id": "P20"},
        {"image_path": "images/small_01.jpg", "label": rows[1]["label"], "split": "test", "patient_id": "P21"},
        {"image_path": "images/mirror_02.jpg", "label": rows[2]["label"], "split": "val", "patient_id": "P22"},
        {"image_path": "images/broken.jpg", "label": rows[3]["label"], "split": "train", "patient_id": "P23"},
        {"image_path": "images/gone.jpg", "label": rows[3]["label"], "split": "val", "patient_id": "P24"},
    ]
    rows[9]["patient_id"] = "P03"  # the patient of img03 (train) has a test image too: a planted patient leak
    csv = folder / "planted.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    # CSV lines: data row k is on line k + 2.
    expected_pairs = {(2, 14): ("exact", False), (3, 15): ("near", False), (4, 16): ("near", True)}
    return csv, expected_pairs


@pytest.fixture(scope="module")
def planted_result(planted):
    return audit_dataset(planted[0], group_cols=["patient_id"])


# -- the hash itself ------------------------------------------------------------------------------------------------

def test_phash_of_the_mirrored_image_is_the_flipped_hash(sample_dir):
    img = Image.open(sample_dir / PAD / _pad(sample_dir)["image_path"][0]).convert("RGB")
    h, h_flip = phash_pair(gray_thumbnail(img))
    m, m_flip = phash_pair(gray_thumbnail(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert hamming(h_flip, m) <= 2 and hamming(h, m_flip) <= 2  # BOX resize of a mirror = mirror of the resize
    assert hamming(h, m) > 40  # the plain hash does not see the mirror: hence the flipped hash
    assert sum(bin(w).count("1") for w in h) == 71  # 143 AC coefficients split at their median: 71 above it


def test_hamming_pairs_and_cosine_pairs_on_hand_made_hashes():
    words = lambda *bits: (sum(1 << b for b in bits), 0, 0)  # noqa: E731
    hashes = [words(0, 1, 2), words(0, 1), words(10, 11, 12, 13), words(0, 1, 2)]
    flips = [words(50), words(51), words(0, 1, 2, 3), words(52)]
    # 0-1: 1 bit; 0-3: 0; 1-3: 1; 2 vs 0 (and 3, 0's twin) straight 7 bits, but flip(2) is 1 bit away: flipped.
    # 1-2: 2 bits even flipped, so no pair.
    got = hamming_pairs(hashes, flips, threshold=1)
    assert got == [(0, 1, 1, False), (0, 2, 1, True), (0, 3, 0, False), (1, 3, 1, False), (2, 3, 1, True)]
    assert hamming_pairs(hashes, flips, threshold=1, valid=np.array([True, True, True, False])) == got[:2]
    x = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [2.0, 0.0]])
    assert [(i, j) for i, j, _ in cosine_pairs(x, 0.98)] == [(0, 1), (0, 3), (1, 3)]
    assert cosine_pairs(x, 0.98)[1][2] == pytest.approx(1.0)


def test_unreadable_files_give_a_reason_not_an_exception(tmp_path):
    (tmp_path / "text.jpg").write_text("not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    assert image_facts(tmp_path / "text.jpg").reason.startswith("not an image")
    assert image_facts(tmp_path / "empty.png").reason == "empty file"
    assert image_facts(tmp_path / "nope.jpg").reason == "missing"


# -- the planted dataset --------------------------------------------------------------------------------------------

def test_planted_duplicates_are_found_and_nothing_else(planted, planted_result):
    _, expected = planted
    dup = planted_result.duplicates
    found = {(a, b): (k, f) for a, b, k, f in zip(dup["row_a"], dup["row_b"], dup["kind"], dup["flipped"])}
    assert found == expected
    assert dup["cross_split"].all()
    assert dup.loc[dup["kind"] == "exact", "phash_distance"].tolist() == [0]
    assert (dup["phash_distance"] <= 16).all()


def test_planted_patient_leak_and_unreadable_files(planted_result):
    leaks = planted_result.group_leaks
    assert leaks[["column", "value", "splits", "rows"]].values.tolist() == [["patient_id", "P03", "test, train", "5 11"]]
    bad = planted_result.unreadable
    assert bad["row"].tolist() == [17, 18]
    assert bad["reason"].iloc[0].startswith("corrupt") and bad["reason"].iloc[1] == "missing"
    leakage = planted_result.leakage
    assert sorted(leakage["kind"]) == ["exact_duplicate", "group", "near_duplicate", "near_duplicate"]


def test_class_balance_and_image_stats(planted, planted_result):
    frame = pd.read_csv(planted[0])
    assert planted_result.class_balance.to_dict() == pd.crosstab(frame["split"], frame["label"].astype(str)).to_dict()
    stats = planted_result.image_stats
    assert stats["files"] == 15 and stats["formats"] == {"JPEG": 15} and stats["modes"] == {"RGB": 15}
    assert stats["width"]["min"] == 128  # the halved copy of a 256-px image


def test_fix_splits_leaves_no_leak_and_reaudit_agrees(planted, planted_result, tmp_path):
    csv, _ = planted
    fixed = fix_splits(planted_result.frame, group_cols=["patient_id"], pairs=planted_result.pair_positions(), seed=3)
    assert remaining_leaks(planted_result, fixed) == {"cross_split_pairs": 0, "group_leaks": 0}
    out = csv.parent / "fixed.csv"
    fixed.to_csv(out, index=False)
    again = audit_dataset(out, group_cols=["patient_id"])
    assert len(again.duplicates) == 3 and not again.duplicates["cross_split"].any()
    assert len(again.group_leaks) == 0 and len(again.leakage) == 0
    pd.testing.assert_frame_equal(fixed.drop(columns="split"), planted_result.frame.drop(columns="split"))


def test_fix_splits_is_stratified_group_aware_and_deterministic(sample_dir):
    pad = _pad(sample_dir)
    a = fix_splits(pad, group_cols=["patient_id"], seed=0)
    assert a.equals(fix_splits(pad, group_cols=["patient_id"], seed=0))
    assert not a["split"].equals(fix_splits(pad, group_cols=["patient_id"], seed=1)["split"])
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    share = pad["split"].value_counts(normalize=True)
    sizes = a["split"].value_counts()
    assert all(abs(sizes[s] - share[s] * len(pad)) <= 2 for s in share.index)
    target = share.to_numpy()[:, None] * pad["label"].value_counts().sort_index().to_numpy()[None, :]
    got = pd.crosstab(a["split"], a["label"]).loc[share.index].to_numpy()
    assert np.abs(got - target).max() <= 1.5  # every split holds each class in its share, to a row or so


def test_fix_splits_keeps_a_duplicate_chain_together():
    frame = pd.DataFrame({"label": [0, 1] * 10, "split": ["train"] * 16 + ["test"] * 4})
    chain = [(0, 5), (5, 13), (13, 19)]  # 0-5-13-19 linked transitively
    for seed in range(5):
        out = fix_splits(frame, pairs=chain, seed=seed)
        assert out["split"].iloc[[0, 5, 13, 19]].nunique() == 1
        assert out["split"].value_counts().to_dict() == {"train": 16, "test": 4}


# -- the real samples -----------------------------------------------------------------------------------------------

def _leaking_ids(frame, col):
    return int((frame.dropna(subset=[col]).groupby(col)["split"].nunique() > 1).sum())


def test_real_pad_by_patient_and_ham_by_lesion(sample_dir, tmp_path):
    pad = _pad(sample_dir)
    result = audit_dataset(sample_dir / PAD / f"{PAD}.csv", group_cols=["patient_id", "lesion_id"])
    assert result.counts()["group_leaks"] == {"patient_id": _leaking_ids(pad, "patient_id"),
                                              "lesion_id": _leaking_ids(pad, "lesion_id")}
    # The sample's one look-alike pair: one photo of patient 701 filed under two lesion ids (val, both).
    assert result.duplicates[["row_a", "row_b", "kind", "cross_split"]].values.tolist() == [[193, 194, "near", False]]
    ham = pd.read_csv(sample_dir / "ham10000_sample/ham10000_sample.csv")
    res = audit_dataset(sample_dir / "ham10000_sample/ham10000_sample.csv", group_cols=["lesion_id"])
    assert res.counts()["group_leaks"] == {"lesion_id": _leaking_ids(ham, "lesion_id")}
    # Move one image of each of three multi-image patients to another split: exactly those three now leak.
    multi = pad["patient_id"].value_counts()
    movers = sorted(multi[multi > 1].index)[:3]
    moved = pad.copy()
    for pid in movers:
        i = moved.index[moved["patient_id"] == pid][0]
        moved.loc[i, "split"] = "test" if moved.loc[i, "split"] != "test" else "train"
    moved.to_csv(tmp_path / "moved.csv", index=False)
    leaked = audit_dataset(tmp_path / "moved.csv", root=sample_dir / PAD, group_cols=["patient_id"]).group_leaks
    assert sorted(leaked["value"]) == movers == sorted(
        moved.groupby("patient_id")["split"].nunique().pipe(lambda s: s[s > 1]).index)


# -- the command ----------------------------------------------------------------------------------------------------

def test_cli_writes_the_reports_and_a_clean_resplit(planted, tmp_path, capsys):
    csv, expected = planted
    fixed = tmp_path / "fixed.csv"
    rc = main(["audit", "--csv", str(csv), "--group-col", "patient_id", "--out", str(tmp_path / "out"),
               "--fix-splits", str(fixed), "--seed", "7"])
    text = capsys.readouterr().out
    assert rc == 0
    assert re.search(r"pairs across splits \(leakage\) +3 *\n", text) and "0 duplicate pair(s) and 0 group id(s)" in text
    out = tmp_path / "out"
    dup = pd.read_csv(out / "duplicates.csv")
    assert set(zip(dup["row_a"], dup["row_b"])) == set(expected)
    assert len(pd.read_csv(out / "leakage.csv")) == 4
    report = json.loads((out / "audit.json").read_text())
    assert report["counts"]["cross_split_pairs"] == 3 and report["counts"]["unreadable"] == 2
    page = (out / "audit.html").read_text()
    assert page.count('src="data:image/png;base64,') == 6 and "src=\"http" not in page and "file:" not in page
    assert "LEAK across splits" in page and "| P03 |" in (out / "audit.md").read_text()
    again = audit_dataset(fixed, root=csv.parent, group_cols=["patient_id"])
    assert len(again.leakage) == 0
    rc2 = main(["audit", "--csv", str(csv), "--group-col", "patient_id", "--out", str(tmp_path / "out2"),
                "--fix-splits", str(tmp_path / "fixed2.csv"), "--seed", "7"])
    assert rc2 == 0 and (tmp_path / "fixed2.csv").read_bytes() == fixed.read_bytes()


def test_cli_bad_column_is_one_line(planted, tmp_path, capsys):
    rc = main(["audit", "--csv", str(planted[0]), "--group-col", "patient", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "'patient' not found; columns are: " in err and err.endswith("(set it with --group-col)")
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="threshold"):
        audit_dataset(planted[0], phash_threshold=200)
    rc = main(["audit", "--csv", str(planted[0]), "--out", str(tmp_path / "o"), "--fix-splits", str(planted[0])])
    assert rc == 2 and "would overwrite the audited --csv" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_embedding_near_duplicates_use_the_feature_cache(planted, tmp_path):
    csv, _ = planted
    options = {"device": "cpu", "cache_dir": str(tmp_path / "cache"), "num_workers": 0, "precision": "fp32"}
    first = audit_dataset(csv, model="demo", embed_threshold=0.999, model_options=options)
    exact = first.duplicates[first.duplicates["kind"] == "exact"]
    assert exact["embed_cosine"].tolist() == [pytest.approx(1.0, abs=1e-6)]
    assert first.model == "demo" and first.embed_from_cache is False and list((tmp_path / "cache").glob("*.npy"))
    second = audit_dataset(csv, model="demo", embed_threshold=0.999, model_options=options)
    assert second.embed_from_cache is True
    pd.testing.assert_frame_equal(first.duplicates, second.duplicates)


def test_rows_without_a_split_leak_into_none_and_no_label_or_split_columns(planted, tmp_path):
    frame = pd.read_csv(planted[0])
    frame.loc[14, "split"] = None  # the mirrored copy of row 4 (train) now sits in no split
    frame.loc[9, "split"] = None  # and the second image of patient P03
    frame.to_csv(tmp_path / "nosplit.csv", index=False)
    res = audit_dataset(tmp_path / "nosplit.csv", root=planted[0].parent, group_cols=["patient_id"])
    assert res.duplicates.set_index("row_a")["cross_split"].to_dict() == {2: True, 3: True, 4: False}
    assert len(res.group_leaks) == 0
    flat = audit_dataset(planted[0], label_col=None, split_col=None)
    assert flat.class_balance.to_dict() == {"all": {"all": 17}} and not flat.duplicates["cross_split"].any()
    with pytest.raises(DataError, match="'diagnosis' not found"):
        fix_splits(frame, label_col="diagnosis")
    with pytest.raises(DataError, match="outside 0..16"):
        fix_splits(frame, pairs=[(0, 17)])


def test_images_over_the_pixel_limit_are_reported_not_opened(planted):
    from panderm.data.images import image_pixel_limit

    with image_pixel_limit(20_000):  # 128x128 = 16,384 pixels passes; 256x256 (and 218x218) do not
        res = audit_dataset(planted[0])
    too_large = res.unreadable[res.unreadable["reason"].str.startswith("too large")]
    # the header decides: the truncated file (line 17) says 256x256 too; the missing one (18) has no header
    assert set(res.unreadable["row"]) - set(too_large["row"]) == {18}
    assert len(too_large) == 15 and 15 not in set(too_large["row"])  # line 15: the halved copy
    assert res.image_stats["files"] == 1 and len(res.duplicates) == 0
