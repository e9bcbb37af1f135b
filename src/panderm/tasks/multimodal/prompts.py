"""Patient metadata → text, for the multimodal task's text-encoder metadata path.

The three sentence builders reproduce the reference's prompts character for character
(docs/REFERENCE.md): a model fine-tuned on the reference's sentences sees exactly the
same text here. The reference's quirks are kept on purpose and marked "reference quirk"
below; changing any of them changes the tokens the text encoder sees.

A row is anything with `.get(column)`: a `dict` or a pandas `Series` (one CSV row).
A column that is absent, `None` or NaN counts as missing.

`one_hot_metadata` is the other metadata path (metadata on, without a text encoder): a
float vector per row, with the vocabulary learnt on the train split and applied to the
others.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd

from ...data.tables import _rows
from ...errors import DataError
from .meta_vocab import (  # noqa: F401  (the one-hot path; its names stay importable from here)
    MetaColumn,
    MetaVocab,
    _present,
    fit_metadata_vocab,
    one_hot_metadata,
)

NO_METADATA = "This is a patient with a skin lesion."


# -- small helpers (`_present` is shared with the one-hot path, in meta_vocab.py) -----------

def _is_true(value: Any) -> bool:
    """The reference's lesion-flag test: `str(x).upper() == 'TRUE'` ('UNK' and False are not)."""
    return _present(value) and str(value).upper() == "TRUE"


def _truthy(value: Any) -> bool:
    """The reference's risk-factor test: `pd.notna(x) and x`, i.e. plain Python truthiness.

    Reference quirk: unlike `_is_true`, a *string* "False" or "UNK" is truthy. PAD-UFES-20's
    history columns parse as booleans, so this only bites when such a column holds text.
    """
    return _present(value) and bool(value)


def _number(value: Any, column: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"column {column!r}: {value!r} is not a number") from None


def _get(row: Mapping | pd.Series, column: str) -> Any:
    return row.get(column)


# -- Derm7pt -----------------------------------------------------------------------------

# The only two locations the reference rewrites; every other value is used as written.
DERM7PT_LOCATIONS = {"head neck": "head and neck", "genital areas": "genital area"}


def derm7pt_prompt(row: Mapping | pd.Series) -> str:
    """`This is a {sex} {elevation} lesion on {location}.` from Derm7pt's meta.csv fields.

    >>> derm7pt_prompt({"sex": "female", "elevation": "palpable", "location": "back"})
    'This is a female palpable lesion on back.'

    Reference quirks kept: no article before the location ("on back"), and a row with only
    some fields gives ungrammatical text ("This is a on back.", "This is a female.").
    """
    parts = []
    sex = _get(row, "sex")
    if _present(sex):
        parts.append(f"{sex}")
    elevation = _get(row, "elevation")
    if _present(elevation):
        parts.append(f"{elevation} lesion")
    location = _get(row, "location")
    if _present(location):
        parts.append(f"on {DERM7PT_LOCATIONS.get(location, location)}")
    if not parts:
        return NO_METADATA
    return f"This is a {' '.join(parts)}."


# -- MILK-11 -----------------------------------------------------------------------------

MILK_SITES = {
    "head_neck_face": "head, neck, and face",
    "upper_extremity": "upper extremity",
    "lower_extremity": "lower extremity",
    "genital": "genital area",
}  # other sites (trunk, hand, foot, ...) pass through unchanged

# MONET concept columns → wording, in the order the reference lists them.
MONET_CONCEPTS = (
    ("ulceration_crust", "ulceration crust"),
    ("vasculature_vessels", "vasculature vessels"),
    ("erythema", "erythema"),
    ("pigmented", "pigmentation"),
)


def milk_age(age: Any) -> str | None:
    """MILK age bucket: newborn / infant ≤2 / child ≤12 / adolescent ≤17 / adult ≤64 / elderly.

    Reference quirk: the bucket is chosen on the exact age but the number printed is
    `int(age)` (truncated), so 2.5 gives "2-year-old child" and 0.5 "0-year-old infant".
    """
    if not _present(age):
        return None
    age = _number(age, "age")
    years = int(age)
    if age == 0:
        return "newborn"
    if age <= 2:
        return f"{years}-year-old infant"
    if age <= 12:
        return f"{years}-year-old child"
    if age <= 17:
        return f"{years}-year-old adolescent"
    if age <= 64:
        return f"{years}-year-old adult"
    return f"{years}-year-old elderly"


def milk_sex(sex: Any) -> str | None:
    """`m` → male, `f` → female (any case); any other value passes through unchanged."""
    if not _present(sex):
        return None
    text = str(sex)
    return {"m": "male", "f": "female"}.get(text.lower(), text)


