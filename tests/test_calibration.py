"""Calibration metrics, reliability bins/diagram and temperature scaling (issue 16 item 3).

Every number is checked against an independent computation: a hand-worked 6-sample case, a plain-Python loop
restating the bin conventions, scikit-learn's log_loss / brier_score_loss, scipy's softmax.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from panderm.analysis.calibration import (
    apply_temperature,
    calibration_metrics,
    fit_temperature,
    reliability_bins,
    reliability_figure,
    temperature_report,
)
from panderm.errors import DataError

# Hand-worked case (K=3). top-1 confidence / hit:
#   0.4/1, 0.5/0, 0.6/1, 0.8/1, 0.8/0, 0.9/1   (samples 4 and 5 tie at 0.8)
HAND_P = np.array([
    [0.4, 0.3, 0.3],
    [0.2, 0.5, 0.3],
    [0.6, 0.2, 0.2],
    [0.1, 0.8, 0.1],
    [0.1, 0.1, 0.8],
    [0.9, 0.05, 0.05],
])
HAND_Y = np.array([0, 2, 0, 1, 0, 0])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def draw_labels(rng, p):
    """One label per row drawn from that row's probabilities (inverse CDF)."""
    u = rng.random(len(p))
    return np.minimum((np.cumsum(p, axis=1) < u[:, None]).sum(axis=1), p.shape[1] - 1)


def random_case(seed, n=300, k=4, scale=2.0):
    rng = np.random.default_rng(seed)
    p = softmax(rng.normal(size=(n, k)) * scale)
    return rng.integers(0, k, n), p


# --------------------------------------------------------------------------- #
# Brute-force restatements (loops, no shared code with the module)
# --------------------------------------------------------------------------- #
def loop_uniform_bin(c, n_bins):
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        if (lo < c <= hi) or (b == 0 and c == 0.0):
            return b
    raise AssertionError(c)


def loop_ece_uniform(values, hits, n_bins):
    n = len(values)
    members = [[] for _ in range(n_bins)]
    for i in range(n):
        members[loop_uniform_bin(values[i], n_bins)].append(i)
    total = 0.0
    for m in members:
        if m:
            acc = sum(hits[i] for i in m) / len(m)
            conf = sum(values[i] for i in m) / len(m)
            total += len(m) / n * abs(acc - conf)
    return total


def loop_ece_equal_mass(conf, hits, n_bins):
    n = len(conf)
    order = sorted(range(n), key=lambda i: (conf[i], i))  # ties keep input order
    sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
    total, start = 0.0, 0
    for size in sizes:
        m = order[start:start + size]
        start += size
        if m:
            acc = sum(hits[i] for i in m) / len(m)
            c = sum(conf[i] for i in m) / len(m)
            total += len(m) / n * abs(acc - c)
    return total


def top1(y, p):
    conf = [max(row) for row in p.tolist()]
    hits = [int(int(np.argmax(row)) == int(t)) for row, t in zip(p, y)]
    return conf, hits


# --------------------------------------------------------------------------- #
# Hand-worked values
# --------------------------------------------------------------------------- #
def test_hand_case_equal_width_ece():
    # 2 bins [0, .5], (.5, 1]: {0.4/1, 0.5/0} gap |.5-.45|, weight 2/6; {.6,.8,.8,.9 / 1,1,0,1} gap |.75-.775|
    m = calibration_metrics(HAND_Y, HAND_P, n_bins=2)
    assert m["ece"] == pytest.approx(2 / 6 * 0.05 + 4 / 6 * 0.025, abs=1e-12)
    assert m["ece"] == pytest.approx(1 / 30, abs=1e-12)
    # 5 bins: 0.4 -> (.2,.4], 0.5 and 0.6 -> (.4,.6], 0.8 x2 -> (.6,.8], 0.9 -> (.8,1]
    m5 = calibration_metrics(HAND_Y, HAND_P, n_bins=5)
    assert m5["ece"] == pytest.approx((0.6 + 0.1 + 0.6 + 0.1) / 6, abs=1e-12)
    assert m5["n_bins"] == 5


