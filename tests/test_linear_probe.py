"""Tests for panderm.tasks.linear_probe: subsampling, the L-BFGS probe, the C search and the run loop."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from panderm.errors import DataError, PandermError
from panderm.tasks.linear_probe import (
    CONVERGED_TOL,
    PROBE_METRICS,
    LogisticRegressionProbe,
    default_c,
    probe_loss,
    run_linear_probe,
    shots_per_class,
    subsample_train,
    tune_c,
)

# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def blobs(n_per_class, n_features, n_classes, spread, seed=0):
    """Gaussian blobs: class c centred at a random mean scaled by `spread`, unit noise, float32."""
    rng = np.random.RandomState(seed)
    means = rng.randn(n_classes, n_features) * spread
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = means[y] + rng.randn(len(y), n_features)
    return X.astype(np.float32), y


def reference_balanced_rows(frame, percent, random_state=42):
    """The reference `load_data_balanced`, written with the literal pandas calls the spec describes.

    Returns the `row` column (position within the train split) of the selected rows, in order.
    """
    train = frame.query("split == 'train'")
    train = train.sample(frac=1, random_state=random_state).reset_index(drop=True)
    if percent >= 1:
        return train["row"].to_numpy()

    def at_least_one(group):
        n = max(1, int(len(group) * percent))
        n = min(n, len(group))
        return group.sample(n=n, random_state=random_state)

    with warnings.catch_warnings():
        # pandas 2.x warns that apply sees the grouping column; the sampled rows are the same either way.
        warnings.simplefilter("ignore")
        balanced = train.groupby("label", group_keys=False).apply(at_least_one)
    balanced = balanced.sample(frac=1, random_state=random_state).reset_index(drop=True)
    return balanced["row"].to_numpy()


@pytest.fixture(scope="module")
def labelled_frame():
    """A CSV-like frame: 4 classes of very different sizes (one with a single sample), splits interleaved."""
    rng = np.random.RandomState(7)
    train_labels = np.array([0] * 37 + [1] * 12 + [2] * 1 + [3] * 8)
    rng.shuffle(train_labels)
    rows = []
    train_pos = 0
    for label in train_labels:
        rows.append({"label": int(label), "split": "train", "row": train_pos})
        train_pos += 1
        if rng.rand() < 0.3:  # val/test rows in between, so train positions differ from frame positions
            rows.append({"label": int(rng.randint(4)), "split": rng.choice(["val", "test"]), "row": -1})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------
# Subsampling
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0.001, 0.05, 0.1, 0.3, 0.5, 0.77, 0.99, 1.0])
@pytest.mark.parametrize("random_state", [42, 43])
def test_subsample_matches_reference_pandas_calls(labelled_frame, percent, random_state):
    train_labels = labelled_frame.query("split == 'train'")["label"].to_numpy()
    expected = reference_balanced_rows(labelled_frame, percent, random_state)
    got = subsample_train(train_labels, percent, seed=random_state)
    np.testing.assert_array_equal(got, expected)


def test_subsample_per_class_counts(labelled_frame):
    labels = labelled_frame.query("split == 'train'")["label"].to_numpy()
    sizes = np.bincount(labels)  # 37, 12, 1, 8
    for percent in (0.001, 0.1, 0.3, 0.5):
        idx = subsample_train(labels, percent)
        assert len(np.unique(idx)) == len(idx)
        expected = [min(n, max(1, math.floor(n * percent))) for n in sizes]
        assert np.bincount(labels[idx], minlength=4).tolist() == expected
    # p tiny: exactly one per class, the single-sample class included.
    assert np.bincount(labels[subsample_train(labels, 1e-6)]).tolist() == [1, 1, 1, 1]
    # p >= 1: every row, shuffled (not the identity order).
    full = subsample_train(labels, 1.0)
    assert sorted(full.tolist()) == list(range(len(labels)))
    assert full.tolist() != list(range(len(labels)))


def test_subsample_seed_changes_selection_and_rejects_bad_percent(labelled_frame):
    labels = labelled_frame.query("split == 'train'")["label"].to_numpy()
    assert not np.array_equal(subsample_train(labels, 0.5, seed=42), subsample_train(labels, 0.5, seed=43))
    np.testing.assert_array_equal(subsample_train(labels, 0.5), subsample_train(labels, 0.5, seed=42))
    for bad in (0, -0.1, float("nan"), 1.5, 2.0):
        with pytest.raises(DataError, match=r"percent_data must be in \(0, 1\]"):
            subsample_train(labels, bad)


def test_shots_per_class():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 6)
    idx, notes = shots_per_class(labels, 4, seed=42)
    assert np.bincount(labels[idx]).tolist() == [4, 2, 4]
    assert len(set(idx.tolist())) == len(idx)
    assert len(notes) == 1 and "class 1" in notes[0]
    idx2, _ = shots_per_class(labels, 4, seed=42)
    np.testing.assert_array_equal(idx, idx2)
    # A larger k with the same seed extends the smaller selection.
    bigger, _ = shots_per_class(labels, 5, seed=42)
    assert set(idx.tolist()) <= set(bigger.tolist())
    assert not np.array_equal(idx, shots_per_class(labels, 4, seed=43)[0])
    with pytest.raises(DataError):
        shots_per_class(labels, 0)


# --------------------------------------------------------------------------------------------------------
# The objective and the probe
# --------------------------------------------------------------------------------------------------------


def test_probe_loss_equals_hand_computation():
    rng = np.random.RandomState(3)
    X = rng.randn(9, 4)
    y = np.array([0, 1, 2, 2, 1, 0, 0, 2, 1])
    W = rng.randn(3, 4)
    b = rng.randn(3)
    C = 2.5
    logits = X @ W.T + b
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = -log_softmax[np.arange(len(y)), y].mean()
    expected = ce + (1.0 / C) * 0.5 * np.sqrt((W**2).sum())  # unsquared Frobenius norm, bias not penalised
    got = probe_loss(torch.tensor(W), torch.tensor(b), torch.tensor(X), torch.tensor(y), C)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # The bias does not enter the penalty: a huge bias shift that leaves CE unchanged leaves the loss unchanged.
    shifted = probe_loss(torch.tensor(W), torch.tensor(b + 100.0), torch.tensor(X), torch.tensor(y), C)
    assert float(shifted) == pytest.approx(expected, rel=1e-9)


def test_probe_separable_data_full_train_accuracy():
    X, y = blobs(40, 6, 4, spread=8.0, seed=1)
    probe = LogisticRegressionProbe(C=1e4).fit(X, y)
    assert (probe.predict(X) == y).mean() == 1.0
    assert probe.coef_.shape == (4, 6) and probe.intercept_.shape == (4,)
    assert probe.coef_.dtype == np.float32
    probs = probe.predict_proba(X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probe.predict(X), probs.argmax(axis=1))


@pytest.mark.parametrize("C", [0.5, 5.0, 100.0])
def test_probe_solution_is_stationary(C):
    """At the fitted (W, b) the gradient of the reference objective vanishes (W is away from the kink at 0)."""
    X, y = blobs(50, 5, 3, spread=1.0, seed=2)
    probe = LogisticRegressionProbe(C=C).fit(X, y)
    assert np.linalg.norm(probe.coef_) > 1e-2
    W = torch.tensor(probe.coef_, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(probe.intercept_, dtype=torch.float64, requires_grad=True)
    loss = probe_loss(W, b, torch.tensor(X, dtype=torch.float64), torch.tensor(y), C)
    loss.backward()
    grad_norm = math.sqrt(float((W.grad**2).sum() + (b.grad**2).sum()))
    assert grad_norm < 1e-3
    assert probe.loss_ == pytest.approx(loss.item(), rel=1e-5)
    # A squared-norm fit would not be stationary for this objective: check the test can tell them apart.
    W_sq = torch.tensor(probe.coef_ * 1.5, dtype=torch.float64, requires_grad=True)
    probe_loss(W_sq, b.detach(), torch.tensor(X, dtype=torch.float64), torch.tensor(y), C).backward()
    assert float(W_sq.grad.norm()) > 1e-2


def _float64_gradient(probe, X, y, C):
    """max |∇| of the reference objective at the probe's (W, b), in float64 NumPy (independent of torch)."""
    X64, W, b = X.astype(np.float64), probe.coef_.astype(np.float64), probe.intercept_.astype(np.float64)
    z = X64 @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    g_w = p.T @ X64 / len(y) + (0.5 / C) * W / np.linalg.norm(W)
    g_b = p.sum(0) / len(y)
    return max(np.abs(g_w).max(), np.abs(g_b).max())


