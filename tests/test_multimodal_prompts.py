"""Metadata → sentence builders (exact strings of the reference's builders) and one-hot metadata.

Every expected sentence below was written by hand from the spec's rules, not produced by
the code under test.
"""
import math

import numpy as np
import pandas as pd
import pytest

from panderm.errors import DataError
from panderm.tasks.multimodal.prompts import (
    PROMPT_BUILDERS,
    MetaVocab,
    build_prompts,
    derm7pt_prompt,
    get_prompt_builder,
    milk_prompt,
    one_hot_metadata,
    pad_patient,
    pad_prompt,
)

NAN = float("nan")


# -- Derm7pt -----------------------------------------------------------------------------

@pytest.mark.parametrize("row, expected", [
    ({"sex": "female", "elevation": "palpable", "location": "back"}, "This is a female palpable lesion on back."),
    ({"sex": "male", "elevation": "flat", "location": "head neck"}, "This is a male flat lesion on head and neck."),
    ({"sex": "female", "elevation": "nodular", "location": "genital areas"},
     "This is a female nodular lesion on genital area."),
    ({"sex": "male", "elevation": "flat", "location": "lower limbs"}, "This is a male flat lesion on lower limbs."),
    ({"sex": NAN, "elevation": "nodular", "location": "acral"}, "This is a nodular lesion on acral."),
    ({"sex": "male", "elevation": None, "location": "chest"}, "This is a male on chest."),
    # reference quirks: fragments are joined as they are
    ({"sex": NAN, "elevation": NAN, "location": "back"}, "This is a on back."),
    ({"sex": "female"}, "This is a female."),
    ({"sex": NAN, "elevation": NAN, "location": NAN}, "This is a patient with a skin lesion."),
    ({}, "This is a patient with a skin lesion."),
])
def test_derm7pt_prompt(row, expected):
    assert derm7pt_prompt(row) == expected
    assert derm7pt_prompt(pd.Series(row, dtype=object)) == expected


# -- MILK --------------------------------------------------------------------------------

@pytest.mark.parametrize("age, sex, expected_person", [
    (0, "m", "newborn"),               # sex dropped for newborns
    (0, NAN, "newborn"),
    (1, "f", "1-year-old infant"),
    (2, "m", "2-year-old infant"),     # ≤2 boundary
    (2.5, "m", "2-year-old child"),    # bucket on 2.5, number printed as int(2.5)
    (3, "m", "3-year-old child"),
    (12, "f", "12-year-old child"),    # ≤12 boundary
    (13, "f", "13-year-old adolescent"),
    (17, "m", "17-year-old adolescent"),  # ≤17 boundary
    (18, "f", "18-year-old female"),   # adult → the sex
    (64, "m", "64-year-old male"),     # ≤64 boundary
    (64.5, "m", "64-year-old male elderly patient"),  # 64.5 > 64: elderly, printed 64
    (65, "f", "65-year-old female elderly patient"),
    (70, NAN, "70-year-old elderly"),
    (45, NAN, "45-year-old adult"),
    (NAN, "m", "male patient"),
    (NAN, "F", "female patient"),     # case-insensitive
    (45, "M", "45-year-old male"),
    (45, "x", "45-year-old adult x"),  # unmapped sex appended as written
    (8, "x", "8-year-old child x"),
    (NAN, "other", "other patient"),
])
def test_milk_age_and_sex(age, sex, expected_person):
    row = {"age": age, "sex": sex, "site": "trunk"}
    assert milk_prompt(row) == f"This is a {expected_person} with a lesion on the trunk."


@pytest.mark.parametrize("site, expected", [
    ("head_neck_face", "with a lesion on the head, neck, and face."),
    ("upper_extremity", "with a lesion on the upper extremity."),
    ("lower_extremity", "with a lesion on the lower extremity."),
    ("genital", "with a lesion on the genital area."),
    ("hand", "with a lesion on the hand."),
    ("palms_soles", "with a lesion on the palms_soles."),  # unmapped: passes through
    (NAN, "with a skin lesion."),
    ("", "with a skin lesion."),
])
def test_milk_sites(site, expected):
    assert milk_prompt({"age": 30, "sex": "f", "site": site}) == f"This is a 30-year-old female {expected}"