def test_hand_case_equal_mass_ece_and_tie_order():
    # 2 bins of 3: {.4,.5,.6 / 1,0,1}: |2/3 - .5|; {.8,.8,.9 / 1,0,1}: |2/3 - 2.5/3|
    assert calibration_metrics(HAND_Y, HAND_P, n_bins=2)["ece_equal_mass"] == pytest.approx(1 / 6, abs=1e-12)
    # 4 bins of sizes 2,2,1,1; the two 0.8s straddle bins 2|3 and keep input order (hit first):
    # {.4,.5}: .1  {.6,.8(hit)}: .6  {.8(miss)}: .8  {.9}: .1  -> 1.6/6 (the other order would give 0.8/6)
    assert calibration_metrics(HAND_Y, HAND_P, n_bins=4)["ece_equal_mass"] == pytest.approx(1.6 / 6, abs=1e-12)


def test_hand_case_classwise_ece():
    # 2 bins. class 0: p=[.4,.2,.6,.1,.1,.9], 1[y=0]=[1,0,1,0,1,1]: |2-.8| + |2-1.5| = 1.7
    # class 1: p=[.3,.5,.2,.8,.1,.05], ind=[0,0,0,1,0,0]: |0-1.15| + |1-.8| = 1.35
    # class 2: p=[.3,.3,.2,.1,.8,.05], ind=[0,1,0,0,0,0]: |1-.95| + |0-.8| = .85
    m = calibration_metrics(HAND_Y, HAND_P, n_bins=2)
    assert m["classwise_ece"] == pytest.approx((1.7 + 1.35 + 0.85) / (3 * 6), abs=1e-12)


def test_hand_case_brier_and_nll():
    onehot = np.eye(3)[HAND_Y]
    per_row = [0.36 + 0.09 + 0.09, 0.04 + 0.25 + 0.49, 0.16 + 0.04 + 0.04,
               0.01 + 0.04 + 0.01, 0.81 + 0.01 + 0.64, 0.01 + 0.0025 + 0.0025]
    m = calibration_metrics(HAND_Y, HAND_P)
    assert m["brier"] == pytest.approx(sum(per_row) / 6, abs=1e-12)
    assert m["brier"] == pytest.approx(((HAND_P - onehot) ** 2).sum() / 6, abs=1e-12)
    p_true = [0.4, 0.3, 0.6, 0.8, 0.1, 0.9]
    assert m["nll"] == pytest.approx(-sum(math.log(v) for v in p_true) / 6, abs=1e-12)


def test_hand_case_reliability_bins():
    b = reliability_bins(HAND_Y, HAND_P, n_bins=5)
    assert list(b["count"]) == [0, 1, 2, 2, 1]
    assert list(b["lower"]) == pytest.approx([0, .2, .4, .6, .8])
    assert list(b["upper"]) == pytest.approx([.2, .4, .6, .8, 1])
    assert b["accuracy"].tolist()[1:] == pytest.approx([1.0, 0.5, 0.5, 1.0])
    assert b["confidence"].tolist()[1:] == pytest.approx([0.4, 0.55, 0.8, 0.9])
    assert np.isnan(b.loc[0, "accuracy"]) and np.isnan(b.loc[0, "confidence"])
    q = reliability_bins(HAND_Y, HAND_P, n_bins=4, strategy="quantile")
    assert list(q["count"]) == [2, 2, 1, 1]
    assert list(q["lower"]) == pytest.approx([0.4, 0.6, 0.8, 0.9])
    assert list(q["upper"]) == pytest.approx([0.5, 0.8, 0.8, 0.9])
    assert list(q["accuracy"]) == pytest.approx([0.5, 1.0, 0.0, 1.0])


