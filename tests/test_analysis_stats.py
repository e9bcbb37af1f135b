"""Issue 16: paired bootstrap, DeLong and Holm against hand-worked cases and independent computations."""
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from panderm.analysis.stats import delong_multiclass, delong_test, holm, paired_bootstrap, placement_values
from panderm.errors import DataError
from panderm.metrics import auroc, bootstrap_indices, classification_metrics


# -- Holm ----------------------------------------------------------------------------------------------------------

def test_holm_hand_worked():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06, monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_clips_at_one_skips_nan_and_keeps_single_p():
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.2, float("nan"), 0.6])  # m = 2: 0.4, then max(0.4, 0.6)
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.037]) == pytest.approx([0.037])
    assert holm([]).size == 0


def test_holm_is_monotone_and_never_below_raw():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=25)
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_holm_rejects_values_outside_unit_interval():
    with pytest.raises(DataError):
        holm([0.1, 1.5])


# -- DeLong ----------------------------------------------------------------------------------------------------------

# Hand-worked case: 3 positives, 2 negatives.
#   model A: positives 0.9, 0.6, 0.4; negatives 0.5, 0.2
#     V10 = [1, 1, 1/2]  (0.4 beats only 0.2);  V01 = [2/3, 1];  AUC_A = 5/6
#   model B: positives 0.8, 0.3, 0.55; negatives 0.6, 0.1
#     V10 = [1, 1/2, 1/2];  V01 = [1/3, 1];  AUC_B = 2/3
#   S10 (denominator m-1 = 2): AA = 1/12, BB = 1/12, AB = 1/24
#   S01 (denominator n-1 = 1): AA = 1/18, BB = 2/9,  AB = 1/9
#   var = (1/12 + 1/12 - 2/24) / 3 + (1/18 + 2/9 - 2/9) / 2 = 1/36 + 1/36 = 1/18
#   z = (1/6) / sqrt(1/18) = sqrt(2)/2;  p = 2 (1 - Phi(z)) = erfc(1/2)
HAND_Y = np.array([1, 1, 1, 0, 0])
HAND_A = np.array([0.9, 0.6, 0.4, 0.5, 0.2])
HAND_B = np.array([0.8, 0.3, 0.55, 0.6, 0.1])


def test_delong_hand_worked_case():
    v10, v01 = placement_values(HAND_A[:3], HAND_A[3:])
    assert v10 == pytest.approx([1, 1, 0.5]) and v01 == pytest.approx([2 / 3, 1])
    r = delong_test(HAND_Y, HAND_A, HAND_B)
    assert r["auc_a"] == pytest.approx(5 / 6) and r["auc_b"] == pytest.approx(2 / 3)
    assert r["diff"] == pytest.approx(1 / 6)
    assert r["var"] == pytest.approx(1 / 18)
    assert r["z"] == pytest.approx(math.sqrt(2) / 2)
    assert r["p_value"] == pytest.approx(math.erfc(0.5))
    assert r["p_value"] == pytest.approx(0.4795001221869535)
    swapped = delong_test(HAND_Y, HAND_B, HAND_A)
    assert swapped["diff"] == pytest.approx(-1 / 6) and swapped["p_value"] == pytest.approx(r["p_value"])


