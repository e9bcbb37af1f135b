"""Zero-shot classification benchmarks of the reference toolkit.

One `Benchmark` record per dataset evaluated by PanDerm-2 / DermFM-Zero
(``src/main.py --zeroshot-eval*``): the class names in label order (the CSV
``label`` column is an index into this tuple, so the order is part of the
benchmark), the CSV path the reference script uses, the folder its per-sample
CSV goes to, the metrics it computes and the key names it logs them under, and
the metric the published README table reports.

We compute metrics under our own generic names (`ACCURACY`, `WEIGHTED_F1`,
`TOP3_ACCURACY`, `AUROC`); `Benchmark.reference_results` renames such a dict to
the reference key names (``zeroshot-pad-acc`` ...) so logs can be compared 1:1.

Also here:
- `get_benchmark` — lookup by case-insensitive name or alias;
- `README_ORDER` / `readme_average` — the published zero-shot table's columns
  and its "Average" (a plain mean mixing ACC and AUROC, as the README does);
- `load_classnames` — a user class list for a custom zero-shot run (the
  reference makes users edit ``customized_CLASSNAMES`` in source instead);
- `code_to_label` — dataset abbreviations (HAM ``nv``, PAD ``NEV``) to
  reference label indices, for building benchmark CSVs from raw metadata.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from panderm.errors import DataError

__all__ = [
    "ACCURACY",
    "WEIGHTED_F1",
    "TOP3_ACCURACY",
    "AUROC",
    "METRIC_NAMES",
    "ZERO_SHOT_DIR",
    "HAM_CLASSNAMES",
    "PAD_CLASSNAMES",
    "SNU_134_CLASSNAMES",
    "SD_128_CLASSNAMES",
    "DAFFODIL_5_CLASSNAMES",
    "PH2_CLASSNAMES",
    "ISIC20_CLASSNAMES",
    "DERMNET_CLASSNAMES",
    "Benchmark",
    "BENCHMARKS",
    "README_ORDER",
    "get_benchmark",
    "readme_average",
    "load_classnames",
    "code_to_label",
]

# --------------------------------------------------------------------------
# Our generic metric names (keys of the metrics dict the evaluators produce).
# --------------------------------------------------------------------------
ACCURACY = "accuracy"  # sklearn accuracy_score; the README's "top-1" / "ACC"
WEIGHTED_F1 = "weighted_f1"  # f1_score(average="weighted")
TOP3_ACCURACY = "top3_accuracy"  # top_k_accuracy_score(k=3)
AUROC = "auroc"  # OvR macro on one-hot; equals binary AUROC for K=2
METRIC_NAMES: tuple[str, ...] = (ACCURACY, WEIGHTED_F1, TOP3_ACCURACY, AUROC)

# How the README table labels each metric.
_README_LABELS = {ACCURACY: "ACC", AUROC: "AUROC"}

# Where the reference script expects the benchmark CSVs, relative to the data
# root (the reference repo root).
ZERO_SHOT_DIR = "data/zero-shot-classification"

# --------------------------------------------------------------------------
# Class names, label index = position. Transcribed verbatim from the reference
# `src/open_clip/zero_shot_metadata.py`, odd spellings included ("inflammed
# cyst", "abusemisuse", no space before "(" in SD-128): the text encoder sees
# these exact strings, so "fixing" them would change published numbers.
# --------------------------------------------------------------------------
HAM_CLASSNAMES: tuple[str, ...] = (
    "actinic keratosis",  # 0
    "basal cell carcinoma",  # 1
    "benign keratosis",  # 2
    "dermatofibroma",  # 3
    "melanoma",  # 4
    "nevus",  # 5
    "vascular",  # 6
)

PAD_CLASSNAMES: tuple[str, ...] = (
    "nevus",  # 0
    "basal cell carcinoma",  # 1
    "actinic keratosis",  # 2
    "seborrheic keratosis",  # 3
    "squamous cell carcinoma",  # 4
    "melanoma",  # 5
)

# PH2 and ISIC2020 share one binary list.
PH2_CLASSNAMES: tuple[str, ...] = ("benign", "malignant")
ISIC20_CLASSNAMES: tuple[str, ...] = ("benign", "malignant")

DAFFODIL_5_CLASSNAMES: tuple[str, ...] = (
    "vitiligo",  # 0
    "acne",  # 1
    "SJS/TEN",  # 2
    "hyperpigmentation",  # 3
    "nail psoriasis",  # 4
)

# SNU-134 (Korea, clinical), zero_shot_metadata.py:8.
SNU_134_CLASSNAMES: tuple[str, ...] = (
    "epidermal cyst",  # 0
    "paronychia",  # 1
    "ota nevus",  # 2
    "condyloma",  # 3
    "keloid",  # 4
    "alopecia areata",  # 5
    "cellulitis",  # 6
    "pyogenic granuloma",  # 7
    "fifth disease",  # 8
    "dermatofibroma",  # 9
    "perioral dermatitis",  # 10
    "squamous cell carcinoma",  # 11
    "wart",  # 12
    "riehl melanosis",  # 13
    "urticaria pigmentosa",  # 14
    "furuncle",  # 15
    "bullous disease",  # 16
    "herpes simplex",  # 17
    "tinea faciale",  # 18
    "lupus erythematosus",  # 19
    "striae distensae",  # 20
    "hemangioma",  # 21
    "herpes zoster",  # 22
    "malignant melanoma",  # 23
    "pityriasis lichenoides et varioliformis acuta",  # 24
    "pompholyx",  # 25
    "nevus spilus",  # 26
    "juvenile xanthogranuloma",  # 27
    "actinic keratosis",  # 28
    "nummular eczema",  # 29
    "folliculitis",  # 30
    "xerotic eczema",  # 31
    "subungual hematoma",  # 32
    "androgenic alopecia",  # 33
    "prurigo nodularis",  # 34
    "hand eczema",  # 35
    "basal cell carcinoma",  # 36
    "melanocytic nevus",  # 37
    "lymphangioma",  # 38
    "seborrheic keratosis",  # 39
    "hypertrophic scar",  # 40
    "idiopathic guttate hypomelanosis",  # 41
    "keratoderma",  # 42
    "erythema ab igne",  # 43
    "lichen striatus",  # 44
    "ingrowing nail",  # 45
    "varicella",  # 46
    "cafe au lait macule",  # 47
    "poikiloderma",  # 48
    "morphea",  # 49
    "eczema herpeticum",  # 50
    "milia",  # 51
    "nail dystrophy",  # 52
    "lichen nitidus",  # 53
    "acanthosis nigricans",  # 54
    "angular cheilitis",  # 55
    "confluent and reticulated papillomatosis",  # 56
    "syringoma",  # 57
    "mucous cyst",  # 58
    "becker nevus",  # 59
    "tinea versicolor",  # 60
    "psoriasis",  # 61
    "port wine stain",  # 62
    "neurofibromatosis",  # 63
    "tinea cruris",  # 64
    "xanthelasma",  # 65
    "molluscum contagiosum",  # 66
    "erythema annulare centrifugum",  # 67
    "onychomycosis",  # 68
    "scabies",  # 69
    "neurofibroma",  # 70
    "mucosal melanotic macule",  # 71
    "rosacea",  # 72
    "keratoacanthoma",  # 73
    "angiofibroma",  # 74
    "melanonychia",  # 75
    "organoid nevus",  # 76
    "nevus depigmentosus",  # 77
    "epidermal nevus",  # 78
    "tinea corporis",  # 79
    "drug eruption",  # 80
    "freckle",  # 81
    "vitiligo",  # 82
    "poroma",  # 83
    "pityriasis alba",  # 84
    "viral exanthem",  # 85
    "blue nevus",  # 86
    "acne",  # 87
    "venous lake",  # 88
    "atopic dermatitis",  # 89
    "seborrheic dermatitis",  # 90
    "lichen planus",  # 91
    "exfoliative dermatitis",  # 92
    "melasma",  # 93
    "abscess",  # 94
    "acute generalized exanthematous pustulosis",  # 95
    "urticarial vasculitis",  # 96
    "vasculitis",  # 97
    "prurigo pigmentosa",  # 98
    "impetigo",  # 99
    "pityriasis lichenoides chronica",  # 100
    "bowen disease",  # 101
    "granuloma annulare",  # 102
    "amyloidosis",  # 103
    "urticaria",  # 104
    "keratosis pilaris",  # 105
    "livedo reticularis",  # 106
    "steatocystoma multiplex",  # 107
    "pityriasis rosea",  # 108
    "mucocele",  # 109
    "erythema multiforme",  # 110
    "sebaceous hyperplasia",  # 111
    "palmoplantar pustulosis",  # 112
    "porokeratosis",  # 113
    "lentigo",  # 114
    "erythema nodosum",  # 115
    "inflammed cyst",  # 116
    "staphylococcal scalded skin syndrome",  # 117
    "contact dermatitis",  # 118
    "verruca plana",  # 119
    "congenital nevus",  # 120
    "lichen simplex chronicus",  # 121
    "guttate psoriasis",  # 122
    "angiokeratoma",  # 123
    "tinea pedis",  # 124
    "insect bite",  # 125
    "pigmented progressive purpuric dermatosis",  # 126
    "pyoderma gangrenosum",  # 127
    "skin tag",  # 128
    "lichen amyloidosis",  # 129
    "abnormal",  # 130
    "onycholysis",  # 131
    "pustular psoriasis",  # 132
    "telangiectasia",  # 133
)

# SD-128 (multi-centre, clinical), zero_shot_metadata.py:9.
SD_128_CLASSNAMES: tuple[str, ...] = (
    "acne keloidalis nuchae",  # 0
    "acne vulgaris",  # 1
    "actinic solar damage(actinic keratosis)",  # 2
    "actinic solar damage(cutis rhomboidalis nuchae)",  # 3
    "actinic solar damage(pigmentation)",  # 4
    "actinic solar damage(solar elastosis)",  # 5
    "actinic solar damage(solar purpura)",  # 6
    "actinic solar damage(telangiectasia)",  # 7
    "allergic contact dermatitis",  # 8
    "alopecia areata",  # 9
    "androgenetic alopecia",  # 10
    "angioma",  # 11
    "angular cheilitis",  # 12
    "apocrine hydrocystoma",  # 13
    "basal cell carcinoma",  # 14
    "beau's lines",  # 15
    "benign keratosis",  # 16
    "blue nevus",  # 17
    "bowen's disease",  # 18
    "callus",  # 19
    "candidiasis",  # 20
    "cellulitis",  # 21
    "clubbing of fingers",  # 22
    "compound nevus",  # 23
    "congenital nevus",  # 24
    "crowe's sign",  # 25
    "cutaneous horn",  # 26
    "darier-white disease",  # 27
    "dermatofibroma",  # 28
    "dermatosis papulosa nigra",  # 29
    "desquamation",  # 30
    "digital fibroma",  # 31
    "dilated pore of winer",  # 32
    "disseminated actinic porokeratosis",  # 33
    "drug eruption",  # 34
    "dry skin eczema",  # 35
    "dyshidrosiform eczema",  # 36
    "dysplastic nevus",  # 37
    "eczema",  # 38
    "epidermal nevus",  # 39
    "epidermoid cyst",  # 40
    "erythema craquele",  # 41
    "erythema multiforme",  # 42
    "exfoliative erythroderma",  # 43
    "factitial dermatitis",  # 44
    "favre racouchot",  # 45
    "fibroma molle",  # 46
    "fixed drug eruption",  # 47
    "follicular mucinosis",  # 48
    "granulation tissue",  # 49
    "granuloma annulare",  # 50
    "guttate psoriasis",  # 51
    "halo nevus",  # 52
    "herpes simplex virus",  # 53
    "herpes zoster",  # 54
    "hidradenitis suppurativa",  # 55
    "hyperkeratosis palmaris et plantaris",  # 56
    "hypertrichosis",  # 57
    "ichthyosis",  # 58
    "infantile atopic dermatitis",  # 59
    "inverse psoriasis",  # 60
    "junction nevus",  # 61
    "keloid",  # 62
    "keratoacanthoma",  # 63
    "keratolysis exfoliativa of wende",  # 64
    "keratosis pilaris",  # 65
    "kerion",  # 66
    "koilonychia",  # 67
    "lentigo maligna melanoma",  # 68
    "leukocytoclastic vasculitis",  # 69
    "leukonychia",  # 70
    "lichen planus",  # 71
    "lichen sclerosis et atrophicus",  # 72
    "lichen simplex chronicus",  # 73
    "lipoma",  # 74
    "livedo reticularis",  # 75
    "lymphocytic infiltrate of jessner",  # 76
    "malignant melanoma",  # 77
    "median nail dystrophy",  # 78
    "metastatic carcinoma",  # 79
    "milia",  # 80
    "myxoid cyst",  # 81
    "nail dystrophy",  # 82
    "nail psoriasis",  # 83
    "neurodermatitis",  # 84
    "neurofibroma",  # 85
    "nevus incipiens",  # 86
    "nevus sebaceous of jadassohn",  # 87
    "nevus spilus",  # 88
    "nummular eczema",  # 89
    "onycholysis",  # 90
    "onychomycosis",  # 91
    "onychoschizia",  # 92
    "paronychia",  # 93
    "perioral dermatitis",  # 94
    "pitted keratolysis",  # 95
    "pityriasis rosea",  # 96
    "pityrosporum folliculitis",  # 97
    "pseudofolliculitis barbae",  # 98
    "pseudorhinophyma",  # 99
    "psoriasis",  # 100
    "pustular psoriasis",  # 101
    "pyogenic granuloma",  # 102
    "radiodermatitis",  # 103
    "rhinophyma",  # 104
    "rosacea",  # 105
    "scalp psoriasis",  # 106
    "scar",  # 107
    "sebaceous gland hyperplasia",  # 108
    "seborrheic dermatitis",  # 109
    "seborrheic keratosis",  # 110
    "skin tag",  # 111
    "stasis dermatitis",  # 112
    "stasis edema",  # 113
    "stasis ulcer",  # 114
    "steroid acne",  # 115
    "steroid use abusemisuse dermatitis",  # 116
    "striae",  # 117
    "syringoma",  # 118
    "tinea corporis",  # 119
    "tinea cruris",  # 120
    "tinea faciale",  # 121
    "tinea manus",  # 122
    "tinea pedis",  # 123
    "tinea versicolor",  # 124
    "ulcer",  # 125
    "verruca vulgaris",  # 126
    "xerosis",  # 127
)

# DermNet 23 categories, zero_shot_metadata.py:4 (its reference run crashes; see below).
DERMNET_CLASSNAMES: tuple[str, ...] = (
    "light diseases and disorders of pigmentation",  # 0
    "acne and rosacea photos",  # 1
    "warts molluscum and other viral infections",  # 2
    "seborrheic keratoses and other benign tumors",  # 3
    "cellulitis impetigo and other bacterial infections",  # 4
    "poison ivy photos and other contact dermatitis",  # 5
    "vasculitis photos",  # 6
    "urticaria hives",  # 7
    "melanoma skin cancer nevi and moles",  # 8
    "eczema photos",  # 9
    "herpes hpv and other stds photos",  # 10
    "scabies lyme disease and other infestations and bites",  # 11
    "tinea ringworm candidiasis and other fungal infections",  # 12
    "actinic keratosis basal cell carcinoma and other malignant lesions",  # 13
    "atopic dermatitis photos",  # 14
    "lupus and other connective tissue diseases",  # 15
    "psoriasis pictures lichen planus and related diseases",  # 16
    "nail fungus and other nail disease",  # 17
    "exanthems and drug eruptions",  # 18
    "hair loss photos alopecia and other hair diseases",  # 19
    "systemic disease",  # 20
    "vascular tumors",  # 21
    "bullous disease photos",  # 22
)

# --------------------------------------------------------------------------
# The benchmark record
# --------------------------------------------------------------------------
_METRIC_MODES = ("wf1+acc", "wf1+accs", "auroc+acc", "acc")


def _norm(name: str) -> str:
    """Lookup key: case-insensitive, ignoring '-', '_' and spaces (so "SD-128",
    "sd_128" and "sd128" are the same benchmark)."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