def test_confidence_on_an_edge_goes_to_the_lower_bin():
    # right-closed bins: 0.7 belongs to (0.6, 0.7] with 10 bins, 1.0 to (0.9, 1]
    p = np.array([[0.7, 0.3], [0.3, 0.7], [1.0, 0.0]])
    b = reliability_bins([0, 0, 0], p, n_bins=10)
    assert b.loc[6, "count"] == 2 and b.loc[9, "count"] == 1
    # hits: 0.7 right, 0.7 wrong, 1.0 right -> bin 6 gap |.5-.7|, bin 9 gap 0
    m = calibration_metrics([0, 0, 0], p, n_bins=10)
    assert m["ece"] == pytest.approx(2 / 3 * 0.2, abs=1e-12)
    # the first bin holds 0: class 1's p=0 in row 3 goes to [0, .1] with p=.3 (rows 1,3 -> bins 2 and 0)
    # class 0: p=.7,.3,1 all labelled 0 -> |1-.7| + |1-.3| + 0 ; class 1: p=.3,.7,0 never the label -> .3+.7+0
    assert m["classwise_ece"] == pytest.approx(((0.3 + 0.7) / 3 + (0.3 + 0.7) / 3) / 2, abs=1e-12)


# --------------------------------------------------------------------------- #
# Against brute force and scikit-learn on random data
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed,n,k,n_bins", [(0, 300, 4, 15), (1, 97, 2, 10), (2, 50, 7, 1), (3, 11, 3, 20),
                                             (4, 500, 5, 7)])
def test_ece_matches_loop_restatement(seed, n, k, n_bins):
    y, p = random_case(seed, n, k)
    # round so many confidences sit exactly on bin edges and tie with each other
    p = np.round(p, 1)
    p[:, -1] = 1.0 - p[:, :-1].sum(axis=1)
    p = np.clip(p, 0, 1)
    p /= p.sum(axis=1, keepdims=True)
    conf, hits = top1(y, p)
    m = calibration_metrics(y, p, n_bins=n_bins)
    assert m["ece"] == pytest.approx(loop_ece_uniform(conf, hits, n_bins), abs=1e-12)
    assert m["ece_equal_mass"] == pytest.approx(loop_ece_equal_mass(conf, hits, n_bins), abs=1e-12)
    cw = np.mean([loop_ece_uniform(p[:, c].tolist(), [int(t == c) for t in y], n_bins) for c in range(k)])
    assert m["classwise_ece"] == pytest.approx(cw, abs=1e-12)
    for strategy, ece in (("uniform", m["ece"]), ("quantile", m["ece_equal_mass"])):
        b = reliability_bins(y, p, n_bins=n_bins, strategy=strategy)
        assert len(b) == n_bins and b["count"].sum() == n
        assert (b["count"] * b["gap"].abs()).sum() / n == pytest.approx(ece, abs=1e-12)


def test_equal_mass_with_fewer_samples_than_bins():
    y, p = random_case(5, n=3, k=3)
    conf, hits = top1(y, p)
    m = calibration_metrics(y, p, n_bins=5)
    # each sample alone in its bin: ECE is the mean |hit - conf|
    assert m["ece_equal_mass"] == pytest.approx(np.mean(np.abs(np.array(hits) - np.array(conf))), abs=1e-12)
    q = reliability_bins(y, p, n_bins=5, strategy="quantile")
    assert list(q["count"]) == [1, 1, 1, 0, 0] and q["lower"].isna().tolist() == [False] * 3 + [True] * 2


def test_single_bin_ece_is_the_accuracy_confidence_gap():
    y, p = random_case(6, n=200, k=3)
    conf, hits = top1(y, p)
    m = calibration_metrics(y, p, n_bins=1)
    assert m["ece"] == pytest.approx(abs(np.mean(hits) - np.mean(conf)), abs=1e-12)
    assert m["ece_equal_mass"] == pytest.approx(m["ece"], abs=1e-12)


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 8)])
def test_brier_and_nll_match_sklearn(seed, k):
    y, p = random_case(seed, n=400, k=k)
    m = calibration_metrics(y, p)
    assert m["nll"] == pytest.approx(log_loss(y, p, labels=list(range(k))), rel=1e-12)
    assert m["brier"] == pytest.approx(
        brier_score_loss(y, p, labels=list(range(k)), scale_by_half=False), rel=1e-12)


def test_binary_brier_is_twice_sklearns_binary_brier():
    # the docstring's claim: for K=2 the multi-class Brier is 2x sklearn's binary brier_score_loss(y, p_1)
    y, p = random_case(11, n=250, k=2)
    assert calibration_metrics(y, p)["brier"] == pytest.approx(2 * brier_score_loss(y, p[:, 1]), rel=1e-12)