def _milk_person(age_desc: str | None, sex_desc: str | None) -> str | None:
    if age_desc and sex_desc:
        # Reference rule, a substring test ("male" is also in "female"): for male/female the
        # sex replaces "adult" and joins "elderly"; infants, children and adolescents lose it.
        if "male" in sex_desc or "female" in sex_desc:
            return age_desc.replace("adult", sex_desc).replace("elderly", f"{sex_desc} elderly patient")
        return f"{age_desc} {sex_desc}"  # an unmapped sex value is appended as written
    if age_desc:
        return age_desc
    if sex_desc:
        return f"{sex_desc} patient"
    return None


def _monet_flag(value: Any) -> bool:
    if value is pd.NA:  # pandas' nullable missing value has no truth value; the reference never saw it
        return False
    return bool(value)


def _monet_suffix(row: Mapping | pd.Series) -> str:
    # Reference quirk: concepts are tested by plain truthiness, so NaN (and the string
    # "False") count as present; only False / 0 / None / "" / missing columns do not.
    found = [words for col, words in MONET_CONCEPTS if _monet_flag(_get(row, col))]
    if not found:
        return ""
    if len(found) == 1:
        return f" {found[0]} is likely present on the lesion."
    if len(found) == 2:
        return f" {found[0]} and {found[1]} are likely present on the lesion."
    return f" {', '.join(found[:-1])}, and {found[-1]} are likely present on the lesion."


def milk_prompt(row: Mapping | pd.Series, monet: bool = False) -> str:
    """`This is a {age/sex} with a lesion on the {site}.` from MILK-11's `age`, `sex`, `site`.

    >>> milk_prompt({"age": 45, "sex": "m", "site": "head_neck_face"})
    'This is a 45-year-old male with a lesion on the head, neck, and face.'

    With `monet=True` the reference's MONET-concept sentence is appended. Note the reference
    MILK script does not use metadata at all (docs/REFERENCE.md).
    """
    parts = []
    person = _milk_person(milk_age(_get(row, "age")), milk_sex(_get(row, "sex")))
    if person:
        parts.append(person)
    site = _get(row, "site")
    site = MILK_SITES.get(site, site) if _present(site) else None
    parts.append(f"with a lesion on the {site}" if site else "with a skin lesion")
    text = "This is a " + " ".join(parts) + "."
    # The reference's clean-up, applied once each, in this order.
    text = text.replace("  ", " ").replace("a a ", "a ")
    if monet:
        text += _monet_suffix(row)
    return text


# -- PAD-UFES-20 -------------------------------------------------------------------------

PAD_META_COLUMNS = (
    "smoke", "drink", "age", "pesticide", "gender", "skin_cancer_history", "cancer_history",
    "fitspatrick", "region", "diameter_1", "diameter_2", "itch", "grew", "hurt", "changed",
    "bleed", "elevation",
)  # the 17 columns, in the reference's order (the spelling "fitspatrick" is PAD-UFES-20's)


def pad_patient(age: Any, gender: Any) -> str:
    """`{a}-year-old male`, `{a}-year-old elderly male patient`, `male patient`, `patient`, ...

    Unlike MILK, the age is truncated *before* bucketing (64.9 → 64 → adult), there is no
    newborn/infant bucket, and a gender other than MALE/FEMALE is dropped.
    """
    age_str = ""
    if _present(age):
        years = int(_number(age, "age"))
        if years <= 12:
            age_str = f"{years}-year-old child"
        elif years <= 17:
            age_str = f"{years}-year-old adolescent"
        elif years <= 64:
            age_str = f"{years}-year-old adult"
        else:
            age_str = f"{years}-year-old elderly patient"
    gender_str = ""
    if _present(gender):
        gender_str = {"MALE": "male", "FEMALE": "female"}.get(str(gender).upper(), "")
    if age_str and gender_str:
        if "patient" in age_str:  # elderly
            return age_str.replace("patient", f"{gender_str} patient")
        # adult → the gender; children and adolescents lose it (the reference's rule)
        return age_str.replace("adult", gender_str)
    if age_str:
        return age_str
    if gender_str:
        return f"{gender_str} patient"
    return "patient"


def _pad_diameter(row: Mapping | pd.Series) -> str | None:
    d1, d2 = _get(row, "diameter_1"), _get(row, "diameter_2")
    if not (_present(d1) or _present(d2)):
        return None
    d1 = _diameter(d1) if _present(d1) else 0
    d2 = _diameter(d2) if _present(d2) else 0
    # Python's max keeps the value's own type, so a float column prints "12.0mm" (as in the
    # reference's example) and an int column "12mm".
    largest = max(d1, d2) if d1 > 0 or d2 > 0 else 0
    return f"{largest}mm" if largest > 0 else None


def _diameter(value: Any) -> Any:
    # Numbers are used as they are (their repr is part of the text); numeric strings, which
    # the reference could not compare with 0, are read as floats.
    return _number(value, "diameter") if isinstance(value, str) else value