def _delong_brute_force(y, sa, sb):
    """DeLong restated with the O(m n) Mann-Whitney kernel matrix psi[i, j] of every positive/negative pair."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, aucs = [], [], []
    for s in (sa, sb):
        psi = np.zeros((m, n))
        for i, x in enumerate(s[pos]):
            for j, w in enumerate(s[neg]):
                psi[i, j] = 1.0 if x > w else (0.5 if x == w else 0.0)
        aucs.append(psi.sum() / (m * n))
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))

    def cov(u, v):
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))

    s_aa = cov(v10[0], v10[0]) / m + cov(v01[0], v01[0]) / n
    s_bb = cov(v10[1], v10[1]) / m + cov(v01[1], v01[1]) / n
    s_ab = cov(v10[0], v10[1]) / m + cov(v01[0], v01[1]) / n
    var = s_aa + s_bb - 2 * s_ab
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs[0], aucs[1], var, z, math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_brute_force_and_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = (rng.uniform(size=n) < 0.4).astype(int)
    y[:2] = [0, 1]
    sa = np.round(y * 0.6 + rng.normal(size=n), 1)  # rounded: many ties, within and across classes
    sb = np.round(0.5 * sa + y * 0.2 + rng.normal(size=n), 1)
    r = delong_test(y, sa, sb)
    auc_a, auc_b, var, z, p = _delong_brute_force(y, sa, sb)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, sa), abs=1e-12) == pytest.approx(auc_a)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, sb), abs=1e-12) == pytest.approx(auc_b)
    assert r["var"] == pytest.approx(var, rel=1e-10)
    assert r["z"] == pytest.approx(z, rel=1e-10)
    assert r["p_value"] == pytest.approx(p, rel=1e-9)


def test_delong_model_with_itself_is_p_one():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(20, int), np.ones(15, int)]
    s = rng.uniform(size=35)
    r = delong_test(y, s, s)
    assert r["diff"] == 0 and r["z"] == 0 and r["p_value"] == 1.0


def test_delong_undefined_without_both_classes_and_bad_labels():
    r = delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert math.isnan(r["auc_a"]) and math.isnan(r["p_value"])
    one_pos = delong_test([1, 0, 0], [0.9, 0.2, 0.1], [0.1, 0.2, 0.3])
    assert one_pos["auc_a"] == 1.0 and math.isnan(one_pos["var"])  # no variance from one positive
    with pytest.raises(DataError):
        delong_test([0, 1, 2], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(DataError):
        delong_test([0, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])


def _probs(rng, y, k, signal):
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_delong_multiclass_is_ovr_per_class_with_holm():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, size=120)
    pa, pb = _probs(rng, y, 4, 1.5), _probs(rng, y, 4, 0.3)
    r = delong_multiclass(y, pa, pb)
    assert r["method"] == "ovr-holm(4 classes)"
    per = [delong_test(y == c, pa[:, c], pb[:, c]) for c in range(4)]
    assert [c["p_value"] for c in r["per_class"]] == pytest.approx([p["p_value"] for p in per])
    assert [c["p_holm"] for c in r["per_class"]] == pytest.approx(list(holm([p["p_value"] for p in per])))
    assert r["p_value"] == pytest.approx(min(holm([p["p_value"] for p in per])))
    # the macro difference is the registry's one-vs-rest macro AUROC difference
    assert r["auc_a"] == pytest.approx(auroc(y, pa, "ovr")) and r["auc_b"] == pytest.approx(auroc(y, pb, "ovr"))
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, pa, multi_class="ovr"))
    same = delong_multiclass(y, pa, pa)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_delong_multiclass_binary_uses_class_one_and_skips_absent_classes():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=50)
    pa, pb = _probs(rng, y, 2, 1.0), _probs(rng, y, 2, 0.2)
    r = delong_multiclass(y, pa, pb)
    assert r["method"] == "binary"
    assert r["p_value"] == pytest.approx(delong_test(y, pa[:, 1], pb[:, 1])["p_value"])
    y3 = np.where(y == 1, 2, 0)  # class 1 of 3 never occurs
    p3a, p3b = _probs(rng, y3, 3, 1.0), _probs(rng, y3, 3, 0.2)
    r3 = delong_multiclass(y3, p3a, p3b)
    assert [c["class"] for c in r3["per_class"]] == [0, 2]


# -- Paired bootstrap --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "auroc", "macro_f1", "kappa"])
def test_model_compared_with_itself(metric):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=80)
    p = _probs(rng, y, 3, 1.0)
    r = paired_bootstrap(y, p, p, metric, n_resamples=300)
    assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0
    assert r["ci_low"] <= 0 <= r["ci_high"]
    assert r["p_value"] == 1.0
    assert r["a"] == r["b"] == pytest.approx(classification_metrics(y, p, [metric])[metric])


def test_paired_bootstrap_hand_worked_accuracy():
    """A right on all 4 images, B wrong on image 0 only: d_b = (times image 0 is drawn in replicate b) / 4."""
    y = np.array([0, 1, 0, 1])
    pa = np.eye(2)[y] * 0.8 + 0.1
    pb = pa.copy()
    pb[0] = pb[0][::-1]
    B = 200
    r = paired_bootstrap(y, pa, pb, "accuracy", n_resamples=B, seed=7, return_samples=True)
    count0 = (bootstrap_indices(4, B, 7) == 0).sum(axis=1)
    assert r["a"] == 1.0 and r["b"] == 0.75 and r["diff"] == 0.25
    assert r["samples"] == pytest.approx(count0 / 4)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(np.percentile(count0 / 4, [2.5, 97.5])))
    # d >= 0 always; d <= 0 exactly when image 0 was not drawn
    expected = min(1.0, 2 * min((1 + (count0 == 0).sum()) / (B + 1), (1 + B) / (B + 1)))
    assert r["p_value"] == pytest.approx(expected)
    assert r["n_resamples"] == B


def test_paired_bootstrap_equals_sklearn_on_the_same_resamples():
    """Independent path: sklearn on the resampled rows of both models, replicate by replicate."""
    rng = np.random.default_rng(2)
    n, B = 40, 150
    y = rng.integers(0, 2, size=n)
    pa, pb = _probs(rng, y, 2, 1.2), _probs(rng, y, 2, 0.4)
    idx = bootstrap_indices(n, B, 42)
    for metric, fn in (("balanced_accuracy", lambda yy, p: balanced_accuracy_score(yy, p.argmax(1))),
                       ("auroc", lambda yy, p: roc_auc_score(yy, p[:, 1]))):
        r = paired_bootstrap(y, pa, pb, metric, n_resamples=B, seed=42, return_samples=True)
        d = []
        for row in idx:
            if metric == "auroc" and len(np.unique(y[row])) < 2:
                continue  # AUROC is undefined for a one-class replicate (dropped for both models)
            d.append(fn(y[row], pa[row]) - fn(y[row], pb[row]))
        d = np.array(d)
        assert r["samples"] == pytest.approx(d, abs=1e-12)
        assert r["diff"] == pytest.approx(fn(y, pa) - fn(y, pb))
        assert r["ci_low"] == pytest.approx(np.percentile(d, 2.5))
        assert r["ci_high"] == pytest.approx(np.percentile(d, 97.5))
        p = min(1.0, 2 * min((1 + (d <= 0).sum()) / (len(d) + 1), (1 + (d >= 0).sum()) / (len(d) + 1)))
        assert r["p_value"] == pytest.approx(p)


def test_paired_bootstrap_multiclass_loop_with_registry_metrics():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, size=50)
    pa, pb = _probs(rng, y, 4, 1.0), _probs(rng, y, 4, 0.5)
    r = paired_bootstrap(y, pa, pb, "macro_f1", n_resamples=60, seed=3, return_samples=True)
    loop = [classification_metrics(y[row], pa[row], ["macro_f1"])["macro_f1"]
            - classification_metrics(y[row], pb[row], ["macro_f1"])["macro_f1"] for row in bootstrap_indices(50, 60, 3)]
    assert r["samples"] == pytest.approx(loop)


def test_paired_bootstrap_clear_difference_has_small_p():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, size=300)
    good, bad = _probs(rng, y, 2, 3.0), _probs(rng, y, 2, 0.0)
    r = paired_bootstrap(y, good, bad, "accuracy", n_resamples=500)
    assert r["ci_low"] > 0 and r["p_value"] == pytest.approx(2 / 501)


def test_paired_bootstrap_refuses_mismatched_models():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataError):
        paired_bootstrap(y, np.full((4, 2), 0.5), np.full((4, 3), 1 / 3), "accuracy")
    with pytest.raises(DataError):
        paired_bootstrap(y, np.full((4, 2), 0.5), np.full((4, 2), 0.5), "nonsense")