def test_milk_no_age_no_sex_keeps_reference_text():
    assert milk_prompt({"age": NAN, "sex": NAN, "site": "foot"}) == "This is a with a lesion on the foot."
    assert milk_prompt({}) == "This is a with a skin lesion."


def test_milk_clean_up_runs_once():
    # "a a " → "a " and "  " → " ", each a single non-overlapping pass (so 3 spaces leave 2)
    assert milk_prompt({"sex": "a", "site": "trunk"}) == "This is a patient with a lesion on the trunk."
    assert milk_prompt({"age": 45, "sex": " ", "site": "trunk"}) == (
        "This is a 45-year-old adult  with a lesion on the trunk.")


def test_milk_monet_suffix():
    base = {"age": 45, "sex": "m", "site": "trunk"}
    stem = "This is a 45-year-old male with a lesion on the trunk."
    one = dict(base, ulceration_crust=1, vasculature_vessels=0, erythema=False, pigmented=0)
    two = dict(base, ulceration_crust=0, vasculature_vessels=True, erythema=0, pigmented=1)
    three = dict(base, ulceration_crust=1, vasculature_vessels=1, erythema=1, pigmented=0)
    four = dict(base, ulceration_crust=1, vasculature_vessels=1, erythema=1, pigmented=1)
    assert milk_prompt(one) == stem  # off unless asked for
    assert milk_prompt(one, monet=True) == stem + " ulceration crust is likely present on the lesion."
    assert milk_prompt(two, monet=True) == (
        stem + " vasculature vessels and pigmentation are likely present on the lesion.")
    assert milk_prompt(three, monet=True) == (
        stem + " ulceration crust, vasculature vessels, and erythema are likely present on the lesion.")
    assert milk_prompt(four, monet=True) == (
        stem + " ulceration crust, vasculature vessels, erythema, and pigmentation are likely present on the lesion.")
    assert milk_prompt(base, monet=True) == stem


def test_milk_bad_age_is_a_data_error():
    with pytest.raises(DataError, match="age.*'forty'"):
        milk_prompt({"age": "forty", "sex": "m"})


# -- PAD-UFES-20 -------------------------------------------------------------------------

@pytest.mark.parametrize("age, gender, expected", [
    (12, "MALE", "12-year-old child"),          # gender dropped for children
    (13, "FEMALE", "13-year-old adolescent"),
    (17, "MALE", "17-year-old adolescent"),
    (18, "MALE", "18-year-old male"),
    (64, "FEMALE", "64-year-old female"),
    (64.9, "FEMALE", "64-year-old female"),     # truncated before bucketing
    (65, "MALE", "65-year-old elderly male patient"),
    (65, NAN, "65-year-old elderly patient"),
    (40, NAN, "40-year-old adult"),
    (5, NAN, "5-year-old child"),
    (NAN, "FEMALE", "female patient"),
    (NAN, "male", "male patient"),              # compared upper-cased
    (40, "UNK", "40-year-old adult"),           # other genders dropped
    (NAN, NAN, "patient"),
])
def test_pad_patient(age, gender, expected):
    assert pad_patient(age, gender) == expected


def test_pad_spec_example():
    row = {"age": 55, "gender": "MALE", "region": "FACE", "diameter_1": 12.0, "diameter_2": 8.0,
           "elevation": True, "itch": "True", "hurt": "False", "bleed": True, "grew": "True", "changed": "UNK",
           "smoke": True, "drink": False, "pesticide": False, "skin_cancer_history": False,
           "cancer_history": NAN, "fitspatrick": 2.0}
    assert pad_prompt(row) == ("This is a 55-year-old male with a 12.0mm, elevated, itchy and bleeding, growing "
                               "lesion on the face and smoking history and Fitzpatrick skin type 2.")


