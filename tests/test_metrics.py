"""Tests for panderm.metrics: every metric against scikit-learn and hand counts,
and the bootstrap against the DermFM-Zero resampling protocol."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from panderm import metrics as M
from panderm.errors import DataError

# sklearn warns on ill-defined values in the degenerate cases compared here.
pytestmark = pytest.mark.filterwarnings("ignore")


def make_data(n, k, seed, signal=1.0, ties=False):
    """Labels and softmax probabilities with some signal; ``ties`` quantises the
    logits so that many scores are equal within a column."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    if ties:
        logits = np.round(logits * 2) / 2
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


@pytest.fixture
def keep_global_rng():
    """Tests that call np.random.seed restore the caller's state afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


CASES = [(2, 0), (3, 1), (7, 2), (2, 3, True), (5, 4, True)]


def _case(spec):
    k, seed, *ties = spec
    return make_data(250, k, seed, ties=bool(ties))


# --------------------------------------------------------------------------- #
# Label metrics vs sklearn
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("spec", CASES)
def test_label_metrics_match_sklearn(spec):
    y, p = _case(spec)
    pred = p.argmax(1)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert M.balanced_accuracy(y, pred) == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert M.weighted_f1(y, pred) == pytest.approx(
        skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    assert M.macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert M.quadratic_kappa(y, pred) == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic"), abs=1e-12)


def test_label_metrics_with_classes_missing_match_sklearn():
    # y_true lacks class 3, y_pred lacks class 1 and contains class 4 nowhere in y_true.
    rng = np.random.default_rng(5)
    y = rng.choice([0, 1, 2, 4], 60)
    pred = rng.choice([0, 2, 3, 4], 60)
    assert M.balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert M.macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.weighted_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert M.sensitivity(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_hand_computed_binary_case():
    y, pred = [0, 0, 1, 1], [0, 1, 1, 1]
    # TP=2 FN=0 TN=1 FP=1
    assert M.sensitivity(y, pred) == 1.0
    assert M.specificity(y, pred) == 0.5
    assert M.accuracy(y, pred) == 0.75
    assert M.balanced_accuracy(y, pred) == 0.75
    # F1: class 0 = 2*1/(2+0+1) = 2/3, class 1 = 2*2/(4+1+0) = 4/5, equal supports
    assert M.macro_f1(y, pred) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert M.weighted_f1(y, pred) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_hand_computed_multiclass_sensitivity_specificity():
    y, pred = [0, 1, 2, 2], [0, 2, 2, 1]
    # recall: c0 1/1, c1 0/1, c2 1/2
    assert M.sensitivity(y, pred) == pytest.approx((1 + 0 + 0.5) / 3)
    # TN/(TN+FP): c0 3/3, c1 2/3 (sample 3 predicted 1), c2 1/2 (sample 1 predicted 2)
    assert M.specificity(y, pred) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)


@pytest.mark.parametrize("spec", CASES)
def test_sensitivity_specificity_match_sklearn(spec):
    y, p = _case(spec)
    pred = p.argmax(1)
    k = p.shape[1]
    if k == 2:
        assert M.sensitivity(y, pred) == pytest.approx(skm.recall_score(y, pred, pos_label=1))
        assert M.specificity(y, pred) == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    else:
        assert M.sensitivity(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
        mcm = skm.multilabel_confusion_matrix(y, pred, labels=range(k))  # [[tn, fp], [fn, tp]]
        spec = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
        assert M.specificity(y, pred) == pytest.approx(spec.mean())


def test_undefined_sensitivity_is_nan():
    assert np.isnan(M.sensitivity([0, 0], [0, 1]))  # no positives
    assert np.isnan(M.specificity([1, 1], [0, 1]))  # no negatives


def test_quadratic_kappa_hand_case_and_label_distance():
    # C = [[1,0,0],[0,0,1],[0,1,0]]: observed sum w*C = 2, expected = (1/3)*sum(w) = 4
    assert M.quadratic_kappa([0, 1, 2], [0, 2, 1]) == pytest.approx(0.5)
    # Class 1 absent everywhere: weights stay on the label values (0..2), which
    # sklearn only does when given labels=range(K).
    y, pred = [0, 0, 2, 2, 3, 3, 0], [0, 2, 2, 3, 3, 0, 3]
    ours = M.quadratic_kappa(y, pred)
    assert ours == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic", labels=range(4)))
    assert ours != pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert np.isnan(M.quadratic_kappa([1, 1], [1, 1]))


# --------------------------------------------------------------------------- #
# Score metrics vs sklearn
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("spec", CASES)
def test_auroc_aupr_match_sklearn(spec):
    y, p = _case(spec)
    k = p.shape[1]
    if k == 2:
        assert M.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-12)
        assert M.aupr(y, p) == pytest.approx(skm.average_precision_score(y, p[:, 1]), abs=1e-12)
    else:
        assert M.auroc(y, p, "ovr") == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
        assert M.auroc(y, p, "ovo") == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovo", average="macro"), abs=1e-12)
        assert M.aupr(y, p) == pytest.approx(
            skm.average_precision_score(y, p, average="macro"), abs=1e-12)


def test_hand_computed_auroc_aupr():
    y = [0, 0, 1, 1]
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.column_stack([1 - p1, p1])
    # positive pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4) -> 3 of 4
    assert M.auroc(y, probs) == pytest.approx(0.75)
    # ranking: pos, neg, pos, neg -> AP = 0.5*1 + 0.5*(2/3)
    assert M.aupr(y, probs) == pytest.approx(0.5 + 1 / 3)


def test_binary_auroc_equals_reference_one_hot_ovr_macro():
    y, p = make_data(300, 2, 11)
    one_hot = np.eye(2)[y]
    ref = skm.roc_auc_score(one_hot, p, multi_class="ovr", average="macro")
    assert M.auroc(y, p) == pytest.approx(ref, abs=1e-12)
    assert M.auroc(y, p, multi_class="ovo") == M.auroc(y, p)  # K=2 ignores multi_class


def test_onehot_auroc_is_the_reference_two_column_mean_and_differs_on_ties():
    """Rows 0 and 1 tie on p1 (0.7) but not on p0 (0.3 vs 0.2999), as separately rounded softmax columns can.
    p1 only: the tied pair is worth 1/2, so 3.5 / 4 = 0.875. Column 0 separates every pair: 1.0. The zero-shot
    reference's roc_auc_score(one_hot, probs, average="macro") is their mean, 0.9375."""
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.3, 0.7], [0.2999, 0.7], [0.6, 0.4], [0.1, 0.9]])
    assert M.auroc(y, probs) == 0.875 == skm.roc_auc_score(y, probs[:, 1])
    assert M.auroc(y, probs, "onehot") == 0.9375 == skm.roc_auc_score(np.eye(2)[y], probs, average="macro")
    metrics = M.classification_metrics(y, probs, ["auroc"], "onehot")
    assert metrics["auroc"] == 0.9375
    ci = M.bootstrap_ci(y, probs, ["auroc"], n_resamples=50, multi_class="onehot")
    assert ci["auroc"]["value"] == 0.9375
    # Without ties, and for K > 2, it is the usual AUROC.
    y3, p3 = make_data(300, 2, 11)
    assert M.auroc(y3, p3, "onehot") == pytest.approx(M.auroc(y3, p3), abs=1e-12)
    y4, p4 = make_data(300, 4, 12)
    assert M.auroc(y4, p4, "onehot") == M.auroc(y4, p4, "ovr")
    with pytest.raises(DataError, match="'ovr', 'ovo' or 'onehot'"):
        M.auroc(y, probs, "columns")