@dataclass(frozen=True)
class Benchmark:
    """One reference zero-shot benchmark.

    Attributes:
        name: canonical name, e.g. ``"PAD-6"``.
        flag: the reference ``src/main.py`` flag, e.g. ``"--zeroshot-eval1"``.
        classnames: class names; the CSV label is an index into this tuple.
        default_csv: CSV path relative to the data root, as the reference script.
        folder: the reference per-sample CSV folder (``<logs>/<folder>/<model>.csv``).
        metric_mode: the reference ``run(..., metric=...)`` mode.
        result_keys: ``(reference key, our metric name)`` pairs, in the order
            the reference logs them.
        readme_metric: our name of the metric in the published README table.
        aliases: extra lookup names for `get_benchmark`.
    """

    name: str
    flag: str
    classnames: tuple[str, ...]
    default_csv: str
    folder: str
    metric_mode: str
    result_keys: tuple[tuple[str, str], ...]
    readme_metric: str
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Guards against transcription slips in the registry below; these are
        # programming errors, hence not DataError.
        if self.metric_mode not in _METRIC_MODES:
            raise ValueError(f"{self.name}: unknown metric mode {self.metric_mode!r}")
        metrics = [m for _, m in self.result_keys]
        if any(m not in METRIC_NAMES for m in metrics) or len(set(metrics)) != len(metrics):
            raise ValueError(f"{self.name}: bad result_keys {self.result_keys!r}")
        if self.readme_metric not in metrics:
            raise ValueError(f"{self.name}: README metric {self.readme_metric!r} not computed")
        if len({c.lower() for c in self.classnames}) != len(self.classnames):
            raise ValueError(f"{self.name}: duplicate class names")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def reference_keys(self) -> tuple[str, ...]:
        """Reference result key names, in logging order."""
        return tuple(k for k, _ in self.result_keys)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Our metric names this benchmark reports, in reference order."""
        return tuple(m for _, m in self.result_keys)

    @property
    def readme_key(self) -> str:
        """The reference key holding the README metric (e.g. ``zeroshot-SNU-134-top1-acc``)."""
        return next(k for k, m in self.result_keys if m == self.readme_metric)

    @property
    def readme_label(self) -> str:
        """How the README table names the metric: ``"ACC"`` or ``"AUROC"``."""
        return _README_LABELS[self.readme_metric]

    def csv_path(self, data_root: str | os.PathLike[str] = ".") -> Path:
        """The default benchmark CSV under ``data_root``."""
        return Path(data_root) / self.default_csv

    def reference_results(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Rename our metrics dict to the reference key names.

        ``{"accuracy": .7, "weighted_f1": .6}`` for PAD-6 gives
        ``{"zeroshot-pad-wf1": .6, "zeroshot-pad-acc": .7}``. Metrics this
        benchmark does not report are dropped; a metric it reports but that is
        missing from ``metrics`` (e.g. AUROC left uncomputed because only one
        class is present) is left out rather than invented.
        """
        return {key: metrics[m] for key, m in self.result_keys if m in metrics}