def pad_characteristics(row: Mapping | pd.Series) -> list[str]:
    """Size, "elevated", symptoms (itchy/painful/bleeding), changes (growing/changing)."""
    out = []
    size = _pad_diameter(row)
    if size:
        out.append(size)
    if _is_true(_get(row, "elevation")):
        out.append("elevated")
    symptoms = [word for col, word in (("itch", "itchy"), ("hurt", "painful"), ("bleed", "bleeding"))
                if _is_true(_get(row, col))]
    if symptoms:
        out.append(" and ".join(symptoms))
    changes = [word for col, word in (("grew", "growing"), ("changed", "changing")) if _is_true(_get(row, col))]
    if changes:
        out.append(" and ".join(changes))
    return out


def pad_risk_factors(row: Mapping | pd.Series) -> list[str]:
    """Up to four groups: lifestyle, family history, pesticide, Fitzpatrick type."""
    groups = []
    lifestyle = [w for col, w in (("smoke", "smoking history"), ("drink", "alcohol consumption"))
                 if _truthy(_get(row, col))]
    if lifestyle:
        groups.append(" and ".join(lifestyle))
    family = [w for col, w in (("skin_cancer_history", "family history of skin cancer"),
                               ("cancer_history", "family history of cancer")) if _truthy(_get(row, col))]
    if family:
        groups.append(" and ".join(family))
    if _truthy(_get(row, "pesticide")):
        groups.append("pesticide exposure")
    fitz = _get(row, "fitspatrick")
    if _present(fitz):
        groups.append(f"Fitzpatrick skin type {int(_number(fitz, 'fitspatrick'))}")
    return groups


def pad_prompt(row: Mapping | pd.Series) -> str:
    """`This is a {patient} with a {characteristics} lesion on the {region}[ and {risk factors}].`

    >>> pad_prompt({"age": 55, "gender": "MALE", "region": "FACE", "diameter_1": 12.0,
    ...             "itch": "True", "smoke": True})
    'This is a 55-year-old male with a 12.0mm, itchy lesion on the face and smoking history.'

    Reference quirk: the risk factors are appended only when there are at most two groups;
    a patient with three or four (e.g. family history + pesticide + skin type) gets none.
    """
    patient = pad_patient(_get(row, "age"), _get(row, "gender"))
    region = _get(row, "region")
    region = str(region).lower() if _present(region) else ""
    lesion = f"lesion on the {region}" if region else "skin lesion"
    characteristics = pad_characteristics(row)
    if characteristics:
        lesion = f"{', '.join(characteristics)} {lesion}"
    text = f"This is a {patient} with a {lesion}"
    risks = pad_risk_factors(row)
    if risks and len(risks) <= 2:
        text += f" and {' and '.join(risks)}"
    return text + "."


# -- registry ----------------------------------------------------------------------------

PromptBuilder = Callable[[Any], str]

PROMPT_BUILDERS: dict[str, PromptBuilder] = {
    "derm7pt": derm7pt_prompt,
    "milk11": milk_prompt,
    "pad-ufes-20": pad_prompt,
}

_ALIASES = {
    "derm7pt": "derm7pt", "derm-7pt": "derm7pt",
    "milk11": "milk11", "milk-11": "milk11", "milk": "milk11", "milk10k": "milk11",
    "pad-ufes-20": "pad-ufes-20", "pad-ufes20": "pad-ufes-20", "padufes20": "pad-ufes-20", "pad": "pad-ufes-20",
}


def canonical_name(name: str) -> str:
    """'PAD', 'pad_ufes_20', 'MILK-11', 'Derm7pt' → the registry's key."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise DataError(f"unknown multimodal dataset {name!r}; choose one of: {', '.join(PROMPT_BUILDERS)}")
    return _ALIASES[key]


def get_prompt_builder(name: str) -> PromptBuilder:
    return PROMPT_BUILDERS[canonical_name(name)]


def build_prompts(frame: pd.DataFrame, builder: PromptBuilder | str, source: str = "metadata") -> list[str]:
    """One sentence per row; a bad value is reported with its CSV row number."""
    if isinstance(builder, str):
        builder = get_prompt_builder(builder)
    out = []
    for i in range(len(frame)):
        try:
            out.append(builder(frame.iloc[i]))
        except DataError as exc:
            raise DataError(f"{source}: row {_rows([i])}: {exc}") from None
    return out


__all__ = [
    "NO_METADATA", "DERM7PT_LOCATIONS", "MILK_SITES", "MONET_CONCEPTS", "PAD_META_COLUMNS",
    "derm7pt_prompt", "milk_prompt", "milk_age", "milk_sex", "pad_prompt", "pad_patient",
    "pad_characteristics", "pad_risk_factors", "PROMPT_BUILDERS", "canonical_name",
    "get_prompt_builder", "build_prompts", "MetaColumn", "MetaVocab", "fit_metadata_vocab",
    "one_hot_metadata",
]