def test_ovo_and_ovr_differ_and_each_match_sklearn():
    # Imbalanced classes with class-dependent separability: OvR and OvO weigh
    # the confusions differently.
    rng = np.random.default_rng(12)
    y = rng.choice(4, 400, p=[0.6, 0.2, 0.15, 0.05])
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), y] += np.array([0.3, 1.0, 2.0, 0.5])[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ovr, ovo = M.auroc(y, p, "ovr"), M.auroc(y, p, "ovo")
    assert abs(ovr - ovo) > 1e-4
    assert ovr == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    assert ovo == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovo"), abs=1e-12)


def test_auroc_aupr_with_absent_class_use_present_classes():
    y, p = make_data(200, 4, 13)
    keep = y != 2
    y, p = y[keep], p[keep]
    present = [0, 1, 3]
    with pytest.raises(ValueError):  # what the reference would hit
        skm.roc_auc_score(y, p, multi_class="ovr")
    ovr = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present])
    assert M.auroc(y, p, "ovr") == pytest.approx(ovr, abs=1e-12)
    pairs = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            m = (y == a) | (y == b)
            pairs.append((skm.roc_auc_score(y[m] == a, p[m, a])
                          + skm.roc_auc_score(y[m] == b, p[m, b])) / 2)
    assert M.auroc(y, p, "ovo") == pytest.approx(np.mean(pairs), abs=1e-12)
    ap = np.mean([skm.average_precision_score(y == c, p[:, c]) for c in present])
    assert M.aupr(y, p) == pytest.approx(ap, abs=1e-12)