@pytest.mark.parametrize("shape", [(120, 48, 6, 0.35), (40, 64, 8, 1.0), (30, 128, 10, 0.5)])
def test_fast_stopping_rule_lands_on_the_reference_solution(shape):
    """Same objective, same start, same L-BFGS: the rule max |∇| ≤ tol holds at the end (checked again in
    float64 NumPy at the stored float32 weights). A float32 run that ends before the reference's is the
    reference fit stopped earlier; where float32 stalls first, float64 restarts finish the job. Loss equals the
    reference's to 1e-5 and probabilities to 1e-3."""
    n, d, k, spread = shape
    X, y = blobs(n, d, k, spread=spread, seed=4)
    C = default_c(d, k)
    ref = LogisticRegressionProbe().fit(X, y)
    fast = LogisticRegressionProbe(tol=CONVERGED_TOL).fit(X, y)
    assert fast.converged_ is True and ref.converged_ is None
    assert _float64_gradient(fast, X, y, C) <= CONVERGED_TOL
    if fast.n_rounds_ == 1:  # the float32 run met the rule: it stopped no later than the reference
        assert fast.n_evals_ <= ref.n_evals_ and fast.n_iter_ <= ref.n_iter_
    assert _float64_gradient(fast, X, y, C) == pytest.approx(fast.grad_max_, rel=1e-2)
    assert fast.loss_ == pytest.approx(ref.loss_, abs=1e-5)
    np.testing.assert_allclose(fast.predict_proba(X), ref.predict_proba(X), atol=1e-3)


