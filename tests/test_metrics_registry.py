"""The metric registry (issue 14 item 4): one definition per metric, and the "add a metric" recipe of
docs/ARCHITECTURE.md done once with a toy metric that the metric calls, the bootstrap, the subgroup engine
and the tasks then report by name."""

from __future__ import annotations

import numpy as np
import pytest

from panderm import metrics as M
from panderm.data import benchmarks
from panderm.errors import DataError


def _error_rate(y_true, probs, y_pred):
    """The toy metric: 1 - accuracy, checkable against the built-in accuracy on every sample set."""
    return float(np.mean(y_true != y_pred))


@pytest.fixture
def error_rate():
    M.register_metric("error_rate", _error_rate)
    yield "error_rate"
    M.unregister_metric("error_rate")


def _data(n=120, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.random((n, k)) + np.eye(k)[y] * 0.5
    return y, p / p.sum(1, keepdims=True)


def test_one_metric_name_list():
    # The benchmark records validate their metric names against the registry; no second list.
    assert not hasattr(benchmarks, "METRIC_NAMES")
    for bench in benchmarks.BENCHMARKS.values():
        assert all(M.is_metric(m) for m in bench.metrics)
    assert M.metric_names() == M.METRIC_NAMES


def test_sensitivity_has_one_definition():
    """Multi-class sensitivity is balanced accuracy (one code path), binary is the class-1 recall."""
    y, p = _data(k=5)
    pred = p.argmax(1)
    assert M.sensitivity(y, pred) == M.balanced_accuracy(y, pred)
    yb, pb = _data(k=2, seed=1)
    predb = pb.argmax(1)
    tp = np.sum((yb == 1) & (predb == 1))
    assert M.sensitivity(yb, predb) == tp / np.sum(yb == 1)
    # The function and the named list give the same number (both read the registry entry).
    assert M.classification_metrics(y, p, ["sensitivity"])["sensitivity"] == M.sensitivity(y, pred, 5)


def test_registered_metric_is_reported_by_name(error_rate):
    y, p = _data()
    out = M.classification_metrics(y, p, ["accuracy", error_rate])
    assert out[error_rate] == pytest.approx(1 - out["accuracy"], abs=1e-15)
    # The default list reports it too, after the built-ins.
    default = M.classification_metrics(y, p)
    assert list(default)[-1] == error_rate
    assert M.metric_names()[-1] == error_rate and M.is_metric(error_rate)
    assert M.reported_metrics(("accuracy",)) == ("accuracy", error_rate)


def test_registered_metric_in_the_bootstrap_uses_the_same_resamples(error_rate):
    y, p = _data(n=80)
    ci = M.bootstrap_ci(y, p, ["accuracy", error_rate], n_resamples=60, seed=3, return_samples=True)
    np.testing.assert_allclose(ci[error_rate]["samples"], 1 - ci["accuracy"]["samples"], atol=1e-12)
    assert ci[error_rate]["value"] == pytest.approx(1 - ci["accuracy"]["value"])
    assert ci[error_rate]["n_resamples"] == 60


def test_registered_metric_on_weight_masks(error_rate):
    """Subgroups feed 0/1 masks through the same engine: the toy metric sees exactly the masked rows."""
    y, p = _data(n=50)
    pred = p.argmax(1)
    mask = np.zeros((1, 50))
    mask[0, :20] = 1
    val = M._compute([error_rate], y, p, pred, mask, "ovr")[error_rate][0]
    assert val == pytest.approx(np.mean(y[:20] != pred[:20]))


def test_tasks_report_the_registered_metric(error_rate):
    from panderm.tasks import linear_probe as lp
    from panderm.tasks.zeroshot import ZeroShotDataset

    ds = ZeroShotDataset("toy", table=None, classnames=("a", "b", "c"))
    assert ds.report_metrics[-1] == error_rate
    y, p = _data(k=3)
    scores = lp._score(y, p, "ovo")
    assert list(scores)[: len(lp.PROBE_METRICS)] == list(lp.PROBE_METRICS)
    assert scores[error_rate] == pytest.approx(1 - scores["accuracy"])
    cis = lp._bootstrap(y, p, "ovo", 20, 0)
    assert cis[error_rate]["mean"] == pytest.approx(1 - cis["accuracy"]["mean"])


def test_without_user_metrics_task_lists_are_unchanged():
    from panderm.tasks import linear_probe as lp
    from panderm.tasks.zeroshot import ZeroShotDataset

    assert ZeroShotDataset("toy", table=None, classnames=("a", "b", "c", "d")).report_metrics == (
        "accuracy", "balanced_accuracy", "weighted_f1", "top3_accuracy", "macro_f1", "auroc")
    y, p = _data(k=3)
    assert list(lp._score(y, p, "ovo")) == list(lp.PROBE_METRICS)


def test_registry_rejects_bad_registrations():
    with pytest.raises(ValueError):
        M.register_metric("accuracy", _error_rate)  # built-ins stay
    with pytest.raises(ValueError):
        M.register_metric("top5_accuracy", _error_rate)
    with pytest.raises(ValueError):
        M.register_metric("not a name", _error_rate)
    with pytest.raises(TypeError):
        M.register_metric("x", 3)
    with pytest.raises(KeyError):
        M.unregister_metric("accuracy")
    y, p = _data()
    with pytest.raises(DataError, match="unknown metric 'error_rate'"):
        M.classification_metrics(y, p, ["error_rate"])