def test_auroc_single_class_is_nan():
    _, p = make_data(20, 3, 14)
    assert np.isnan(M.auroc(np.zeros(20, int), p))
    assert np.isnan(M.auroc(np.zeros(20, int), p, "ovo"))
    _, p2 = make_data(20, 2, 14)
    assert np.isnan(M.auroc(np.ones(20, int), p2))
    assert np.isnan(M.aupr(np.zeros(20, int), p2))  # binary without positives


def test_top_k_with_missing_class_vs_manual_count():
    y, p = make_data(120, 6, 15, ties=True)
    y = np.where(y == 4, 0, y)  # class 4 absent from y_true
    with pytest.raises(ValueError):  # the reference call crashes here
        skm.top_k_accuracy_score(y, p, k=3)
    for k in (1, 2, 3):
        # manual: rank = #classes scoring higher + #tied classes with a larger index
        hits = 0
        for yi, row in zip(y, p):
            above = sum(1 for c in range(6) if row[c] > row[yi] or (row[c] == row[yi] and c > yi))
            hits += above < k
        assert M.top_k_accuracy(y, p, k) == pytest.approx(hits / len(y))
        assert M.top_k_accuracy(y, p, k) == pytest.approx(
            skm.top_k_accuracy_score(y, p, k=k, labels=range(6)))
    assert M.top_k_accuracy(y, p, 6) == 1.0
    assert M.top_k_accuracy(y, p, 10) == 1.0


def test_probs_to_pred():
    p = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    np.testing.assert_array_equal(M.probs_to_pred(p), [1, 0])  # first column on ties


# --------------------------------------------------------------------------- #
# classification_metrics
# --------------------------------------------------------------------------- #
def test_classification_metrics_default_names_and_values():
    y, p = make_data(300, 3, 16)
    out = M.classification_metrics(y, p)
    assert list(out) == [m for m in M.METRIC_NAMES if m != "top3_accuracy"]
    pred = p.argmax(1)
    assert out["accuracy"] == M.accuracy(y, pred)
    assert out["balanced_accuracy"] == M.balanced_accuracy(y, pred)
    assert out["weighted_f1"] == M.weighted_f1(y, pred)
    assert out["macro_f1"] == M.macro_f1(y, pred)
    assert out["kappa"] == M.quadratic_kappa(y, pred, num_classes=3)
    assert out["sensitivity"] == M.sensitivity(y, pred, num_classes=3)
    assert out["specificity"] == M.specificity(y, pred, num_classes=3)
    assert out["auroc"] == M.auroc(y, p)
    assert out["aupr"] == M.aupr(y, p)
    assert all(isinstance(v, float) for v in out.values())

    y5, p5 = make_data(300, 5, 17)
    out5 = M.classification_metrics(y5, p5, multi_class="ovo")
    assert list(out5) == list(M.METRIC_NAMES)
    assert out5["top3_accuracy"] == M.top_k_accuracy(y5, p5, 3)
    assert out5["auroc"] == M.auroc(y5, p5, "ovo")