def test_loose_tolerance_stops_early_and_is_stationary_to_that_tolerance():
    X, y = blobs(40, 64, 8, spread=1.0, seed=4)
    C = default_c(64, 8)
    ref = LogisticRegressionProbe().fit(X, y)
    loose = LogisticRegressionProbe(tol=1e-4).fit(X, y)
    assert loose.n_iter_ < ref.n_iter_
    g = _float64_gradient(loose, X, y, C)
    assert 1e-5 < g <= 1.1e-4 and loose.grad_max_ <= 1e-4
    assert loose.loss_ >= ref.loss_
    assert _float64_gradient(ref, X, y, C) < 1e-5


def test_tol_must_be_positive():
    for bad in (0, -1e-5, float("nan")):
        with pytest.raises(PandermError, match="tol"):
            LogisticRegressionProbe(tol=bad)


def test_run_linear_probe_records_the_stopping_rule():
    X, y = blobs(30, 8, 3, spread=1.0, seed=1)
    res = run_linear_probe(X, y, X, y, n_bootstrap=0, tol=CONVERGED_TOL)
    run = res["runs"][0]
    idx = run["train_indices"]
    direct = LogisticRegressionProbe(tol=CONVERGED_TOL).fit(X[idx], y[idx])
    assert run["tol"] == CONVERGED_TOL
    assert (run["n_iter"], run["n_evals"], run["grad_max"]) == (direct.n_iter_, direct.n_evals_, direct.grad_max_)
    assert run_linear_probe(X, y, X, y, n_bootstrap=0)["runs"][0]["tol"] is None


def test_probe_strong_regularisation_gives_exactly_zero_weights_optimum():
    """With the unsquared norm, small C puts the optimum at W = 0: the CE gradient there is inside the ball."""
    X, y = blobs(50, 5, 3, spread=0.5, seed=2)
    C = 0.01
    probe = LogisticRegressionProbe(C=C).fit(X, y)
    W0 = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(probe.intercept_, dtype=torch.float64)
    torch.nn.functional.cross_entropy(torch.tensor(X, dtype=torch.float64) @ W0.T + b, torch.tensor(y)).backward()
    assert float(W0.grad.norm()) <= 0.5 / C  # subgradient optimality condition at W = 0
    assert np.linalg.norm(probe.coef_) < 1e-3