def _keys(prefix: str, *pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((f"zeroshot-{prefix}-{suffix}", metric) for suffix, metric in pairs)


_WF1_ACC = (("wf1", WEIGHTED_F1), ("acc", ACCURACY))
_WF1_ACCS = (("wf1", WEIGHTED_F1), ("top1-acc", ACCURACY), ("top3-acc", TOP3_ACCURACY))
_AUROC_ACC = (("auroc", AUROC), ("acc", ACCURACY))

# Insertion order = the reference flag order (eval1..eval7, then eval).
_ALL: tuple[Benchmark, ...] = (
    Benchmark(
        name="PAD-6",
        flag="--zeroshot-eval1",
        classnames=PAD_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/pad-zero-shot-test.csv",
        folder="PAD-6",
        metric_mode="wf1+acc",
        result_keys=_keys("pad", *_WF1_ACC),
        readme_metric=ACCURACY,
        aliases=("pad", "pad6", "pad-ufes-20", "pad-ufes"),
    ),
    Benchmark(
        name="HAM-7",
        flag="--zeroshot-eval2",
        classnames=HAM_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/HAM-official-7-zero-shot-test.csv",
        folder="HAM-7",
        metric_mode="wf1+acc",
        result_keys=_keys("ham", *_WF1_ACC),
        readme_metric=ACCURACY,
        aliases=("ham", "ham7", "ham10000"),
    ),
    Benchmark(
        name="SNU-134",
        flag="--zeroshot-eval3",
        classnames=SNU_134_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/snu-134-zero-shot-test.csv",
        folder="SNU_134",
        metric_mode="wf1+accs",
        result_keys=_keys("SNU-134", *_WF1_ACCS),
        readme_metric=ACCURACY,
        aliases=("snu", "snu134"),
    ),
    Benchmark(
        name="SD-128",
        flag="--zeroshot-eval4",
        classnames=SD_128_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/sd-128-zero-shot-test.csv",
        folder="SD_128",
        metric_mode="wf1+accs",
        result_keys=_keys("SD-128", *_WF1_ACCS),
        readme_metric=ACCURACY,
        aliases=("sd128",),
    ),
    Benchmark(
        name="Daffodil-5",
        flag="--zeroshot-eval5",
        classnames=DAFFODIL_5_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/daffodil-5-zero-shot-test.csv",
        folder="Daffodil_5",
        metric_mode="wf1+acc",
        result_keys=_keys("Daffodil-5", *_WF1_ACC),
        readme_metric=ACCURACY,
        aliases=("daffodil", "daffodil5"),
    ),
    Benchmark(
        name="PH2-2",
        flag="--zeroshot-eval6",
        classnames=PH2_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/ph2-2-zero-shot-test.csv",
        folder="PH2-2",
        metric_mode="auroc+acc",
        result_keys=_keys("PH2", *_AUROC_ACC),
        readme_metric=AUROC,
        aliases=("ph2",),
    ),
    Benchmark(
        name="ISIC2020-2",
        flag="--zeroshot-eval7",
        classnames=ISIC20_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/isic2020-2-zero-shot-test.csv",
        folder="ISIC2020-2",
        metric_mode="auroc+acc",
        result_keys=_keys("ISIC20", *_AUROC_ACC),
        readme_metric=AUROC,
        aliases=("isic2020", "isic20"),
    ),
    # DermNet is wired to `--zeroshot-eval` in the reference, but its
    # `run(..., metric="acc")` has no branch, returns None and the unpacking
    # crashes, so the reference never logs anything for it. The CSV path and
    # the two result keys below are OUR choice (the script has no DermNet run);
    # the metric mode is the reference's. Not in the README table.
    Benchmark(
        name="DermNet-23",
        flag="--zeroshot-eval",
        classnames=DERMNET_CLASSNAMES,
        default_csv=f"{ZERO_SHOT_DIR}/dermnet-23-zero-shot-test.csv",
        folder="Dermnet",
        metric_mode="acc",
        result_keys=(("zeroshot-dermnet-acc", ACCURACY), ("zeroshot-dermnet-wf1", WEIGHTED_F1)),
        readme_metric=ACCURACY,
        aliases=("dermnet", "dermnet23"),
    ),
)

BENCHMARKS: Mapping[str, Benchmark] = MappingProxyType({b.name: b for b in _ALL})

# Column order of the published zero-shot table (PanDerm-2 README at 8f1065f;
# DermFM-Zero repeats it). DermNet is not in it.
README_ORDER: tuple[str, ...] = (
    "HAM-7",
    "PAD-6",
    "ISIC2020-2",
    "PH2-2",
    "SNU-134",
    "SD-128",
    "Daffodil-5",
)


def _build_index() -> dict[str, Benchmark]:
    index: dict[str, Benchmark] = {}
    for bench in _ALL:
        for label in (bench.name, bench.folder, *bench.aliases):
            key = _norm(label)
            other = index.setdefault(key, bench)
            if other is not bench:  # an alias must never be ambiguous
                raise RuntimeError(f"alias {label!r} names both {other.name} and {bench.name}")
    return index


_INDEX = _build_index()


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """Look a benchmark up by name, per-sample folder name or alias.

    Matching ignores case, ``-``, ``_`` and spaces: ``"pad"``, ``"PAD-6"``,
    ``"pad6"``, ``"ISIC20"``, ``"sd128"`` all work. A `Benchmark` is returned
    as is. Raises `DataError` listing the known names otherwise.
    """
    if isinstance(name, Benchmark):
        return name
    bench = _INDEX.get(_norm(str(name)))
    if bench is None:
        known = ", ".join(BENCHMARKS)
        aliases = ", ".join(a for b in _ALL for a in b.aliases)
        raise DataError(
            f"unknown zero-shot benchmark {name!r}; known: {known} (aliases: {aliases})"
        )
    return bench


def readme_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of each present benchmark's README metric, as the README "Average".

    ``results`` maps a benchmark name or alias to its metrics dict, keyed by
    our metric names or by the reference keys. The README mixes ACC and AUROC
    in one plain mean; so does this. Only the benchmarks present count, so
    pass all seven of `README_ORDER` to compare with the published column.
    Raises `DataError` for an empty input, an unknown name, a benchmark given
    twice, or a benchmark lacking its README metric.
    """
    if not results:
        raise DataError("no benchmark results to average")
    seen: dict[str, str] = {}
    values: list[float] = []
    for given, metrics in results.items():
        bench = get_benchmark(given)
        if bench.name in seen:
            raise DataError(
                f"benchmark {bench.name} given twice (as {seen[bench.name]!r} and {given!r})"
            )
        seen[bench.name] = given
        if bench.readme_metric in metrics:
            value = metrics[bench.readme_metric]
        elif bench.readme_key in metrics:
            value = metrics[bench.readme_key]
        else:
            raise DataError(
                f"results for {bench.name} lack its README metric "
                f"({bench.readme_metric!r} or {bench.readme_key!r}); got {sorted(metrics)}"
            )
        values.append(float(value))
    return sum(values) / len(values)


# --------------------------------------------------------------------------
# User class lists (custom zero-shot)
# --------------------------------------------------------------------------
# Header names accepted for the class-name column of a class CSV, in order of
# preference: the explicit ones first, then `diag`, which the reference toy CSV
# and our sample data use. A HAM `classes.csv` has both `dx` (codes) and
# `diag` (names); we want the names.
_NAME_COLUMNS = ("classname", "class_name", "name", "diag")


def _check_names(names: list[str], where: list[str], source: str) -> tuple[str, ...]:
    """Reject lists a zero-shot classifier cannot use: fewer than two classes,
    or duplicates (identical prompts give identical classifier columns, so the
    later class could never win the argmax). Case-insensitive, since the
    text towers of interest lower-case their input."""
    if len(names) < 2:
        raise DataError(f"{source}: a class list needs at least 2 names, got {len(names)}")
    first: dict[str, int] = {}
    for i, n in enumerate(names):
        j = first.setdefault(n.lower(), i)
        if j != i:
            raise DataError(f"{source}: duplicate class name {n!r} ({where[j]} and {where[i]})")
    return tuple(names)


def _names_from_text(path: Path, text: str) -> tuple[str, ...]:
    names, where = [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        names.append(line)
        where.append(f"line {lineno}")
    return _check_names(names, where, str(path))


def _parse_label(value: str, path: Path, lineno: int) -> int:
    text = value.strip()
    try:
        label = int(text)
    except ValueError:
        # pandas writes an int column holding NaN as floats ("3.0"); accept
        # integral floats rather than make users re-save the file.
        try:
            as_float = float(text)
        except ValueError:
            as_float = float("nan")
        if not as_float.is_integer():
            raise DataError(f"{path}, line {lineno}: label {value!r} is not an integer") from None
        label = int(as_float)
    if label < 0:
        raise DataError(f"{path}, line {lineno}: label {label} is negative")
    return label


def _names_from_csv(path: Path, text: str) -> tuple[str, ...]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty CSV")
    columns = {h.strip().lower(): i for i, h in enumerate(header)}
    if "label" not in columns:
        raise DataError(f"{path}, line 1: no 'label' column in header {header}")
    name_col = next((c for c in _NAME_COLUMNS if c in columns), None)
    if name_col is None:
        raise DataError(
            f"{path}, line 1: no class-name column in header {header}; "
            f"expected one of {', '.join(_NAME_COLUMNS)}"
        )
    li, ni = columns["label"], columns[name_col]

    # A per-sample CSV (many rows per label) is fine as long as each label
    # always carries the same name; conflicting names mean the file is wrong.
    by_label: dict[int, tuple[str, int]] = {}
    for row in reader:
        lineno = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(li, ni):
            raise DataError(f"{path}, line {lineno}: expected {len(header)} fields, got {len(row)}")
        label = _parse_label(row[li], path, lineno)
        name = row[ni].strip()
        if not name:
            raise DataError(f"{path}, line {lineno}: empty class name for label {label}")
        if label in by_label and by_label[label][0] != name:
            prev, prev_line = by_label[label]
            raise DataError(
                f"{path}, line {lineno}: label {label} is {name!r} here but {prev!r} on line {prev_line}"
            )
        by_label.setdefault(label, (name, lineno))
    if not by_label:
        raise DataError(f"{path}: no rows after the header")
    k = max(by_label) + 1
    missing = [i for i in range(k) if i not in by_label]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{path}: labels must be 0..{k - 1} without gaps; missing {shown}")
    ordered = [by_label[i] for i in range(k)]
    return _check_names([n for n, _ in ordered], [f"line {ln}" for _, ln in ordered], str(path))


def _is_file(text: str) -> bool:
    """`Path.is_file` that answers False instead of raising for strings that
    cannot be paths at all (an inline list of 134 names is "too long")."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # ENAMETOOLONG, embedded NUL
        return False


def load_classnames(spec: str | os.PathLike[str] | Iterable[str]) -> tuple[str, ...]:
    """Class names for a custom zero-shot run, label index = position.

    ``spec`` is one of:
    - a ``.csv`` file with a header holding ``label`` and a name column
      (``classname``, ``class_name``, ``name`` or ``diag``); names are ordered
      by label, which must run 0..K-1 without gaps. Several rows per label
      (a per-sample CSV) are allowed if they agree on the name;
    - any other file: one name per line, blank lines and ``#`` comments ignored;
    - a comma-separated string ``"a,b,c"`` (names cannot contain commas then);
    - a sequence of names.

    Raises `DataError` naming the file and line at fault, for fewer than two
    names, or for duplicate names.
    """
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _is_file(spec)):
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"{path}: class-name file not found")
        try:
            # utf-8-sig: spreadsheet exports often start with a BOM, which
            # would otherwise glue itself onto the first header or name.
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read class-name file ({exc})") from None
        from ..report import record_input

        record_input(path)
        if path.suffix.lower() == ".csv":
            return _names_from_csv(path, text)
        return _names_from_text(path, text)

    if isinstance(spec, str):
        if "," not in spec:
            raise DataError(
                f"{spec!r} is neither an existing file nor a comma-separated list of class names"
            )
        parts = [p.strip() for p in spec.split(",")]
        if any(not p for p in parts):
            raise DataError(f"empty class name in comma-separated list {spec!r}")
        return _check_names(parts, [f"item {i + 1}" for i in range(len(parts))], "class list")

    names = [str(n).strip() for n in spec]
    if any(not n for n in names):
        raise DataError("empty class name in class list")
    return _check_names(names, [f"item {i + 1}" for i in range(len(names))], "class list")