def test_classification_metrics_subset_topk_and_y_pred():
    y, p = make_data(100, 5, 18)
    out = M.classification_metrics(y, p, metrics=["auroc", "top2_accuracy", "accuracy"])
    assert list(out) == ["auroc", "top2_accuracy", "accuracy"]
    assert out["top2_accuracy"] == M.top_k_accuracy(y, p, 2)
    given = (p.argmax(1) + 1) % 5
    out = M.classification_metrics(y, p, metrics=["accuracy"], y_pred=given)
    assert out["accuracy"] == M.accuracy(y, given)


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #
def test_index_stream_equals_reference_global_draw(keep_global_rng):
    n, b = 57, 30
    np.random.seed(42)
    ref = [np.random.choice(n, n) for _ in range(b)]
    rs = np.random.RandomState(42)
    np.testing.assert_array_equal(np.stack(ref), np.stack([rs.choice(n, n) for _ in range(b)]))
    np.testing.assert_array_equal(M.bootstrap_indices(n, b, 42), np.stack(ref))


def test_bootstrap_uses_the_reference_resamples(keep_global_rng):
    y, p = make_data(80, 3, 19)
    pred = p.argmax(1)
    np.random.seed(42)
    ref = [np.random.choice(80, 80) for _ in range(50)]
    out = M.bootstrap_ci(y, p, metrics=["accuracy"], n_resamples=50, return_samples=True)
    expected = [skm.accuracy_score(y[i], pred[i]) for i in ref]
    np.testing.assert_allclose(out["accuracy"]["samples"], expected, atol=1e-12)
    e = out["accuracy"]
    assert e["mean"] == pytest.approx(np.mean(expected))
    assert e["ci_low"] == pytest.approx(np.percentile(expected, 2.5))
    assert e["ci_high"] == pytest.approx(np.percentile(expected, 97.5))
    assert e["value"] == M.accuracy(y, pred)
    assert e["n_resamples"] == 50


def test_bootstrap_replicates_equal_metrics_on_resampled_data():
    # Small and unbalanced so that replicates miss classes: checks the weighted
    # engine (counts as weights) against plain recomputation on duplicated rows.
    y, p = make_data(40, 4, 20, ties=True)
    y = np.where(y == 3, 0, y)
    y[:3] = 3  # class 3 rare: absent from some replicates
    idx = M.bootstrap_indices(40, 40, 7)
    for mc in ("ovr", "ovo"):
        out = M.bootstrap_ci(y, p, n_resamples=40, seed=7, multi_class=mc,
                             metrics=list(M.METRIC_NAMES) + ["top2_accuracy"],
                             return_samples=True)
        rows = [M.classification_metrics(y[i], p[i], metrics=list(out), multi_class=mc)
                for i in idx]
        for name, entry in out.items():
            exp = np.array([r[name] for r in rows])
            exp = exp[~np.isnan(exp)]
            np.testing.assert_allclose(entry["samples"], exp, atol=1e-12, err_msg=name)
            assert entry["n_resamples"] == len(exp)


def test_bootstrap_replicates_match_sklearn_directly():
    y, p = make_data(300, 5, 21)
    pred = p.argmax(1)
    idx = M.bootstrap_indices(300, 8, 42)
    out = M.bootstrap_ci(y, p, n_resamples=8, return_samples=True)
    for b, i in enumerate(idx):
        yi, pi, pr = y[i], p[i], pred[i]
        assert out["accuracy"]["samples"][b] == pytest.approx(skm.accuracy_score(yi, pr))
        assert out["balanced_accuracy"]["samples"][b] == pytest.approx(
            skm.balanced_accuracy_score(yi, pr))
        assert out["macro_f1"]["samples"][b] == pytest.approx(skm.f1_score(yi, pr, average="macro"))
        assert out["weighted_f1"]["samples"][b] == pytest.approx(
            skm.f1_score(yi, pr, average="weighted"))
        assert out["kappa"]["samples"][b] == pytest.approx(
            skm.cohen_kappa_score(yi, pr, weights="quadratic"))
        assert out["auroc"]["samples"][b] == pytest.approx(
            skm.roc_auc_score(yi, pi, multi_class="ovr"), abs=1e-12)
        assert out["aupr"]["samples"][b] == pytest.approx(
            skm.average_precision_score(yi, pi, average="macro"), abs=1e-12)
        assert out["top3_accuracy"]["samples"][b] == pytest.approx(
            skm.top_k_accuracy_score(yi, pi, k=3, labels=range(5)))