def test_probe_huge_c_matches_unregularised_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(200, 5, 3, spread=0.5, seed=0)  # overlapping classes: the unpenalised optimum is finite
    probe = LogisticRegressionProbe(C=1e8).fit(X, y)
    sk = LogisticRegression(C=1e10, tol=1e-10, max_iter=10_000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=2e-3)
    X_new, _ = blobs(30, 5, 3, spread=0.5, seed=9)
    np.testing.assert_allclose(probe.predict_proba(X_new), sk.predict_proba(X_new), atol=2e-3)
    assert (probe.predict(X) == sk.predict(X)).mean() >= 0.99


def test_probe_default_c_is_d_times_k_over_100():
    assert default_c(1024, 7) == pytest.approx(71.68)
    assert default_c(1024, 2) == pytest.approx(20.48)
    assert default_c(768, 6) == pytest.approx(46.08)
    X, y = blobs(30, 10, 4, spread=2.0, seed=4)
    probe = LogisticRegressionProbe().fit(X, y)
    assert probe.C is None
    assert probe.C_ == pytest.approx(10 * 4 / 100)
    # The fit used that C: the objective with C = 0.4 is stationary at the solution, with C = 4 it is not.
    for C, stationary in ((0.4, True), (4.0, False)):
        W = torch.tensor(probe.coef_, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(probe.intercept_, dtype=torch.float64, requires_grad=True)
        probe_loss(W, b, torch.tensor(X, dtype=torch.float64), torch.tensor(y), C).backward()
        assert (float(W.grad.norm()) < 1e-3) is stationary


def test_probe_is_deterministic_and_leaves_global_rng_alone():
    X, y = blobs(30, 8, 3, spread=1.0, seed=5)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = LogisticRegressionProbe(C=1.0).fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)
    b = LogisticRegressionProbe(C=1.0).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    # The seed drives the nn.Linear init, which L-BFGS starts from: a one-iteration fit shows it.
    one = LogisticRegressionProbe(C=1.0, max_iter=1, seed=0).fit(X, y)
    other = LogisticRegressionProbe(C=1.0, max_iter=1, seed=1).fit(X, y)
    assert not np.allclose(one.coef_, other.coef_)


def test_probe_fits_read_only_arrays_without_a_warning():
    """Labels and features may be read-only (a memory-mapped feature cache, a pandas column): the fit copies
    them instead of letting torch warn "The given NumPy array is not writable", and the weights do not change."""
    X, y = blobs(20, 6, 3, spread=2.0)
    expected = LogisticRegressionProbe(seed=0).fit(X, y)
    X_ro, y_ro = X.copy(), y.astype(np.int64)
    X_ro.flags.writeable = False
    y_ro.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = LogisticRegressionProbe(seed=0).fit(X_ro, y_ro)
    np.testing.assert_array_equal(probe.coef_, expected.coef_)
    np.testing.assert_array_equal(probe.intercept_, expected.intercept_)


def test_probe_rejects_bad_labels():
    X, y = blobs(10, 4, 3, spread=1.0)
    with pytest.raises(DataError, match=r"\[1\]"):
        LogisticRegressionProbe().fit(X, np.where(y == 1, 2, y))  # labels {0, 2}: class 1 missing
    with pytest.raises(DataError):
        LogisticRegressionProbe().fit(X, y - 1)
    with pytest.raises(DataError):
        LogisticRegressionProbe().fit(X[:5], y)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError):
        LogisticRegressionProbe().fit(bad, y)


# --------------------------------------------------------------------------------------------------------
# C search (needs panderm.metrics)
# --------------------------------------------------------------------------------------------------------


