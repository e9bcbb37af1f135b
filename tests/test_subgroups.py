"""panderm.analysis.subgroups on the bundled PAD-UFES-20 sample: every group's metrics against scikit-learn on
that group's rows, counts against pandas, bins against hand-worked labels, fairness gaps by hand, and the
bootstrap against an independent restatement of its documented draws."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from panderm.analysis.subgroups import (
    MISSING,
    bin_column,
    parse_bins,
    subgroup_figure,
    subgroup_frame,
    subgroup_report,
)
from panderm.errors import DataError

# sklearn warns about ill-defined recall/F1 on the small Fitzpatrick groups compared here.
pytestmark = pytest.mark.filterwarnings("ignore")

PAD = Path(__file__).resolve().parents[1] / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"
K = 6
R = 25  # bootstrap replicates: enough to exercise the CIs, milliseconds to run


@pytest.fixture(scope="module")
def pad():
    table = pd.read_csv(PAD)
    y = table["label"].to_numpy()
    assert sorted(np.unique(y)) == list(range(K))
    # A weak, seeded "model": mostly Dirichlet noise, a little of the true label, so groups differ.
    rng = np.random.default_rng(7)
    probs = 0.8 * rng.dirichlet(np.ones(K), size=len(y)) + 0.2 * np.eye(K)[y]
    return table, y, probs


@pytest.fixture(scope="module")
def fitz_report(pad):
    table, y, probs = pad
    return subgroup_report(y, probs, table[["fitspatrick"]], metrics=("accuracy", "balanced_accuracy", "macro_f1",
                                                                      "auroc", "weighted_f1"),
                           min_group=10, n_resamples=R, seed=3)


def fitz_rows(table: pd.DataFrame, group: str) -> np.ndarray:
    col = table["fitspatrick"]
    mask = col.isna() if group == MISSING else (col == float(group))
    return np.flatnonzero(mask.to_numpy())


def sklearn_auroc_ovr(y: np.ndarray, p: np.ndarray) -> float | None:
    """OvR macro AUROC as sklearn computes it where defined: the multi-class call when every class occurs,
    else the mean of the per-class binary AUROCs of the classes that occur (None with fewer than 2)."""
    present = np.unique(y)
    if len(present) < 2:
        return None
    if len(present) == K:
        return skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(K)))
    return float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present]))


# --------------------------------------------------------------------------- #
# Per-group metrics and counts
# --------------------------------------------------------------------------- #
def test_fitzpatrick_metrics_equal_sklearn_on_each_subset(pad, fitz_report):
    table, y, probs = pad
    pred = probs.argmax(1)
    groups = fitz_report["columns"]["fitspatrick"]["groups"]
    assert [g["group"] for g in groups] == ["1", "2", "3", "4", "5", "6", MISSING]
    full_multiclass_auroc_checked = False
    for g in groups:
        idx = fitz_rows(table, g["group"])
        ys, ps, preds = y[idx], probs[idx], pred[idx]
        m = g["metrics"]
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(ys, preds), abs=1e-12)
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(ys, preds), abs=1e-12)
        # The registry's macro F1 is sklearn's default: the classes in the subset's labels or predictions.
        assert m["macro_f1"] == pytest.approx(skm.f1_score(ys, preds, average="macro"), abs=1e-12)
        assert m["weighted_f1"] == pytest.approx(skm.f1_score(ys, preds, average="weighted"), abs=1e-12)
        expected_auc = sklearn_auroc_ovr(ys, ps)
        if expected_auc is None:
            assert m["auroc"] is None and g["ci"]["auroc"] is None
        else:
            assert m["auroc"] == pytest.approx(expected_auc, abs=1e-12)
        full_multiclass_auroc_checked |= len(np.unique(ys)) == K
    assert full_multiclass_auroc_checked  # type 2 holds all six classes: sklearn's own multi-class call
    # The model is weak enough that groups genuinely differ (else equality above would prove little).
    assert len({round(g["metrics"]["accuracy"], 6) for g in groups}) >= 4


def test_macro_f1_leaves_out_classes_absent_from_a_subset(pad, fitz_report):
    """Type 4 holds classes 2, 4, 5 only: the registry's mean runs over the classes seen there, which is not what
    f1_score(labels=range(K)) gives (absent classes would score 0); the report follows the registry."""
    table, y, probs = pad
    idx = fitz_rows(table, "4")
    ys, preds = y[idx], probs[idx].argmax(1)
    g = next(g for g in fitz_report["columns"]["fitspatrick"]["groups"] if g["group"] == "4")
    all_labels = skm.f1_score(ys, preds, average="macro", labels=list(range(K)), zero_division=0)
    seen = skm.f1_score(ys, preds, average="macro")
    assert all_labels != pytest.approx(seen)
    assert g["metrics"]["macro_f1"] == pytest.approx(seen, abs=1e-12)


def test_counts_equal_pandas(pad, fitz_report):
    table, y, _ = pad
    groups = {g["group"]: g for g in fitz_report["columns"]["fitspatrick"]["groups"]}
    counts = table["fitspatrick"].value_counts(dropna=False)
    expected_n = {(MISSING if pd.isna(k) else str(int(k))): int(v) for k, v in counts.items()}
    assert {k: g["n"] for k, g in groups.items()} == expected_n
    assert expected_n[MISSING] == 71 and expected_n["6"] == 1
    cross = pd.crosstab(table["fitspatrick"].fillna(-1), table["label"]).reindex(columns=range(K), fill_value=0)
    for key, row in cross.iterrows():
        name = MISSING if key == -1 else str(int(key))
        assert groups[name]["class_counts"] == {str(c): int(row[c]) for c in range(K)}
    assert sum(g["n"] for g in groups.values()) == len(y)
    assert {k: g["small"] for k, g in groups.items()} == {k: n < 10 for k, n in expected_n.items()}


def test_classnames_name_the_class_counts(pad):
    table, y, probs = pad
    names = [f"c{i}" for i in range(K)]
    rep = subgroup_report(y, probs, table[["gender"]], metrics=("accuracy",), n_resamples=0, classnames=names)
    g = next(g for g in rep["columns"]["gender"]["groups"] if g["group"] == "MALE")
    male = table["gender"] == "MALE"
    assert g["class_counts"] == {f"c{c}": int(((table["label"] == c) & male).sum()) for c in range(K)}
    assert all(g["ci"]["accuracy"] is None for g in rep["columns"]["gender"]["groups"])  # no bootstrap asked


# --------------------------------------------------------------------------- #
# Small groups
# --------------------------------------------------------------------------- #
def test_group_of_one_is_flagged_not_crashed_on(pad, fitz_report):
    table, y, probs = pad
    entry = fitz_report["columns"]["fitspatrick"]
    one = next(g for g in entry["groups"] if g["group"] == "6")
    idx = fitz_rows(table, "6")
    assert one["n"] == 1 and one["small"] is True
    assert one["metrics"]["accuracy"] == float(probs[idx].argmax(1)[0] == y[idx][0])
    assert one["metrics"]["auroc"] is None and one["ci"]["auroc"] is None  # one class: undefined, not 0
    small = {g["group"] for g in entry["groups"] if g["small"]}
    assert small == {"4", "5", "6"}
    for m, w in entry["worst_group"].items():
        assert w["group"] not in small
    for m, gap in entry["largest_gap"].items():
        assert not set(gap["groups"]) & small
    json.dumps(fitz_report, allow_nan=False)  # JSON-safe: undefined values are null, never NaN


def test_group_of_one_with_min_group_one_takes_part(pad):
    table, y, probs = pad
    rep = subgroup_report(y, probs, table[["fitspatrick"]], metrics=("accuracy", "auroc"), min_group=1,
                          n_resamples=5)
    entry = rep["columns"]["fitspatrick"]
    assert not any(g["small"] for g in entry["groups"])
    defined = {g["group"]: g["metrics"]["auroc"] for g in entry["groups"] if g["metrics"]["auroc"] is not None}
    assert "6" not in defined  # undefined AUROC stays out of the worst group instead of counting as 0
    assert entry["worst_group"]["auroc"]["value"] == min(defined.values())
    acc = {g["group"]: g["metrics"]["accuracy"] for g in entry["groups"]}
    assert entry["worst_group"]["accuracy"]["value"] == min(acc.values())


def test_all_groups_small_gives_no_worst_group(pad):
    table, y, probs = pad
    rep = subgroup_report(y, probs, table[["fitspatrick"]], metrics=("accuracy",), min_group=1000, n_resamples=0)
    entry = rep["columns"]["fitspatrick"]
    assert all(g["small"] for g in entry["groups"])
    assert entry["worst_group"] == {"accuracy": None} and entry["largest_gap"] == {"accuracy": None}


# --------------------------------------------------------------------------- #
# Bins
# --------------------------------------------------------------------------- #
def test_parse_bins():
    assert parse_bins(["age=0,40,60,120"]) == {"age": [0.0, 40.0, 60.0, 120.0]}
    assert parse_bins(["age = 0, 40.5 ,120", "diameter_1=0,10"]) == {"age": [0.0, 40.5, 120.0],
                                                                    "diameter_1": [0.0, 10.0]}
    assert parse_bins([]) == {}
    for bad in (["age"], ["=0,1"], ["age=0,x,2"], ["age=5"], ["age=0,60,40"], ["age=0,40,40"],
                ["age=0,1", "age=2,3"]):
        with pytest.raises(DataError) as err:
            parse_bins(bad)
        assert "\n" not in str(err.value) and err.value.param == "bins"


def test_bin_column_by_hand():
    values = pd.Series([0, 39.9, 40, 59.999, 60, 119, 120, -1, np.nan, None, " "], dtype=object, name="age")
    expected = ["[0, 40)", "[0, 40)", "[40, 60)", "[40, 60)", "[60, 120)", "[60, 120)",
                MISSING, MISSING, MISSING, MISSING, MISSING]
    out = bin_column(values, [0, 40, 60, 120])
    assert out.tolist() == expected
    assert out.name == "age" and out.index.equals(values.index)
    assert bin_column(pd.Series([0.25, 1.0, 7.0]), [0, 0.5, 2.5, float("inf")]).tolist() == \
        ["[0, 0.5)", "[0.5, 2.5)", "[2.5, inf)"]


def test_bin_column_errors():
    with pytest.raises(DataError, match="strictly increasing"):
        bin_column(pd.Series([1, 2]), [0, 60, 40])
    with pytest.raises(DataError, match="at least 2 edges"):
        bin_column(pd.Series([1, 2]), [0])
    with pytest.raises(DataError, match=r"'age' has 'old' at row 1"):
        bin_column(pd.Series(["30", "old"], name="age"), [0, 40])


def test_age_bins_on_pad(pad):
    table, y, probs = pad
    rep = subgroup_report(y, probs, table[["age", "fitspatrick"]], metrics=("accuracy",),
                          bins=parse_bins(["age=0,40,60,120"]), n_resamples=0)
    entry = rep["columns"]["age"]
    assert entry["binned"] == [0.0, 40.0, 60.0, 120.0]
    expected = pd.cut(table["age"], [0, 40, 60, 120], right=False).value_counts(sort=False)
    assert [(g["group"], g["n"]) for g in entry["groups"]] == \
        [("[0, 40)", int(expected.iloc[0])), ("[40, 60)", int(expected.iloc[1])), ("[60, 120)", int(expected.iloc[2]))]
    pred = probs.argmax(1)
    for g, (lo, hi) in zip(entry["groups"], [(0, 40), (40, 60), (60, 120)]):
        mask = ((table["age"] >= lo) & (table["age"] < hi)).to_numpy()
        assert g["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]), abs=1e-12)
    # An edge list that leaves some ages out puts them in "missing" rather than dropping them.
    rep = subgroup_report(y, probs, table[["age"]], metrics=("accuracy",), bins={"age": [0, 50]}, n_resamples=0)
    got = {g["group"]: g["n"] for g in rep["columns"]["age"]["groups"]}
    assert got == {"[0, 50)": int((table["age"] < 50).sum()), MISSING: int((table["age"] >= 50).sum())}


# --------------------------------------------------------------------------- #
# Fairness (binary)
# --------------------------------------------------------------------------- #
def tiny_binary():
    # A: TPR 1/3, FPR 0,   positive rate 1/5
    # B: TPR 1,   FPR 1/3, positive rate 3/5
    # C: TPR 3/4, FPR 1/2, positive rate 4/6
    # D: one image, flagged small below and left out of the gaps
    y = [1, 1, 1, 0, 0] + [1, 1, 0, 0, 0] + [1, 1, 1, 1, 0, 0] + [0]
    pred = [1, 0, 0, 0, 0] + [1, 1, 1, 0, 0] + [1, 1, 1, 0, 1, 0] + [1]
    group = ["A"] * 5 + ["B"] * 5 + ["C"] * 6 + ["D"]
    p1 = np.where(np.asarray(pred) == 1, 0.8, 0.3)
    return np.asarray(y), np.column_stack([1 - p1, p1]), pd.DataFrame({"site": group})


def test_fairness_by_hand():
    y, probs, groups = tiny_binary()
    rep = subgroup_report(y, probs, groups, metrics=("accuracy",), min_group=2, n_resamples=0,
                          classnames=["benign", "malignant"])
    f = rep["columns"]["site"]["fairness"]
    assert f["positive_class"] == "malignant"
    assert f["groups"] == ["A", "B", "C"]
    assert f["tpr"] == pytest.approx({"A": 1 / 3, "B": 1.0, "C": 3 / 4})
    assert f["fpr"] == pytest.approx({"A": 0.0, "B": 1 / 3, "C": 1 / 2})
    assert f["positive_rate"] == pytest.approx({"A": 1 / 5, "B": 3 / 5, "C": 4 / 6})
    assert f["tpr_difference"] == pytest.approx(2 / 3)
    assert f["fpr_difference"] == pytest.approx(1 / 2)
    assert f["equalized_odds_difference"] == pytest.approx(2 / 3)  # max(TPR gap 2/3, FPR gap 1/2)
    assert f["demographic_parity_difference"] == pytest.approx(4 / 6 - 1 / 5)
    d = next(g for g in rep["columns"]["site"]["groups"] if g["group"] == "D")
    assert d["small"] and d["n"] == 1
    # With D admitted (min_group=1) its false positive (FPR 1, positive rate 1) becomes the extreme.
    f1 = subgroup_report(y, probs, groups, metrics=("accuracy",), min_group=1, n_resamples=0)["columns"]["site"]
    f1 = f1["fairness"]
    assert f1["tpr"]["D"] is None  # no positives in D: undefined, not 0
    assert f1["fpr_difference"] == pytest.approx(1.0) and f1["equalized_odds_difference"] == pytest.approx(1.0)
    assert f1["demographic_parity_difference"] == pytest.approx(1 - 1 / 5)


def test_fairness_is_none_for_multiclass(fitz_report):
    assert fitz_report["columns"]["fitspatrick"]["fairness"] is None


# --------------------------------------------------------------------------- #
# Worst group, largest gap and the bootstrap
# --------------------------------------------------------------------------- #
def test_worst_group_and_gap_point_values(fitz_report):
    entry = fitz_report["columns"]["fitspatrick"]
    eligible = [g for g in entry["groups"] if not g["small"]]
    for m in fitz_report["metrics"]:
        vals = {g["group"]: g["metrics"][m] for g in eligible}
        worst = min(vals, key=vals.get)
        best = max(vals, key=vals.get)
        assert entry["worst_group"][m] == {"group": worst, "value": vals[worst]}
        gap = entry["largest_gap"][m]
        assert gap["groups"] == [best, worst]
        assert gap["gap"] == pytest.approx(vals[best] - vals[worst], abs=1e-12)
        assert gap["ci"][0] <= gap["gap"] <= gap["ci"][1]


def test_bootstrap_equals_independent_restatement(pad, fitz_report):
    """Replicate b of each group is row b of RandomState(seed).randint(0, n, (R, n)), groups drawn in report
    order: recompute accuracy and macro F1 with sklearn on those resamples, then the percentile CIs and the gap CI
    from the same replicates."""
    table, y, probs = pad
    pred = probs.argmax(1)
    entry = fitz_report["columns"]["fitspatrick"]
    rs = np.random.RandomState(3)
    reps = {}
    for g in entry["groups"]:
        idx = fitz_rows(table, g["group"])
        draws = rs.randint(0, len(idx), size=(R, len(idx)))
        reps[g["group"]] = {
            "accuracy": np.array([skm.accuracy_score(y[idx][d], pred[idx][d]) for d in draws]),
            "macro_f1": np.array([skm.f1_score(y[idx][d], pred[idx][d], average="macro") for d in draws]),
        }
        for m in ("accuracy", "macro_f1"):
            assert g["ci"][m] == pytest.approx(list(np.percentile(reps[g["group"]][m], [2.5, 97.5])), abs=1e-12)
    for m in ("accuracy", "macro_f1"):
        best, worst = entry["largest_gap"][m]["groups"]
        diff = reps[best][m] - reps[worst][m]
        assert entry["largest_gap"][m]["ci"] == pytest.approx(list(np.percentile(diff, [2.5, 97.5])), abs=1e-12)


def test_seeded_and_independent_of_other_columns(pad, fitz_report):
    table, y, probs = pad
    metrics = fitz_report["metrics"]
    again = subgroup_report(y, probs, table[["gender", "fitspatrick"]], metrics=metrics, min_group=10,
                            n_resamples=R, seed=3)
    assert again["columns"]["fitspatrick"] == fitz_report["columns"]["fitspatrick"]
    other = subgroup_report(y, probs, table[["fitspatrick"]], metrics=metrics, min_group=10, n_resamples=R, seed=4)
    assert other["columns"]["fitspatrick"]["groups"][1]["ci"] != fitz_report["columns"]["fitspatrick"]["groups"][1]["ci"]


def test_tied_groups_still_name_two_groups():
    y = np.array([0, 1, 0, 1])
    probs = np.eye(2)[y] * 0.8 + 0.1
    rep = subgroup_report(y, probs, pd.DataFrame({"g": ["a", "a", "b", "b"]}), metrics=("accuracy",), min_group=1,
                          n_resamples=10)
    gap = rep["columns"]["g"]["largest_gap"]["accuracy"]
    assert gap == {"groups": ["b", "a"], "gap": 0.0, "ci": [0.0, 0.0]}


# --------------------------------------------------------------------------- #
# Table and figure
# --------------------------------------------------------------------------- #
def test_subgroup_frame_matches_report(fitz_report):
    frame = subgroup_frame(fitz_report)
    assert list(frame.columns) == ["column", "group", "n", "small", "metric", "value", "ci_low", "ci_high"]
    groups = fitz_report["columns"]["fitspatrick"]["groups"]
    assert len(frame) == len(groups) * len(fitz_report["metrics"])
    for row in frame.itertuples():
        g = next(g for g in groups if g["group"] == row.group)
        value, ci = g["metrics"][row.metric], g["ci"][row.metric]
        assert (row.n, row.small) == (g["n"], g["small"])
        assert (math.isnan(row.value) if value is None else row.value == value)
        assert (math.isnan(row.ci_low) and math.isnan(row.ci_high)) if ci is None else [row.ci_low, row.ci_high] == ci


def test_subgroup_figure_plots_each_group(pad, fitz_report):
    from matplotlib.figure import Figure

    table, y, probs = pad
    rep = subgroup_report(y, probs, table[["fitspatrick", "gender"]], metrics=("accuracy", "auroc"), min_group=10,
                          n_resamples=5)
    fig = subgroup_figure(rep, "auroc")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["fitspatrick", "gender"]
    ax = fig.axes[0]
    plotted = [float(line.get_ydata()[0]) for line in ax.lines if len(line.get_ydata()) == 1
               and line.get_linestyle() == "None" and line.get_marker() == "o"]
    defined = [g["metrics"]["auroc"] for g in rep["columns"]["fitspatrick"]["groups"] if g["metrics"]["auroc"] is not None]
    assert plotted == pytest.approx(defined)  # group 6 (AUROC undefined) is not drawn as a point
    with pytest.raises(DataError, match="not in this subgroup report"):
        subgroup_figure(rep, "kappa")


# --------------------------------------------------------------------------- #
# Bad input: one-line DataError, never a silently wrong number
# --------------------------------------------------------------------------- #
def test_bad_input(pad):
    table, y, probs = pad
    groups = table[["fitspatrick", "gender"]]
    with pytest.raises(DataError) as err:
        subgroup_report(y, probs, groups, bins={"agee": [0, 40, 120]})
    msg = str(err.value)
    assert "'agee'" in msg and "fitspatrick" in msg and "gender" in msg and "\n" not in msg
    with pytest.raises(DataError, match="groups has 194 rows but there are 195"):
        subgroup_report(y, probs, groups.iloc[:-1])
    with pytest.raises(DataError, match="strictly increasing"):
        subgroup_report(y, probs, table[["age"]], bins={"age": [0, 60, 40]})
    with pytest.raises(DataError, match="DataFrame"):
        subgroup_report(y, probs, ["a"] * len(y))
    with pytest.raises(DataError, match="no columns"):
        subgroup_report(y, probs, table[[]])
    with pytest.raises(DataError, match="classnames has 2 names"):
        subgroup_report(y, probs, groups, classnames=["a", "b"])
    with pytest.raises(DataError, match="min_group"):
        subgroup_report(y, probs, groups, min_group=0)
    with pytest.raises(DataError, match="unknown metric"):
        subgroup_report(y, probs, groups, metrics=("acc",))
    with pytest.raises(DataError, match="probs has 194 rows"):
        subgroup_report(y, probs[:-1], groups)
    with pytest.raises(DataError, match="not a number"):
        subgroup_report(y, probs, table[["region"]], bins={"region": [0, 1]})