def test_nll_clips_zero_probability_at_1e_minus_12():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    m = calibration_metrics([1, 0], p)
    assert m["nll"] == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2, abs=1e-12)


def test_labels_absent_from_y_count_in_classwise_ece():
    # class 2 never occurs: its ECE is the mean p_2 (indicator always 0) with one bin
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.6, 0.2, 0.2]])
    m = calibration_metrics([0, 1, 0], p, n_bins=1)
    e0 = abs(2 / 3 - 1.3 / 3)
    e1 = abs(1 / 3 - 1.1 / 3)
    e2 = 0.6 / 3
    assert m["classwise_ece"] == pytest.approx((e0 + e1 + e2) / 3, abs=1e-12)


def test_values_are_plain_python_numbers():
    m = calibration_metrics(HAND_Y, HAND_P)
    assert set(m) == {"ece", "ece_equal_mass", "classwise_ece", "brier", "nll", "n_bins"}
    assert all(type(v) is float for k, v in m.items() if k != "n_bins") and type(m["n_bins"]) is int


# --------------------------------------------------------------------------- #
# Calibrated vs over-confident
# --------------------------------------------------------------------------- #
def test_calibrated_data_has_small_ece_and_sharpened_data_a_large_one():
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(4, 0.7), size=20000)
    y = draw_labels(rng, p)
    good = calibration_metrics(y, p)
    sharp = p ** 3
    sharp /= sharp.sum(axis=1, keepdims=True)
    bad = calibration_metrics(y, sharp)
    assert good["ece"] < 0.02 and good["ece_equal_mass"] < 0.02 and good["classwise_ece"] < 0.02
    assert bad["ece"] > 0.15 and bad["ece_equal_mass"] > 0.15 and bad["classwise_ece"] > 0.08
    assert bad["nll"] > good["nll"] and bad["brier"] > good["brier"]


# --------------------------------------------------------------------------- #
# Temperature scaling
# --------------------------------------------------------------------------- #
def test_apply_temperature_matches_scipy_softmax_and_keeps_argmax():
    from scipy.special import softmax as sp_softmax

    _, p = random_case(3, n=100, k=5)
    for t in (0.05, 0.5, 2.0, 50.0):
        q = apply_temperature(p, t)
        assert np.allclose(q, sp_softmax(np.log(p) / t, axis=1), rtol=1e-10, atol=1e-14)
        assert np.allclose(q.sum(axis=1), 1.0)
        assert (q.argmax(axis=1) == p.argmax(axis=1)).all()
    assert np.array_equal(apply_temperature(p, 1.0), p)


def test_apply_temperature_is_stable_for_tiny_temperatures_and_zero_probabilities():
    p = np.array([[0.7, 0.3, 0.0], [1e-300, 0.5, 0.5 - 1e-300], [0.2, 0.3, 0.5]])
    q = apply_temperature(p, 1e-4)  # log(0.5)/1e-4 ~ -6900: exp underflows to 0 without the row max
    assert np.isfinite(q).all() and np.allclose(q.sum(axis=1), 1.0)
    assert np.allclose(q[0], [1, 0, 0]) and np.allclose(q[2], [0, 0, 1])
    # the zero, clipped at 1e-12, becomes 1e-12**(1/2) before renormalising
    q2 = apply_temperature(p[:1], 2.0)
    w = np.sqrt([0.7, 0.3, 1e-12])
    assert np.allclose(q2[0], w / w.sum(), rtol=1e-12)


def test_temperature_recovers_a_planted_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5))
    y = draw_labels(rng, softmax(z))
    t = fit_temperature(y, softmax(z * 3))  # three times too sharp: T = 3 undoes it
    assert t == pytest.approx(3.0, rel=0.1)
    t_soft = fit_temperature(y, softmax(z / 2))  # too soft: T = 0.5
    assert t_soft == pytest.approx(0.5, rel=0.1)


