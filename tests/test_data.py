"""CSV tables and image opening: every bad input gives one clear DataError."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.data.images import open_image
from panderm.data.tables import load_table, parse_labels, read_csv
from panderm.errors import DataError


@pytest.fixture()
def img_dir(tmp_path, ham_csv):
    src = ham_csv.parent / "images"
    files = sorted(src.glob("*.jpg"))[:4]
    for f in files:
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path, [f.name for f in files]


def write_csv(path, rows, header="image_path,label"):
    path.write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))
    return path


def test_real_sample_loads_with_labels(ham_csv):
    t = load_table(ham_csv, "image_path", label_col="label", num_classes=7)
    assert len(t) == 70 and t.labels.tolist().count(0) == 10
    assert all(p.is_absolute() and p.exists() for p in t.paths)
    assert len(t.csv_sha256) == 64


def test_split_filter(ham_csv):
    t = load_table(ham_csv, "image_path", split="test")
    expected = pd.read_csv(ham_csv).query("split == 'test'")
    assert len(t) == len(expected)
    with pytest.raises(DataError, match="no rows with split == 'holdout'"):
        load_table(ham_csv, "image_path", split="holdout")


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "CSV not found"),
        ("", "CSV is empty"),
        ("image_path,label\n", "header but no rows"),
        ("image_path;label\na.jpg;0\n", "semicolon-separated"),
    ],
)
def test_unusable_csv_files(tmp_path, content, match):
    path = tmp_path / "x.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        read_csv(path)


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("image_path,label\ncaf\xe9.jpg,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="is not utf-8 text"):
        read_csv(path)


def test_missing_column_names_columns_and_flag(img_dir):
    d, names = img_dir
    csv = write_csv(d / "a.csv", [f"{names[0]},0"], header="filename,label")
    with pytest.raises(DataError) as err:
        load_table(csv, "image_path", label_col="label")
    assert str(err.value) == f"{csv}: column 'image_path' not found; columns are: filename, label"
    assert err.value.param == "image_col"
    assert err.value.render({"image_col": "--image-col"}).endswith("filename, label (set it with --image-col)")
    with pytest.raises(DataError) as err:
        load_table(csv, "filename", label_col="y")
    assert err.value.param == "label_col"
    with pytest.raises(DataError) as err:
        load_table(csv, "filename", split="test", split_col="fold")
    assert err.value.param == "split_col"


def test_every_missing_or_bad_image_is_listed(img_dir):
    d, names = img_dir
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    (d / "folder.jpg").mkdir()
    rows = [f"{names[0]},0", "gone1.jpg,0", "gone2.jpg,1", "empty.jpg,0", "text.jpg,1", "folder.jpg,0"]
    csv = write_csv(d / "a.csv", rows)
    with pytest.raises(DataError) as err:
        load_table(csv, "image_path")
    msg = str(err.value)
    assert msg.startswith("5 of 6 image(s)")
    for token in ("gone1.jpg [missing]", "gone2.jpg [missing]", "empty.jpg [empty file]", "text.jpg [not an image]",
                  "folder.jpg [a directory]"):
        assert token in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "labels,kwargs,match",
    [
        (["0", "3"], {"num_classes": 3}, r"outside 0..2 in row\(s\) 3 \(e.g. 3\)"),
        (["0", "-1"], {}, "negative label"),
        (["0", "1.5"], {}, "non-integer labels in row"),
        (["0", ""], {}, r"column 'label' is empty in row\(s\) 3"),
        (["0", "melanoma"], {}, "holds text labels"),
        (["nevus", "psoriasis"], {"classnames": ["melanoma", "nevus"]}, "not among the class names: psoriasis"),
    ],
)
def test_bad_labels(labels, kwargs, match):
    frame = pd.DataFrame({"label": labels})
    with pytest.raises(DataError, match=match):
        parse_labels(frame, "label", "t.csv", **kwargs)


def test_labels_as_names_floats_and_ints():
    assert parse_labels(pd.DataFrame({"l": ["Nevus", "melanoma"]}), "l", "t", classnames=["melanoma", "nevus"]).tolist() == [1, 0]
    assert parse_labels(pd.DataFrame({"l": [1.0, 0.0]}), "l", "t", num_classes=2).tolist() == [1, 0]


def test_root_and_reference_parent_path(img_dir, tmp_path):
    d, names = img_dir
    csv = write_csv(tmp_path / "elsewhere.csv", [f"{names[0]},0"])
    assert load_table(csv, "image_path", root=d).paths[0] == (d / names[0]).absolute()
    # --parent-path is a plain string prefix in the reference.
    assert load_table(csv, "image_path", concat_prefix=str(d) + "/").paths[0] == (d / names[0]).absolute()


def _save(tmp_path, name, array, mode=None, **kw):
    img = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_image_modes_become_rgb(tmp_path):
    gray = _save(tmp_path, "g.png", np.full((8, 8), 100, np.uint8))
    rgba = _save(tmp_path, "a.png", np.dstack([np.full((8, 8, 3), 50, np.uint8), np.zeros((8, 8), np.uint8)]))
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(deep)
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)
    for path in (gray, rgba, deep, cmyk):
        img = open_image(path)
        assert img.mode == "RGB" and img.size == (8, 8)
    assert np.asarray(open_image(gray))[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(open_image(rgba))[0, 0].tolist() == [50, 50, 50]
    # 16-bit is scaled, not clipped to white.
    assert np.asarray(open_image(deep))[0, 0].tolist() == [127, 127, 127]
    assert np.asarray(open_image(cmyk))[0, 0, 0] > 200  # red


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif)
    assert open_image(path).size == (4, 8)


def test_truncated_jpeg(tmp_path, ham_csv):
    src = next((ham_csv.parent / "images").glob("*.jpg")).read_bytes()
    path = tmp_path / "t.jpg"
    path.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataError, match="corrupt image .*t.jpg"):
        open_image(path)


def test_errors_in_a_split_name_the_csv_line(tmp_path, img_dir):
    d, names = img_dir
    csv = write_csv(d / "s.csv", [f"{names[0]},0,train", f"{names[1]},1,test", f"{names[2]},9,test"],
                    header="image_path,label,split")
    with pytest.raises(DataError, match=r"outside 0..1 in row\(s\) 4 "):
        load_table(csv, "image_path", label_col="label", num_classes=2, split="test")


def test_every_image_missing_lists_a_few_and_points_at_the_root(tmp_path):
    """A wrong root makes every image missing: one short line, the first 10 paths, the count, a hint."""
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_path": [f"img{i}.jpg" for i in range(40)]}).to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        load_table(csv, "image_path", root=tmp_path)
    msg = str(err.value)
    assert msg.startswith("40 of 40 image(s)") and "img9.jpg" in msg and "img10.jpg" not in msg
    assert "(+30 more)" in msg and f"no image exists under {tmp_path}" in msg
    assert len(msg.replace(str(tmp_path), "<tmp>")) < 1200  # short whatever the temp folder's length
