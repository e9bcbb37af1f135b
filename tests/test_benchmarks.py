"""Tests for panderm.data.benchmarks and panderm.data.templates.

Expected values are hard-coded from the reference spec (PanDerm-2 zero-shot
metadata and README), not read from it, so the tests run anywhere.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from panderm.data.benchmarks import (
    ACCURACY,
    AUROC,
    BENCHMARKS,
    README_ORDER,
    TOP3_ACCURACY,
    WEIGHTED_F1,
    Benchmark,
    code_to_label,
    get_benchmark,
    load_classnames,
    readme_average,
)
from panderm.data.templates import SKIN_TEMPLATES, load_templates, render
from panderm.errors import DataError

# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


def test_registry_names_and_flags_in_reference_order():
    assert [(b.name, b.flag) for b in BENCHMARKS.values()] == [
        ("PAD-6", "--zeroshot-eval1"),
        ("HAM-7", "--zeroshot-eval2"),
        ("SNU-134", "--zeroshot-eval3"),
        ("SD-128", "--zeroshot-eval4"),
        ("Daffodil-5", "--zeroshot-eval5"),
        ("PH2-2", "--zeroshot-eval6"),
        ("ISIC2020-2", "--zeroshot-eval7"),
        ("DermNet-23", "--zeroshot-eval"),
    ]


@pytest.mark.parametrize(
    "name,count",
    [
        ("PAD-6", 6),
        ("HAM-7", 7),
        ("SNU-134", 134),
        ("SD-128", 128),
        ("Daffodil-5", 5),
        ("PH2-2", 2),
        ("ISIC2020-2", 2),
        ("DermNet-23", 23),
    ],
)
def test_class_counts(name, count):
    bench = BENCHMARKS[name]
    assert len(bench.classnames) == bench.num_classes == count


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_no_duplicate_class_names(name):
    names = BENCHMARKS[name].classnames
    assert len(set(names)) == len(names)
    assert len({n.lower() for n in names}) == len(names)
    assert all(n == n.strip() and n for n in names)


def test_small_lists_verbatim():
    assert BENCHMARKS["HAM-7"].classnames == (
        "actinic keratosis",
        "basal cell carcinoma",
        "benign keratosis",
        "dermatofibroma",
        "melanoma",
        "nevus",
        "vascular",
    )
    assert BENCHMARKS["PAD-6"].classnames == (
        "nevus",
        "basal cell carcinoma",
        "actinic keratosis",
        "seborrheic keratosis",
        "squamous cell carcinoma",
        "melanoma",
    )
    assert BENCHMARKS["PH2-2"].classnames == ("benign", "malignant")
    assert BENCHMARKS["ISIC2020-2"].classnames == ("benign", "malignant")
    assert BENCHMARKS["Daffodil-5"].classnames == (
        "vitiligo",
        "acne",
        "SJS/TEN",
        "hyperpigmentation",
        "nail psoriasis",
    )


SNU_SPOT = {
    0: "epidermal cyst",
    1: "paronychia",
    2: "ota nevus",
    23: "malignant melanoma",
    24: "pityriasis lichenoides et varioliformis acuta",
    36: "basal cell carcinoma",
    37: "melanocytic nevus",
    47: "cafe au lait macule",
    87: "acne",
    100: "pityriasis lichenoides chronica",
    116: "inflammed cyst",  # sic
    129: "lichen amyloidosis",
    130: "abnormal",
    131: "onycholysis",
    132: "pustular psoriasis",
    133: "telangiectasia",
}

SD_SPOT = {
    0: "acne keloidalis nuchae",
    1: "acne vulgaris",
    2: "actinic solar damage(actinic keratosis)",
    7: "actinic solar damage(telangiectasia)",
    15: "beau's lines",
    27: "darier-white disease",
    45: "favre racouchot",
    64: "keratolysis exfoliativa of wende",
    77: "malignant melanoma",
    83: "nail psoriasis",
    116: "steroid use abusemisuse dermatitis",  # sic
    124: "tinea versicolor",
    125: "ulcer",
    126: "verruca vulgaris",
    127: "xerosis",
}

DERMNET_SPOT = {
    0: "light diseases and disorders of pigmentation",
    8: "melanoma skin cancer nevi and moles",
    13: "actinic keratosis basal cell carcinoma and other malignant lesions",
    22: "bullous disease photos",
}


@pytest.mark.parametrize(
    "name,spot", [("SNU-134", SNU_SPOT), ("SD-128", SD_SPOT), ("DermNet-23", DERMNET_SPOT)]
)
def test_large_lists_spot_checks(name, spot):
    names = BENCHMARKS[name].classnames
    for index, expected in spot.items():
        assert names[index] == expected, index


def test_paths_folders_modes():
    pad = BENCHMARKS["PAD-6"]
    assert pad.default_csv == "data/zero-shot-classification/pad-zero-shot-test.csv"
    assert BENCHMARKS["HAM-7"].default_csv.endswith("/HAM-official-7-zero-shot-test.csv")
    assert BENCHMARKS["DermNet-23"].default_csv == (
        "data/zero-shot-classification/dermnet-23-zero-shot-test.csv"
    )
    assert pad.csv_path("/data/root").as_posix() == (
        "/data/root/data/zero-shot-classification/pad-zero-shot-test.csv"
    )
    assert [b.folder for b in BENCHMARKS.values()] == [
        "PAD-6", "HAM-7", "SNU_134", "SD_128", "Daffodil_5", "PH2-2", "ISIC2020-2", "Dermnet",
    ]
    assert [b.metric_mode for b in BENCHMARKS.values()] == [
        "wf1+acc", "wf1+acc", "wf1+accs", "wf1+accs", "wf1+acc", "auroc+acc", "auroc+acc", "acc",
    ]


def test_benchmark_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BENCHMARKS["PAD-6"].name = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------
# Result keys and README metric
# --------------------------------------------------------------------------


def test_reference_keys():
    assert BENCHMARKS["PAD-6"].reference_keys == ("zeroshot-pad-wf1", "zeroshot-pad-acc")
    assert BENCHMARKS["HAM-7"].reference_keys == ("zeroshot-ham-wf1", "zeroshot-ham-acc")
    assert BENCHMARKS["SNU-134"].reference_keys == (
        "zeroshot-SNU-134-wf1",
        "zeroshot-SNU-134-top1-acc",
        "zeroshot-SNU-134-top3-acc",
    )
    assert BENCHMARKS["SD-128"].reference_keys == (
        "zeroshot-SD-128-wf1",
        "zeroshot-SD-128-top1-acc",
        "zeroshot-SD-128-top3-acc",
    )
    assert BENCHMARKS["Daffodil-5"].reference_keys == (
        "zeroshot-Daffodil-5-wf1",
        "zeroshot-Daffodil-5-acc",
    )
    assert BENCHMARKS["PH2-2"].reference_keys == ("zeroshot-PH2-auroc", "zeroshot-PH2-acc")
    assert BENCHMARKS["ISIC2020-2"].reference_keys == (
        "zeroshot-ISIC20-auroc",
        "zeroshot-ISIC20-acc",
    )
    assert BENCHMARKS["DermNet-23"].reference_keys == (
        "zeroshot-dermnet-acc",
        "zeroshot-dermnet-wf1",
    )


def test_reference_results_mapping():
    ours = {ACCURACY: 0.5, WEIGHTED_F1: 0.4, TOP3_ACCURACY: 0.8, AUROC: 0.9}
    assert BENCHMARKS["SNU-134"].reference_results(ours) == {
        "zeroshot-SNU-134-wf1": 0.4,
        "zeroshot-SNU-134-top1-acc": 0.5,
        "zeroshot-SNU-134-top3-acc": 0.8,
    }
    assert BENCHMARKS["ISIC2020-2"].reference_results(ours) == {
        "zeroshot-ISIC20-auroc": 0.9,
        "zeroshot-ISIC20-acc": 0.5,
    }
    # Reference logging order is kept; unreported metrics are dropped.
    assert list(BENCHMARKS["PAD-6"].reference_results(ours)) == [
        "zeroshot-pad-wf1",
        "zeroshot-pad-acc",
    ]
    # A metric that could not be computed is left out, not invented.
    assert BENCHMARKS["PH2-2"].reference_results({ACCURACY: 1.0}) == {"zeroshot-PH2-acc": 1.0}


def test_readme_metric_per_benchmark():
    labels = {b.name: b.readme_label for b in BENCHMARKS.values()}
    assert labels == {
        "PAD-6": "ACC",
        "HAM-7": "ACC",
        "SNU-134": "ACC",
        "SD-128": "ACC",
        "Daffodil-5": "ACC",
        "PH2-2": "AUROC",
        "ISIC2020-2": "AUROC",
        "DermNet-23": "ACC",
    }
    assert BENCHMARKS["SNU-134"].readme_key == "zeroshot-SNU-134-top1-acc"
    assert BENCHMARKS["PH2-2"].readme_key == "zeroshot-PH2-auroc"


def test_readme_order():
    assert README_ORDER == (
        "HAM-7", "PAD-6", "ISIC2020-2", "PH2-2", "SNU-134", "SD-128", "Daffodil-5",
    )
    assert all(name in BENCHMARKS for name in README_ORDER)


def test_readme_average_reproduces_published_panderm2_row():
    # PanDerm-2 row of the README table; its Average column reads 0.7320.
    row = [0.7957, 0.6941, 0.8663, 0.9304, 0.4450, 0.5075, 0.8848]
    results = {}
    for name, value in zip(README_ORDER, row):
        bench = BENCHMARKS[name]
        # The non-README metric is set to a decoy; it must be ignored.
        decoy = AUROC if bench.readme_metric == ACCURACY else ACCURACY
        results[name] = {bench.readme_metric: value, decoy: -1.0}
    avg = readme_average(results)
    assert math.isclose(avg, 5.1238 / 7)
    assert round(avg, 4) == 0.7320


def test_readme_average_subset_aliases_and_reference_keys():
    results = {
        "ham": {ACCURACY: 0.6, AUROC: 0.1},
        "ISIC20": {AUROC: 0.9, ACCURACY: 0.2},
        "snu": {"zeroshot-SNU-134-top1-acc": 0.3},  # reference-format dict
    }
    assert math.isclose(readme_average(results), (0.6 + 0.9 + 0.3) / 3)


def test_readme_average_errors():
    with pytest.raises(DataError, match="no benchmark"):
        readme_average({})
    with pytest.raises(DataError, match="twice"):
        readme_average({"pad": {ACCURACY: 0.5}, "PAD-6": {ACCURACY: 0.5}})
    with pytest.raises(DataError, match="PH2-2.*auroc"):
        readme_average({"ph2": {ACCURACY: 0.5}})
    with pytest.raises(DataError, match="unknown"):
        readme_average({"nope": {ACCURACY: 0.5}})


# --------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias,expected",
    [
        ("pad", "PAD-6"),
        ("PAD-6", "PAD-6"),
        ("pad6", "PAD-6"),
        ("pad_6", "PAD-6"),
        ("ham", "HAM-7"),
        ("HAM-7", "HAM-7"),
        ("Ham7", "HAM-7"),
        ("isic2020", "ISIC2020-2"),
        ("ISIC20", "ISIC2020-2"),
        ("snu", "SNU-134"),
        ("SNU_134", "SNU-134"),
        ("sd128", "SD-128"),
        ("sd-128", "SD-128"),
        ("daffodil", "Daffodil-5"),
        ("DAFFODIL_5", "Daffodil-5"),
        ("ph2", "PH2-2"),
        ("PH2-2", "PH2-2"),
        ("dermnet", "DermNet-23"),
        (" DermNet ", "DermNet-23"),
    ],
)
def test_get_benchmark_aliases(alias, expected):
    assert get_benchmark(alias).name == expected


def test_get_benchmark_passes_benchmark_through():
    bench = BENCHMARKS["SD-128"]
    assert get_benchmark(bench) is bench


def test_get_benchmark_unknown_lists_known_names():
    with pytest.raises(DataError) as info:
        get_benchmark("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in BENCHMARKS:
        assert name in message


def test_benchmark_validates_its_own_fields():
    with pytest.raises(ValueError):
        Benchmark("X", "--x", ("a", "b"), "x.csv", "X", "top5", (("k", ACCURACY),), ACCURACY)
    with pytest.raises(ValueError):  # README metric not among the reported ones
        Benchmark("X", "--x", ("a", "b"), "x.csv", "X", "acc", (("k", ACCURACY),), AUROC)
    with pytest.raises(ValueError):
        Benchmark("X", "--x", ("a", "A"), "x.csv", "X", "acc", (("k", ACCURACY),), ACCURACY)


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------


def test_skin_templates_verbatim():
    assert SKIN_TEMPLATES == (
        "This is a skin image of {c}",
        "This is a skin image of {c}.",
        "A skin image of {c}.",
        "An image of {c}, a skin condition.",
        "{c}, a skin disorder, is shown in this image.",
        "The skin lesion depicted is {c}.",
        "The skin cancer in this image is {c}.",
        "This image depicts {c}, a type of skin cancer.",
    )


def test_render():
    prompts = render(SKIN_TEMPLATES, "melanoma")
    assert len(prompts) == 8
    assert prompts[0] == "This is a skin image of melanoma"
    assert prompts[4] == "melanoma, a skin disorder, is shown in this image."
    assert prompts[7] == "This image depicts melanoma, a type of skin cancer."
    # Both placeholder styles, and a bare string as one template.
    assert render(["a {} b", "{c}!"], "x") == ["a x b", "x!"]
    assert render("photo of {c}", "acne") == ["photo of acne"]
    # Braces inside the class name are not re-interpreted.
    assert render(["{c}"], "a {b}") == ["a {b}"]


def test_load_templates(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(
        "# my templates\n\nA photo of {c}.\n   {} on skin   \n# trailing comment\n",
        encoding="utf-8",
    )
    templates = load_templates(path)
    assert templates == ("A photo of {c}.", "{} on skin")
    assert render(templates, "wart") == ["A photo of wart.", "wart on skin"]


@pytest.mark.parametrize(
    "body,line",
    [
        ("A photo of {c}.\nno placeholder here\n", 2),
        ("# c\n{c} ok\n\nbad {name}\n", 4),
        ("{c} unbalanced {\n", 1),
    ],
)
def test_load_templates_bad_line(tmp_path, body, line):
    path = tmp_path / "bad.txt"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_templates(path)
    assert str(path) in str(info.value)
    assert f"line {line}" in str(info.value)


def test_load_templates_empty_or_missing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no templates"):
        load_templates(empty)
    with pytest.raises(DataError, match="not found"):
        load_templates(tmp_path / "missing.txt")


# --------------------------------------------------------------------------
# load_classnames
# --------------------------------------------------------------------------


def test_load_classnames_string():
    assert load_classnames("disease1, disease2,disease3") == ("disease1", "disease2", "disease3")
    assert load_classnames(["a", "b"]) == ("a", "b")
    # Longer than any file name: must be parsed as a list, not crash in stat().
    snu = BENCHMARKS["SNU-134"].classnames
    assert load_classnames(",".join(snu)) == snu


@pytest.mark.parametrize(
    "spec,match",
    [
        ("a,,b", "empty"),
        ("a,b,A", "duplicate"),
        ("melanoma", "neither an existing file"),
    ],
)
def test_load_classnames_string_errors(spec, match):
    with pytest.raises(DataError, match=match):
        load_classnames(spec)


def test_load_classnames_txt(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# custom\nvitiligo\n\n acne \nSJS/TEN\n", encoding="utf-8")
    assert load_classnames(path) == ("vitiligo", "acne", "SJS/TEN")
    assert load_classnames(str(path)) == ("vitiligo", "acne", "SJS/TEN")


def test_load_classnames_txt_duplicate_names_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("a\nb\n\nA\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_classnames(path)
    assert str(path) in str(info.value)
    assert "line 1" in str(info.value) and "line 4" in str(info.value)


def test_load_classnames_csv_class_table(tmp_path):
    # Same shape as the sample data's classes.csv: codes in `dx`, names in `diag`,
    # rows not in label order.
    path = tmp_path / "classes.csv"
    path.write_text(
        "\ufefflabel,dx,diag\n2,bcc,basal cell carcinoma\n0,mel,melanoma\n1,nv,melanocytic nevus\n",
        encoding="utf-8",
    )
    assert load_classnames(path) == ("melanoma", "melanocytic nevus", "basal cell carcinoma")


@pytest.mark.parametrize("column", ["classname", "class_name", "name", "Diag"])
def test_load_classnames_csv_name_columns(tmp_path, column):
    path = tmp_path / "c.csv"
    path.write_text(f"image_path,label,{column}\na.jpg,1,b\nb.jpg,0,a\nc.jpg,1,b\nd.jpg,2.0,c\n")
    assert load_classnames(path) == ("a", "b", "c")


def test_load_classnames_csv_gap_in_labels(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("label,diag\n0,a\n1,b\n3,d\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_classnames(path)
    assert str(path) in str(info.value)
    assert "missing 2" in str(info.value)


@pytest.mark.parametrize(
    "body,match",
    [
        # The reference toy CSV: label 1 is "disease2" on line 3, "disease1" on line 5.
        (
            "image_path,label,diag\nx.png,0,disease1\nx.png,1,disease2\n"
            "x.png,2,disease3\nx.png,1,disease1\n",
            "line 5: label 1",
        ),
        ("label,diag\n0,a\nx,b\n", "line 3: label 'x' is not an integer"),
        ("label,diag\n0,a\n-1,b\n", "line 3: label -1 is negative"),
        ("label,diag\n0,a\n1,\n", "line 3: empty class name"),
        ("label,diag\n0,a\n1,A\n", "duplicate class name"),
        ("label,diagnosis\n0,a\n1,b\n", "line 1: no class-name column"),
        ("id,diag\n0,a\n1,b\n", "line 1: no 'label' column"),
        ("label,diag\n", "no rows"),
        ("", "empty CSV"),
    ],
)
def test_load_classnames_csv_errors(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        load_classnames(path)
    assert str(path) in str(info.value)


def test_load_classnames_missing_path_object(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_classnames(tmp_path / "nope.txt")


# --------------------------------------------------------------------------
# Dataset codes -> reference labels
# --------------------------------------------------------------------------


def test_code_to_label_ham():
    # HAM10000 `dx` codes as in the sample data's classes.csv.
    expected = {
        "akiec": "actinic keratosis",
        "bcc": "basal cell carcinoma",
        "bkl": "benign keratosis",
        "df": "dermatofibroma",
        "mel": "melanoma",
        "nv": "nevus",
        "vasc": "vascular",
    }
    ham = BENCHMARKS["HAM-7"]
    for code, name in expected.items():
        assert ham.classnames[code_to_label("HAM-7", code)] == name
    assert code_to_label("ham", "NV") == 5


def test_code_to_label_pad():
    # PAD-UFES-20 `diagnostic` codes; the sample orders them ACK..SEK (0..5),
    # the reference benchmark NEV, BCC, ACK, SEK, SCC, MEL.
    assert [code_to_label("pad", c) for c in ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]] == [
        2, 1, 5, 0, 4, 3,
    ]
    pad = BENCHMARKS["PAD-6"]
    assert pad.classnames[code_to_label(pad, "sek")] == "seborrheic keratosis"


def test_code_to_label_class_names_and_ph2():
    assert code_to_label("SD-128", "Xerosis") == 127
    assert code_to_label("isic2020", "malignant") == 1
    assert code_to_label("ph2", "common nevus") == 0
    assert code_to_label("ph2", "atypical nevus") == 0
    assert code_to_label("ph2", "melanoma") == 1
    assert code_to_label("pad", "squamous cell carcinoma") == 4


def test_code_to_label_unknown():
    with pytest.raises(DataError, match="unknown HAM-7 code 'xyz'.*akiec"):
        code_to_label("ham", "xyz")
    with pytest.raises(DataError, match="SNU-134"):
        code_to_label("snu", "nv")
    with pytest.raises(DataError, match="unknown zero-shot benchmark"):
        code_to_label("nope", "nv")