@pytest.mark.parametrize("extra, expected_tail", [
    ({}, "."),
    ({"fitspatrick": 3.0}, " and Fitzpatrick skin type 3."),
    ({"smoke": True, "drink": True, "fitspatrick": 3.0},
     " and smoking history and alcohol consumption and Fitzpatrick skin type 3."),
    ({"skin_cancer_history": True, "cancer_history": True},
     " and family history of skin cancer and family history of cancer."),
    ({"pesticide": True, "cancer_history": True}, " and family history of cancer and pesticide exposure."),
    # three or four groups: the reference appends none of them
    ({"smoke": True, "pesticide": True, "fitspatrick": 3.0}, "."),
    ({"drink": True, "cancer_history": True, "pesticide": True, "fitspatrick": 1.0}, "."),
    ({"smoke": False, "drink": NAN, "pesticide": False, "fitspatrick": NAN}, "."),
    # reference quirk: risk factors use truthiness, so the *string* "False" counts
    ({"smoke": "False", "fitspatrick": 2.0}, " and smoking history and Fitzpatrick skin type 2."),
    ({"pesticide": "UNK"}, " and pesticide exposure."),
    ({"drink": "no", "skin_cancer_history": "False"},
     " and alcohol consumption and family history of skin cancer."),
])
def test_pad_risk_factor_rule(extra, expected_tail):
    row = {"age": 40, "gender": "FEMALE", "region": "BACK", **extra}
    assert pad_prompt(row) == "This is a 40-year-old female with a lesion on the back" + expected_tail


@pytest.mark.parametrize("extra, lesion", [
    ({"diameter_1": NAN, "diameter_2": 4.0}, "4.0mm lesion"),
    ({"diameter_1": 3.0, "diameter_2": NAN}, "3.0mm lesion"),
    ({"diameter_1": 0.0, "diameter_2": 0.0}, "lesion"),
    ({"diameter_1": 12, "diameter_2": 7}, "12mm lesion"),  # ints print as ints
    ({"elevation": "UNK", "itch": "UNK", "grew": "FALSE"}, "lesion"),
    ({"hurt": "true", "changed": True}, "painful, changing lesion"),
    ({"itch": True, "hurt": True, "bleed": True, "grew": True, "changed": True, "elevation": False},
     "itchy and painful and bleeding, growing and changing lesion"),
])
def test_pad_characteristics(extra, lesion):
    row = {"age": 30, "gender": "MALE", "region": "NOSE", **extra}
    assert pad_prompt(row) == f"This is a 30-year-old male with a {lesion} on the nose."


def test_pad_without_region_or_anything():
    assert pad_prompt({"age": 40, "gender": "FEMALE"}) == "This is a 40-year-old female with a skin lesion."
    assert pad_prompt({}) == "This is a patient with a skin lesion."
    assert pad_prompt({"region": "LIP", "itch": True}) == "This is a patient with a itchy lesion on the lip."


PAD_SAMPLE_EXPECTED = {
    # no history recorded: age only, no gender, no size, no risk factors
    "PAT_1006_53_716.png": "This is a 63-year-old adult with a lesion on the forearm.",
    # elderly male; family history x2 + pesticide + Fitzpatrick = 3 groups → none appended
    "PAT_108_162_526.png": "This is a 68-year-old elderly male patient with a 5.0mm, elevated, itchy, growing "
                           "lesion on the face.",
    # alcohol + family history of cancer + Fitzpatrick = 3 groups → none; UNK symptoms ignored
    "PAT_26_37_865.png": "This is a 47-year-old female with a 7.0mm, elevated lesion on the chest.",
    # only the Fitzpatrick group → appended
    "PAT_122_185_957.png": "This is a 79-year-old elderly female patient with a 14.0mm, elevated, itchy lesion "
                           "on the neck and Fitzpatrick skin type 1.",
    # adolescent: gender dropped; family history + Fitzpatrick = 2 groups → appended
    "PAT_839_1591_204.png": "This is a 13-year-old adolescent with a 4.0mm lesion on the face and family history "
                            "of skin cancer and family history of cancer and Fitzpatrick skin type 1.",
}


def test_pad_prompt_on_real_sample_rows(sample_dir):
    frame = pd.read_csv(sample_dir / "pad_ufes20_sample" / "pad_ufes20_sample.csv")
    for img_id, expected in PAD_SAMPLE_EXPECTED.items():
        row = frame[frame["img_id"] == img_id].iloc[0]
        assert pad_prompt(row) == expected, img_id
    # and through the frame-level helper, in row order
    sub = frame[frame["img_id"].isin(PAD_SAMPLE_EXPECTED)].reset_index(drop=True)
    assert build_prompts(sub, "PAD") == [PAD_SAMPLE_EXPECTED[i] for i in sub["img_id"]]