def test_bootstrap_same_seed_identical_and_rng_untouched():
    y, p = make_data(150, 3, 22)
    np.random.seed(2024)
    before = np.random.get_state()
    a = M.bootstrap_ci(y, p, n_resamples=200)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])
    b = M.bootstrap_ci(y, p, n_resamples=200)
    assert a == b
    c = M.bootstrap_ci(y, p, n_resamples=200, seed=43)
    assert c["accuracy"]["mean"] != a["accuracy"]["mean"]


def test_ci_contains_point_estimate_on_large_easy_case():
    y, p = make_data(3000, 4, 23, signal=2.5)
    out = M.bootstrap_ci(y, p)
    for name, e in out.items():
        assert e["n_resamples"] == 1000
        assert e["ci_low"] <= e["value"] <= e["ci_high"], name
        assert e["ci_low"] <= e["mean"] <= e["ci_high"], name
        assert e["ci_high"] - e["ci_low"] < 0.06, name


def _reference_replicate(y, pred, proba, num_classes):
    """The DermFM-Zero per-replicate metrics as docs/REFERENCE.md, Zero-shot classification, describes them:
    sklearn calls, 0.0 where a value is undefined or the AUROC call fails, and an
    exception (replicate skipped) where the multi-class loop indexes past a
    confusion matrix built from fewer labels."""
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "macro_f1": skm.f1_score(y, pred, average="macro"),
        "weighted_f1": skm.f1_score(y, pred, average="weighted"),
    }
    if num_classes == 2:
        cm = skm.confusion_matrix(y, pred)
        if cm.shape == (2, 2):
            tn, fp, fn, tp = cm.ravel()
            out["sensitivity"] = tp / (tp + fn) if tp + fn else 0.0
            out["specificity"] = tn / (tn + fp) if tn + fp else 0.0
        else:
            out["sensitivity"] = out["specificity"] = 0.0
        # sklearn raised here when the reference was written (0.0 stored);
        # sklearn 1.9 warns and returns nan instead.
        one_class = len(np.unique(y)) < 2
        out["auroc"] = 0.0 if one_class else skm.roc_auc_score(y, proba[:, 1])
    else:
        cm = skm.confusion_matrix(y, pred)
        if cm.shape[0] < num_classes:
            return None
        sens, spec = [], []
        for c in range(num_classes):
            tp = cm[c, c]
            fn = cm[c].sum() - tp
            fp = cm[:, c].sum() - tp
            tn = cm.sum() - tp - fn - fp
            sens.append(tp / (tp + fn) if tp + fn else 0.0)
            spec.append(tn / (tn + fp) if tn + fp else 0.0)
        out["sensitivity"], out["specificity"] = np.mean(sens), np.mean(spec)
        try:
            out["auroc"] = skm.roc_auc_score(y, proba, multi_class="ovr")
        except ValueError:
            out["auroc"] = 0.0
    return out


@pytest.mark.parametrize("k,n,seed", [(2, 14, 24), (4, 30, 25)])
def test_undefined_as_zero_reproduces_reference(k, n, seed):
    y, p = make_data(n, k, seed, signal=0.7)
    y[: n - 2] = np.where(y[: n - 2] == k - 1, 0, y[: n - 2])  # last class is rare (2 samples)
    y[-2:] = k - 1
    pred = p.argmax(1)
    reps = [_reference_replicate(y[i], pred[i], p[i], k) for i in M.bootstrap_indices(n, 150, 42)]
    reps = [r for r in reps if r is not None]
    out = M.bootstrap_ci(y, p, metrics=M.REFERENCE_BOOTSTRAP_METRICS, n_resamples=150,
                         undefined_as_zero=True, return_samples=True)
    for name in M.REFERENCE_BOOTSTRAP_METRICS:
        ref = np.array([r[name] for r in reps])
        np.testing.assert_allclose(out[name]["samples"], ref, atol=1e-12, err_msg=name)
        assert M.format_ci(out[name]) == M.format_ci(
            {"mean": ref.mean(), "ci_low": np.percentile(ref, 2.5),
             "ci_high": np.percentile(ref, 97.5)})
    # the rare class really went missing in some replicates
    assert (out["auroc"]["samples"] == 0.0).any()
    default = M.bootstrap_ci(y, p, metrics=["auroc"], n_resamples=150)
    assert default["auroc"]["mean"] > out["auroc"]["mean"]


