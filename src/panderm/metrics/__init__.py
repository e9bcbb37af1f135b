"""Classification metrics and bootstrap confidence intervals.

Every metric the PanDerm-2 / DermFM-Zero evaluation code reports, with the same
definitions as the scikit-learn calls used there:

* zero-shot (docs/REFERENCE.md, Zero-shot classification): accuracy ("top-1"), weighted F1, top-3 accuracy,
  AUROC (one-hot macro over the columns, ``multi_class="onehot"``: for K == 2 the
  mean of both columns' AUROCs, which equals binary AUROC on p1 unless scores tie);
* linear probe (docs/REFERENCE.md, Linear probe): accuracy, balanced accuracy, quadratic kappa,
  weighted F1, AUROC (binary, or OvO macro), macro average precision (AUPR);
* bootstrap CI pipeline (docs/REFERENCE.md, Metrics): accuracy, balanced accuracy,
  macro/weighted F1, sensitivity, specificity, AUROC (OvR macro), with 1000
  i.i.d. resamples drawn exactly like the published script.

All metrics are computed from one internal engine that takes a matrix of
per-sample weights ``W[b, i]`` (how often sample ``i`` occurs in replicate ``b``).
A point estimate is the single row ``W = 1``; a bootstrap replicate is the count
vector of its resampled indices. Duplicated rows and integer weights give the
same confusion matrices, ranks and precision/recall curves, so the bootstrap is
vectorised over replicates instead of calling scikit-learn 1000 times, and the
point estimates and the replicates cannot drift apart.

Undefined values (AUROC with one class, sensitivity without positives, ...) are
returned as ``nan`` rather than raised; the bootstrap skips them per metric.

Labels are integers ``0..K-1`` where ``K`` is the number of columns of ``probs``.
Bad input raises :class:`panderm.errors.DataError` with a one-line message.

Modules: ``_inputs`` (checks), ``engine`` (the weighted engine), ``registry`` (names -> engine entries,
``register_metric``), ``scores`` (the per-metric functions, ``classification_metrics``), ``bootstrap``.
Every name stays importable from ``panderm.metrics``.
"""

from __future__ import annotations

from ._inputs import (  # noqa: F401  (re-exported for the analyses that validate like the metrics)
    MULTI_CLASS as _MULTI_CLASS,
    _as_labels,
    _as_probs,
    _check_multi_class,
    _check_range,
    _label_pair,
    _labels_and_probs,
)
from .bootstrap import _CHUNK_CELLS, bootstrap_ci, bootstrap_indices, format_ci  # noqa: F401
from .engine import (  # noqa: F401
    _aupr_w,
    _auroc_w,
    _binary_ap,
    _binary_auc,
    _confusion,
    _Counts,
    _grouped_pos_neg,
    _masked_mean,
    _safe_div,
    _tie_groups,
    _topk_hits,
)
from .registry import (  # noqa: F401
    _TOPK_RE,
    METRIC_NAMES,
    REFERENCE_BOOTSTRAP_METRICS,
    MetricFn,
    _compute,
    _one,
    _resolve_metrics,
    is_metric,
    metric_names,
    register_metric,
    reported_metrics,
    unregister_metric,
)
from .registry import __all__ as _registry_names
from .scores import (  # noqa: F401
    _label_metric,
    _prepare,
    accuracy,
    aupr,
    auroc,
    balanced_accuracy,
    classification_metrics,
    macro_f1,
    probs_to_pred,
    quadratic_kappa,
    sensitivity,
    specificity,
    top_k_accuracy,
    weighted_f1,
)

__all__ = [
    *_registry_names,
    "accuracy",
    "balanced_accuracy",
    "weighted_f1",
    "macro_f1",
    "quadratic_kappa",
    "sensitivity",
    "specificity",
    "top_k_accuracy",
    "auroc",
    "aupr",
    "probs_to_pred",
    "classification_metrics",
    "bootstrap_indices",
    "bootstrap_ci",
    "format_ci",
]