# --------------------------------------------------------------------------
# Dataset codes -> reference label indices
# --------------------------------------------------------------------------
# The public datasets label images with abbreviations (HAM10000 `dx`,
# PAD-UFES-20 `diagnostic`) in an order unrelated to the reference class
# tuples, so a benchmark CSV built from raw metadata must remap them. Keys are
# lower-case; lookup is case-insensitive (HAM codes are lower-case, PAD's upper).
_CODES: dict[str, dict[str, int]] = {
    "HAM-7": {"akiec": 0, "bcc": 1, "bkl": 2, "df": 3, "mel": 4, "nv": 5, "vasc": 6},
    "PAD-6": {"nev": 0, "bcc": 1, "ack": 2, "sek": 3, "scc": 4, "mel": 5},
    # PH2's three clinical diagnoses collapsed to benign/malignant. This split
    # is ours (the reference CSV is unreleased): atypical nevi are benign.
    "PH2-2": {"common nevus": 0, "atypical nevus": 0, "melanoma": 1},
}


def code_to_label(benchmark: str | Benchmark, code: str) -> int:
    """Reference label index for a dataset code or class name.

    ``code_to_label("HAM-7", "nv") == 5`` (``"nevus"``),
    ``code_to_label("pad", "NEV") == 0``. The benchmark's own class names are
    accepted too, for every benchmark. Case and surrounding spaces are
    ignored. Raises `DataError` listing what is accepted.
    """
    bench = get_benchmark(benchmark)
    key = str(code).strip().lower()
    codes = _CODES.get(bench.name, {})
    if key in codes:
        return codes[key]
    for i, name in enumerate(bench.classnames):
        if name.lower() == key:
            return i
    if codes:
        accepted = f"codes {', '.join(sorted(codes))} or a class name ({', '.join(bench.classnames)})"
    else:
        accepted = f"one of its {bench.num_classes} class names"
    raise DataError(f"unknown {bench.name} code {code!r}; expected {accepted}")