def test_floor_zero_and_undefined_handling():
    # One positive, predicted right: sensitivity is 1 when it is drawn, undefined otherwise.
    y = np.zeros(100, int)
    y[0] = 1
    p = np.tile([0.9, 0.1], (100, 1))
    p[0] = [0.2, 0.8]
    skip = M.bootstrap_ci(y, p, metrics=["sensitivity"])["sensitivity"]
    assert skip["mean"] == skip["ci_low"] == 1.0
    assert 500 < skip["n_resamples"] < 800  # ~ 1 - (99/100)^100 of 1000
    zero = M.bootstrap_ci(y, p, metrics=["sensitivity"], undefined_as_zero=True)["sensitivity"]
    assert zero["n_resamples"] == 1000
    assert zero["ci_low"] == 0.0
    assert zero["mean"] == pytest.approx(skip["n_resamples"] / 1000)
    floored = M.bootstrap_ci(y, p, metrics=["sensitivity"], undefined_as_zero=True,
                             floor_zero=True)["sensitivity"]
    assert floored["ci_low"] == pytest.approx(0.1 * zero["mean"])
    assert floored["ci_high"] == zero["ci_high"]


def test_format_ci():
    entry = {"value": 0.8, "mean": 0.79581, "ci_low": 0.77581, "ci_high": 0.81499}
    assert M.format_ci(entry) == "0.7958 (0.7758-0.8150)"
    assert M.format_ci(entry, center="value") == "0.8000 (0.7758-0.8150)"
    assert M.format_ci({"mean": float("nan"), "ci_low": 0, "ci_high": 0}) == "n/a"


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
_P3 = np.full((3, 3), 1 / 3)


@pytest.mark.parametrize("call,match", [
    (lambda: M.classification_metrics([0, 7, 1], _P3), r"label 7 .*K=3"),
    (lambda: M.auroc([0, 1, 2, 1], _P3), r"3 rows but y_true has 4"),
    (lambda: M.aupr([0, 1, 2], np.array([[0.5, 0.5, 0], [np.nan, 0.5, 0.5], [0, 0, 1]])),
     r"nan .*row 1"),
    (lambda: M.bootstrap_ci([], np.empty((0, 3))), r"empty"),
    (lambda: M.accuracy([], []), r"empty"),
    (lambda: M.top_k_accuracy([[0, 1]], _P3), r"1-D"),
    (lambda: M.accuracy([0, 1.5], [0, 1]), r"integer"),
    (lambda: M.accuracy(["a", "b"], [0, 1]), r"integer"),
    (lambda: M.accuracy([0, -1], [0, 1]), r"negative"),
    (lambda: M.macro_f1([0, 1, 1], [0, 1]), r"y_pred has 2 labels but y_true has 3"),
    (lambda: M.auroc([0, 1, 2], _P3[:, 0]), r"2-D"),
    (lambda: M.auroc([0, 1, 2], _P3, multi_class="macro"), r"multi_class"),
    (lambda: M.classification_metrics([0, 1, 2], _P3, metrics=["f2"]), r"unknown metric 'f2'"),
    (lambda: M.bootstrap_ci([0, 1, 2], _P3, n_resamples=0), r"n_resamples"),
    (lambda: M.top_k_accuracy([0, 1, 2], _P3, k=0), r"positive integer"),
    (lambda: M.classification_metrics([0, 1, 2], _P3, y_pred=[0, 5, 1]), r"y_pred has label 5"),
])
def test_bad_input_raises_data_error(call, match):
    with pytest.raises(DataError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_float_labels_from_pandas_are_accepted():
    assert M.accuracy(np.array([0.0, 1.0, 2.0]), [0, 1, 1]) == pytest.approx(2 / 3)