def test_tune_c_picks_the_known_best_c_and_breaks_ties_towards_smaller_c():
    X, y = blobs(30, 4, 3, spread=6.0, seed=6)
    X_val, y_val = blobs(20, 4, 3, spread=6.0, seed=6)
    # Tiny C: W = 0 exactly, one class predicted, balanced accuracy 1/3. Large C: separable, 1.0 on both.
    grid = [1e4, 1e-4, 1e3, 1e-3]  # unsorted on purpose
    best, table = tune_c(X, y, X_val, y_val, grid=grid)
    assert best == 1e3  # 1e3 and 1e4 tie at 1.0: the smaller C wins
    assert [row["C"] for row in table] == [1e-4, 1e-3, 1e3, 1e4]
    assert [round(row["score"], 6) for row in table] == [round(1 / 3, 6), round(1 / 3, 6), 1.0, 1.0]

    # Val labels that contradict train: the best classifier on val is the constant one (smallest C).
    flipped = (y_val + 1) % 3
    best, table = tune_c(X, y, X_val, flipped, grid=grid)
    assert best == 1e-4
    assert table[0]["score"] > table[-1]["score"]


def test_tune_c_default_grid_contains_reference_c():
    X, y = blobs(20, 10, 2, spread=2.0, seed=8)
    best, table = tune_c(X, y, X, y, grid=None)
    cs = [row["C"] for row in table]
    assert len(cs) == 13
    assert any(math.isclose(c, default_c(10, 2)) for c in cs)
    assert cs == sorted(cs) and best in cs


# --------------------------------------------------------------------------------------------------------
# run_linear_probe (needs panderm.metrics)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_data():
    X, y = blobs(40, 6, 3, spread=1.2, seed=10)
    X_test, y_test = blobs(15, 6, 3, spread=1.2, seed=10)  # same means (same seed), fresh noise below
    X_test = X_test + np.random.RandomState(11).randn(*X_test.shape).astype(np.float32)
    return X, y, X_test, y_test