def grid_nll_min(y, p):
    """The temperature of least NLL on a log grid, NLL by scipy's log_softmax (not the module's code)."""
    from scipy.special import log_softmax

    z = np.log(p)
    ts = np.exp(np.linspace(np.log(0.01), np.log(100), 801))
    nll = [-log_softmax(z / t, axis=1)[np.arange(len(y)), y].mean() for t in ts]
    return ts[int(np.argmin(nll))]


def test_fitted_temperature_is_the_grid_minimum():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(600, 3)) * 2
    y = draw_labels(rng, softmax(z))
    p = softmax(z * 1.7)
    t = fit_temperature(y, p)
    t_grid = grid_nll_min(y, p)
    assert t == pytest.approx(t_grid, rel=0.01)
    nll_t = log_loss(y, apply_temperature(p, t), labels=[0, 1, 2])
    for other in (t * 0.97, t * 1.03, t_grid):
        assert nll_t <= log_loss(y, apply_temperature(p, other), labels=[0, 1, 2]) + 1e-12


@pytest.mark.parametrize("seed,scale,case", [(0, 3.0, "sharp"), (1, 0.3, "soft"), (2, 1.0, "calibrated"),
                                              (3, 1.0, "random labels"), (4, 1.0, "all correct"),
                                              (5, 1.0, "all wrong")])
def test_temperature_never_worsens_validation_nll(seed, scale, case):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(300, 4))
    y = draw_labels(rng, softmax(z))
    p = softmax(z * scale)
    if case == "random labels":
        y = rng.integers(0, 4, len(y))
    elif case == "all correct":
        y = p.argmax(axis=1)
    elif case == "all wrong":
        y = (p.argmax(axis=1) + 1) % 4
    t = fit_temperature(y, p)
    before = calibration_metrics(y, p)["nll"]
    after = calibration_metrics(y, apply_temperature(p, t))["nll"]
    assert t > 0 and after <= before
    if t != 1.0:
        assert after < before


def test_temperature_is_one_when_one_is_the_exact_optimum():
    # p = (.8, .2) with labels 0 four times in five: d NLL / d(1/T) at T=1 is 4*.2*log4 - .8*log4 = 0
    p = np.tile([0.8, 0.2], (5, 1))
    y = np.array([0, 0, 0, 0, 1])
    assert fit_temperature(y, p) == 1.0
    r = temperature_report(y, p, y, p)
    assert r["temperature"] == 1.0 and r["val"]["after"] == r["val"]["before"]


def test_temperature_falls_back_to_one_when_the_optimiser_is_worse(monkeypatch):
    import scipy.optimize

    class Bad:
        x = math.log(50.0)  # far too soft for a sharp, mostly right model

    monkeypatch.setattr(scipy.optimize, "minimize_scalar", lambda *a, **k: Bad())
    rng = np.random.default_rng(8)
    z = rng.normal(size=(200, 3)) * 3
    y = z.argmax(axis=1)
    p = softmax(z)
    assert calibration_metrics(y, apply_temperature(p, 50.0))["nll"] > calibration_metrics(y, p)["nll"]
    assert fit_temperature(y, p) == 1.0


def test_temperature_report_before_after_and_metric_fn():
    from panderm.metrics import classification_metrics

    rng = np.random.default_rng(9)
    z = rng.normal(size=(800, 4)) * 1.5
    y = draw_labels(rng, softmax(z))
    p = softmax(z * 2.5)
    yv, pv, yt, pt = y[:400], p[:400], y[400:], p[400:]
    r = temperature_report(yv, pv, yt, pt, n_bins=10,
                           metric_fn=lambda yy, pp: classification_metrics(yy, pp, metrics=["accuracy"]))
    t = r["temperature"]
    assert t == fit_temperature(yv, pv) and t == pytest.approx(2.5, rel=0.25)
    for split, (ys, ps) in {"val": (yv, pv), "test": (yt, pt)}.items():
        before = {**calibration_metrics(ys, ps, 10), "accuracy": float(np.mean(ps.argmax(1) == ys))}
        after = {**calibration_metrics(ys, apply_temperature(ps, t), 10),
                 "accuracy": float(np.mean(ps.argmax(1) == ys))}
        assert r[split]["before"] == pytest.approx(before, abs=1e-12)
        assert r[split]["after"] == pytest.approx(after, abs=1e-12)
    assert r["val"]["after"]["nll"] < r["val"]["before"]["nll"]
    assert r["test"]["after"]["ece"] < r["test"]["before"]["ece"]