def test_registry():
    assert set(PROMPT_BUILDERS) == {"derm7pt", "milk11", "pad-ufes-20"}
    assert get_prompt_builder("PAD_UFES_20") is pad_prompt
    assert get_prompt_builder("MILK-11") is milk_prompt
    assert get_prompt_builder("Derm7pt") is derm7pt_prompt
    with pytest.raises(DataError, match="unknown multimodal dataset 'isic'"):
        get_prompt_builder("isic")


def test_build_prompts_names_the_row():
    frame = pd.DataFrame({"age": [30, "old"], "sex": ["m", "f"], "site": ["trunk", "hand"]})
    with pytest.raises(DataError, match=r"train\.csv: row 3: column 'age': 'old'"):
        build_prompts(frame, "milk11", "train.csv")


# -- one-hot metadata --------------------------------------------------------------------

def _train_test():
    train = pd.DataFrame({"age": [20.0, 40.0, 60.0], "sex": ["m", "f", "m"], "site": ["trunk", "hand", NAN]})
    test = pd.DataFrame({"age": [60.0, NAN], "sex": ["f", "x"], "site": ["foot", "trunk"]})
    return train, test


def test_one_hot_vocab_learnt_on_train_applied_to_test():
    train, test = _train_test()
    x_train, vocab = one_hot_metadata(train, ["age", "sex", "site"])
    assert vocab.feature_names == ["age", "sex=f", "sex=m", "site=hand", "site=trunk"]
    z = 20.0 / math.sqrt(800.0 / 3.0)  # population std of 20, 40, 60
    assert x_train.dtype == np.float32
    np.testing.assert_allclose(x_train, [[-z, 0, 1, 0, 1],
                                         [0, 1, 0, 1, 0],
                                         [z, 0, 1, 0, 0]], rtol=1e-6, atol=1e-6)
    x_test, same = one_hot_metadata(test, ["age", "sex", "site"], vocab)
    assert same is vocab
    # 'foot' and sex 'x' never seen in train → all zeros; missing age → 0 (the train mean)
    np.testing.assert_allclose(x_test, [[z, 1, 0, 0, 0],
                                        [0, 0, 0, 0, 1]], rtol=1e-6, atol=1e-7)
    # the vocabulary survives a JSON round trip
    again, _ = one_hot_metadata(test, None, MetaVocab.from_dict(vocab.to_dict()))
    np.testing.assert_array_equal(again, x_test)


def test_one_hot_booleans_and_text_match_across_splits():
    # PAD's flags parse as bool in one split and as text in another (when 'UNK' appears)
    train = pd.DataFrame({"itch": [True, False, True]})
    test = pd.DataFrame({"itch": ["True", "UNK", "False"]})
    _, vocab = one_hot_metadata(train, ["itch"])
    x, _ = one_hot_metadata(test, None, vocab)
    np.testing.assert_array_equal(x, [[0, 1], [0, 0], [1, 0]])


def test_one_hot_constant_and_empty_columns():
    frame = pd.DataFrame({"age": [50, 50], "flag": [NAN, NAN]})
    x, vocab = one_hot_metadata(frame, ["age", "flag"])
    assert vocab.dim == 1 + 1 and np.isfinite(x).all() and not x.any()
    x0, vocab0 = one_hot_metadata(frame, [])
    assert x0.shape == (2, 0) and vocab0.dim == 0


def test_one_hot_errors():
    train, test = _train_test()
    with pytest.raises(DataError, match="metadata column\\(s\\) 'region' not found"):
        one_hot_metadata(train, ["age", "region"], source="train.csv")
    _, vocab = one_hot_metadata(train, ["age", "sex"])
    bad = test.assign(age=["60", "unknown"])
    with pytest.raises(DataError, match="'age' is numeric in the train split but holds 'unknown' in row\\(s\\) 3"):
        one_hot_metadata(bad, None, vocab, source="test.csv")
    with pytest.raises(DataError, match="differ from the vocabulary"):
        one_hot_metadata(test, ["sex", "age"], vocab)