def test_run_linear_probe_structure_and_aggregation(probe_data):
    X, y, X_test, y_test = probe_data
    out = run_linear_probe(X, y, X_test, y_test, percent_data=(0.25, 1.0), seeds=(0, 1, 2), n_bootstrap=20)
    assert out["setting"] == "percent" and out["n_classes"] == 3 and out["n_features"] == 6
    assert out["metric_names"] == list(PROBE_METRICS)
    assert len(out["runs"]) == 6
    assert [(r["percent"], r["seed"]) for r in out["runs"]] == [(p, s) for p in (0.25, 1.0) for s in (0, 1, 2)]
    for run in out["runs"]:
        assert run["random_state"] == 42 + run["seed"]
        np.testing.assert_array_equal(run["train_indices"], subsample_train(y, run["percent"], seed=42 + run["seed"]))
        assert run["n_train"] == len(run["train_indices"])
        assert run["C"] == pytest.approx(6 * 3 / 100)
        assert run["probs"].shape == (len(y_test), 3)
        np.testing.assert_allclose(run["probs"].sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(run["predictions"], run["probs"].argmax(axis=1))
        assert set(run["metrics"]) == set(PROBE_METRICS)
        assert set(run["ci"]) == set(PROBE_METRICS)
        # The accuracy metric belongs to these predictions.
        assert run["metrics"]["accuracy"] == pytest.approx((run["predictions"] == y_test).mean())
    assert sum(out["runs"][0]["class_counts"]) == out["runs"][0]["n_train"] == 30

    assert set(out["summary"]) == {0.25, 1.0}
    for percent, per_metric in out["summary"].items():
        runs = [r for r in out["runs"] if r["percent"] == percent]
        for name in PROBE_METRICS:
            values = [r["metrics"][name] for r in runs]
            assert per_metric[name]["values"] == values
            assert per_metric[name]["n_seeds"] == 3
            assert per_metric[name]["mean"] == pytest.approx(np.mean(values), nan_ok=True)
            assert per_metric[name]["std"] == pytest.approx(np.std(values), nan_ok=True)


def test_run_linear_probe_seed0_is_the_reference_fit(probe_data):
    X, y, X_test, y_test = probe_data
    out = run_linear_probe(X, y, X_test, y_test, percent_data=0.5, seeds=0, n_bootstrap=0)
    run = out["runs"][0]
    assert run["ci"] is None
    idx = subsample_train(y, 0.5, seed=42)
    direct = LogisticRegressionProbe(seed=0).fit(X[idx], y[idx])
    np.testing.assert_array_equal(run["probs"], direct.predict_proba(X_test))
    assert out["summary"][0.5]["accuracy"]["std"] == 0.0


def test_run_linear_probe_tune_c_and_shots(probe_data):
    X, y, X_test, y_test = probe_data
    grid = [0.01, 1.0, 100.0]
    out = run_linear_probe(X, y, X_test, y_test, val_X=X_test, val_y=y_test, tune_c=True, n_bootstrap=0, c_grid=grid)
    run = out["runs"][0]
    assert run["C"] in grid and [row["C"] for row in run["c_search"]] == grid
    shots = run_linear_probe(X, y, X_test, y_test, shots=(2, 5), seeds=(0, 1), n_bootstrap=0)
    assert shots["setting"] == "shots" and set(shots["summary"]) == {2, 5}
    assert [r["n_train"] for r in shots["runs"]] == [6, 6, 15, 15]
    with pytest.raises(DataError):
        run_linear_probe(X, y, X_test, y_test, tune_c=True, n_bootstrap=0)  # no val split
    with pytest.raises(PandermError):
        run_linear_probe(X, y, X_test, y_test, val_X=X, val_y=y, tune_c=True, C=1.0, n_bootstrap=0)


def test_run_linear_probe_missing_class_and_out_of_range_labels(probe_data):
    X, y, X_test, y_test = probe_data
    no_class_1 = y != 1
    with pytest.raises(DataError, match=r"class 1 .*percent_data=1\.0"):
        run_linear_probe(X[no_class_1], y[no_class_1], X_test, y_test, n_bootstrap=0)
    with pytest.raises(DataError, match="out of range"):
        run_linear_probe(X, y, X_test, np.where(y_test == 2, 5, y_test), n_classes=3, n_bootstrap=0)
    with pytest.raises(DataError):
        run_linear_probe(X, y - 1, X_test, y_test, n_bootstrap=0)
    with pytest.raises(DataError):
        run_linear_probe(X, y, X_test[:, :4], y_test, n_bootstrap=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_cuda_matches_cpu():
    X, y = blobs(50, 16, 3, spread=1.0, seed=12)
    cpu = LogisticRegressionProbe(C=1.0, device="cpu").fit(X, y)
    gpu = LogisticRegressionProbe(C=1.0, device="cuda").fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-4)


def test_fractions_that_keep_the_same_rows_are_reported_once(caplog):
    """6 train images per class: 0.1 and 0.3 both keep 1 per class (the same rows), 0.5 keeps 3."""
    X, y = blobs(6, 4, 3, spread=2.0, seed=3)
    with caplog.at_level("WARNING", logger="panderm.tasks.linear_probe"):
        out = run_linear_probe(X, y, X, y, percent_data=(0.1, 0.3, 0.5, 1.0), n_bootstrap=0)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1, lines
    assert "0.1 and 0.3" in lines[0] and "3 images, 1 per class" in lines[0]
    runs = {r["percent"]: r for r in out["runs"]}
    np.testing.assert_array_equal(runs[0.1]["train_indices"], runs[0.3]["train_indices"])
    caplog.clear()
    with caplog.at_level("WARNING", logger="panderm.tasks.linear_probe"):
        run_linear_probe(X, y, X, y, percent_data=(0.5, 1.0), n_bootstrap=0)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_shots_above_a_class_size_log_one_line_and_raise_no_python_warning(caplog):
    X, y = blobs(4, 4, 3, spread=2.0, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old code warned once per class and seed
        with caplog.at_level("WARNING", logger="panderm.tasks.linear_probe"):
            out = run_linear_probe(X, y, X, y, shots=(2, 10), seeds=(0, 1), n_bootstrap=0,
                                   class_names=["mel", "nv", "bcc"])
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert lines == ["linear probe: shots 10: 3 classes have fewer than 10 training images; using all of them: "
                     "mel 4, nv 4, bcc 4"]
    assert [r["n_train"] for r in out["runs"]] == [6, 6, 12, 12]
    assert len(out["runs"][2]["warnings"]) == 3  # per-class notes stay in the results