# --------------------------------------------------------------------------- #
# Figure
# --------------------------------------------------------------------------- #
def test_reliability_figure_draws_the_bins_and_names_the_ece():
    from matplotlib.figure import Figure

    y, p = random_case(12, n=300, k=3)
    fig = reliability_figure(y, p, n_bins=8, title="demo")
    assert isinstance(fig, Figure)
    top, bottom = fig.axes
    ece = calibration_metrics(y, p, 8)["ece"]
    assert "demo" in top.get_title() and f"ECE {ece:.4f}" in top.get_title()
    b = reliability_bins(y, p, 8)
    filled = b[b["count"] > 0]
    heights = [r.get_height() for r in top.patches[:len(filled)]]
    assert heights == pytest.approx(filled["accuracy"].tolist())
    assert [r.get_height() for r in bottom.patches] == b["count"].tolist()
    diag = top.lines[0]
    assert list(diag.get_xdata()) == [0, 1] and list(diag.get_ydata()) == [0, 1]


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
GOOD_Y = np.array([0, 1, 1])
GOOD_P = np.array([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])


def with_value(r, c, v):
    p = GOOD_P.copy()
    p[r, c] = v
    return p


@pytest.mark.parametrize("call,match", [
    (lambda: calibration_metrics(GOOD_Y, with_value(1, 0, 0.5)), "row 1 sums to 1.1"),
    (lambda: calibration_metrics(GOOD_Y, GOOD_P * 3), "sums to"),
    (lambda: calibration_metrics(GOOD_Y, with_value(2, 1, np.nan)), "not finite"),
    (lambda: calibration_metrics(GOOD_Y, np.array([[1.2, -0.2], [0.4, 0.6], [0.1, 0.9]])), "negative"),
    (lambda: calibration_metrics([0, 2, 1], GOOD_P), "label 2"),
    (lambda: calibration_metrics([0, -1, 1], GOOD_P), "negative label"),
    (lambda: calibration_metrics([0, 1], GOOD_P), "3 rows"),
    (lambda: calibration_metrics([0, 0.5, 1], GOOD_P), "integer class labels"),
    (lambda: calibration_metrics(GOOD_Y, GOOD_P, n_bins=0), "at least 1"),
    (lambda: calibration_metrics(GOOD_Y, GOOD_P, n_bins=2.5), "whole number"),
    (lambda: reliability_bins(GOOD_Y, GOOD_P, n_bins=-3), "at least 1"),
    (lambda: reliability_bins(GOOD_Y, GOOD_P, strategy="kmeans"), "strategy"),
    (lambda: reliability_figure(GOOD_Y, GOOD_P, n_bins=0), "at least 1"),
    (lambda: apply_temperature(GOOD_P, 0.0), "> 0"),
    (lambda: apply_temperature(GOOD_P, float("nan")), "> 0"),
    (lambda: apply_temperature(with_value(0, 0, 0.9), 2.0), "sums to"),
    (lambda: fit_temperature(GOOD_Y, with_value(0, 1, np.inf)), "validation"),
    (lambda: temperature_report(GOOD_Y, GOOD_P, [0, 1], np.eye(3)[:2]), "2 classes but test probs have 3"),
    (lambda: temperature_report(GOOD_Y, GOOD_P, [0, 5], np.eye(2)), "test: .*label 5"),
])
def test_bad_input_is_one_line_data_error(call, match):
    with pytest.raises(DataError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_float32_softmax_rows_are_accepted():
    rng = np.random.default_rng(13)
    z = rng.normal(size=(50, 134)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = rng.integers(0, 134, 50)
    assert calibration_metrics(y, p)["nll"] == pytest.approx(
        log_loss(y, p.astype(np.float64), labels=list(range(134))), rel=1e-5)
