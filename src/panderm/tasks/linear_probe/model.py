"""The linear probe's classifier: the reference's L-BFGS logistic regression on frozen features.

``nn.Linear(D, K)`` after ``torch.manual_seed(0)``, loss ``mean CE + (1/C)·0.5·‖W‖_F`` (unsquared Frobenius
norm, bias not penalised), one full-batch strong-Wolfe L-BFGS step, float32, ``C = D·K/100`` by default
(docs/REFERENCE.md, Linear probe), plus the fast stopping rule that finishes a fit in float64.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from panderm.errors import DataError, PandermError

from .sampling import _as_labels

log = logging.getLogger(__name__)

# Gradient tolerance of the fast stopping rule (`tol`): the panderm CLI's default; the doors keep the reference's.
CONVERGED_TOL = 1e-5
#: Cap on the float64 L-BFGS restarts (of ``max_iter`` iterations each) that finish a fast-rule fit.
MAX_REFINE_ROUNDS = 5
SOLVERS = ("fast", "reference")


def solver_tol(solver: str) -> float | None:
    """The `tol` of a named stopping rule: "fast" → :data:`CONVERGED_TOL`, "reference" → None."""
    if solver not in SOLVERS:
        raise PandermError(f"solver must be 'fast' or 'reference', got {solver!r}")
    return CONVERGED_TOL if solver == "fast" else None


def _writable(arr: np.ndarray) -> np.ndarray:
    return arr if arr.flags.writeable else arr.copy()


def default_c(n_features: int, n_classes: int) -> float:
    """The reference's fixed regularisation heuristic ``C = D·K/100`` (e.g. 1024 features, 7 classes: 71.68)."""
    return n_features * n_classes / 100.0


def probe_loss(weight: torch.Tensor, bias: torch.Tensor, X: torch.Tensor, y: torch.Tensor, C: float) -> torch.Tensor:
    """The reference objective: ``mean CE(X Wᵀ + b, y) + (1/C)·0.5·‖W‖_F``.

    The penalty is the *unsquared* Frobenius norm of the weight (``torch.norm`` of the matrix), so C is not
    sklearn's C: the penalty grows linearly, not quadratically, with the weights. The bias is not penalised.
    """
    # F.linear is the reference's nn.Linear forward (one fused addmm): `X @ W.T + b` rounds differently on some
    # CPUs (AVX-512), and L-BFGS on this weakly penalised loss turns a 1e-7 difference into 1e-2 in the weights.
    logits = F.linear(X, weight, bias)
    return F.cross_entropy(logits, y) + (1.0 / C) * 0.5 * torch.linalg.matrix_norm(weight, ord="fro")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" → CPU (deterministic), "auto" → CUDA when available (what the reference does)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PandermError(f"device {device!r} was requested but CUDA is not available; use the CPU", param="device")
    return dev


def _as_features(X: Any, name: str = "features") -> np.ndarray:
    """Return ``X`` as a finite 2-D float32 array, or raise DataError (the reference asserts no NaNs)."""
    arr = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [N, D], got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contain NaN or infinite values")
    return arr


class LogisticRegressionProbe:
    """Multinomial logistic regression fitted like the reference linear probe (sklearn-style API).

    Parameters
    ----------
    C:
        Inverse regularisation strength of the unsquared-norm penalty (see :func:`probe_loss`). ``None`` uses
        the reference heuristic ``D·K/100`` (:func:`default_c`), resolved at ``fit`` time.
    seed:
        ``torch.manual_seed`` applied before building ``nn.Linear`` (reference: 0). The caller's global torch
        RNG state is restored afterwards.
    max_iter:
        L-BFGS ``max_iter`` of the single ``step`` (reference: 1000). Other L-BFGS settings are torch's
        defaults, as in the reference: lr 1, history 100, tolerance_grad 1e-7, tolerance_change 1e-9,
        max_eval 1.25·max_iter.
    tol:
        ``None`` (default): the reference's stopping rule. In float32 the gradient never reaches 1e-7, so the
        reference runs until the loss stops changing, and its last iterations are strong-Wolfe line searches
        of up to 25 evaluations that no longer move the weights — most of its time. A number is the rule
        ``max |∇| ≤ tol`` (same objective, same start, same L-BFGS, stopped as soon as the rule holds):
        :data:`CONVERGED_TOL` (1e-5, ten times stricter than scikit-learn's default ``tol``) reaches the
        reference's solution to ~1e-3 in probability at a fraction of its cost (docs/BENCHMARKS.md). Where
        float32 stalls first (ill-conditioned features: the loss stops changing at max |∇| 1e-4–1e-1), the fit
        goes on in float64 (L-BFGS restarts, at most :data:`MAX_REFINE_ROUNDS` × ``max_iter`` more iterations)
        until the rule holds; ``converged_`` says whether it did.
    device:
        "cpu" (default, bit-for-bit repeatable), "cuda", or "auto" (CUDA when available, like the reference).

    Attributes (after ``fit``)
    --------------------------
    coef_ : np.ndarray [K, D] float32 · intercept_ : np.ndarray [K] float32 · classes_ : ``arange(K)``
    C_ : float, the C actually used · n_iter_ : L-BFGS iterations · loss_ : final objective value ·
    n_features_in_ : D · n_evals_ : objective evaluations · grad_max_ : final ``max |∇|`` (with ``tol``: in
    float64 at the stored float32 weights) · converged_ : ``grad_max_ <= tol`` (None for the reference rule) ·
    n_rounds_ : L-BFGS runs (1, plus the float64 restarts).  ``C`` keeps the constructor value (``None`` stays ``None``), as in sklearn.
    """

    def __init__(self, C: float | None = None, seed: int = 0, max_iter: int = 1000, device: str | None = "cpu",
                 tol: float | None = None):
        if C is not None and not (math.isfinite(C) and C > 0):
            raise PandermError(f"C must be a positive number, got {C!r}")
        if tol is not None and not (math.isfinite(tol) and tol > 0):
            raise PandermError(f"tol must be a positive number or None (the reference's stopping rule), got {tol!r}")
        self.tol = tol
        self.C = C
        self.seed = seed
        self.max_iter = max_iter
        self.device = device

    def fit(self, X: Any, y: Any) -> LogisticRegressionProbe:
        """Fit on the full batch. ``y`` must hold exactly the labels ``0..K-1`` (K = number of distinct labels).

        K is taken from the train labels, as in the reference; a label set with a gap would give a K that does
        not cover the largest label, so it is rejected.
        """
        X_np = _as_features(X, "train features")
        y_np = _as_labels(y, "train labels")
        if len(X_np) != len(y_np):
            raise DataError(f"train features have {len(X_np)} rows but train labels have {len(y_np)}")
        if len(y_np) == 0:
            raise DataError("the train split is empty")
        classes = np.unique(y_np)
        n_classes = len(classes)
        if not np.array_equal(classes, np.arange(n_classes)):
            missing = sorted(set(range(int(classes.max()) + 1)) - set(classes.tolist()))
            if classes.min() < 0:
                raise DataError(f"train labels must be 0..K-1, found {int(classes.min())}")
            raise DataError(
                f"train labels must be 0..K-1 with every class present; class(es) {missing} have no train sample"
            )
        if n_classes < 2:
            raise DataError("the train split has a single class; a classifier needs at least 2")

        n_features = X_np.shape[1]
        C = default_c(n_features, n_classes) if self.C is None else float(self.C)
        device = _resolve_device(self.device)

        # Build on CPU under the seed, then move: identical initial weights on every device, and the
        # caller's global RNG is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            linear = torch.nn.Linear(n_features, n_classes, bias=True)
        linear = linear.to(device)
        # torch wraps NumPy memory and warns on a read-only array (a memory-mapped cache, a pandas column):
        # copy those, leave writable ones shared.
        feats = torch.from_numpy(_writable(np.ascontiguousarray(X_np))).to(device)
        targets = torch.from_numpy(_writable(y_np)).to(device)

        stop = {} if self.tol is None else {"tolerance_grad": float(self.tol)}
        optimizer = torch.optim.LBFGS(linear.parameters(), line_search_fn="strong_wolfe", max_iter=self.max_iter,
                                      **stop)
        evals = 0

        def closure() -> torch.Tensor:
            nonlocal evals
            evals += 1
            optimizer.zero_grad()
            loss = probe_loss(linear.weight, linear.bias, feats, targets, C)
            loss.backward()
            return loss

        # One step = up to max_iter L-BFGS iterations on the full batch, as in the reference.
        optimizer.step(closure)
        self.n_iter_ = int(optimizer.state[linear.weight].get("n_iter", 0))
        self.n_evals_ = evals
        self.n_rounds_ = 1

        if self.tol is None:  # the reference's rule: its weights, its float32 measures
            optimizer.zero_grad()
            final = probe_loss(linear.weight, linear.bias, feats, targets, C)
            final.backward()
            self.loss_ = float(final.detach())
            self.grad_max_ = float(max(linear.weight.grad.abs().max(), linear.bias.grad.abs().max()))
            self.converged_ = None
            weight, bias = linear.weight.detach(), linear.bias.detach()
        else:
            weight, bias = self._finish(linear.weight.detach(), linear.bias.detach(), feats, targets, C, y_np,
                                        n_classes)
        self.coef_ = weight.cpu().numpy().astype(np.float32, copy=True)
        self.intercept_ = bias.cpu().numpy().astype(np.float32, copy=True)
        self.classes_ = np.arange(n_classes)
        self.n_features_in_ = n_features
        self.C_ = C
        return self

    def _finish(self, weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor, targets: torch.Tensor,
                C: float, y_np: np.ndarray, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fast rule's end: make ``max |∇| ≤ tol`` hold, measured in float64 at the float32 weights returned.

        The float32 L-BFGS stops where the float32 loss stops changing, which on ill-conditioned features (large,
        correlated embeddings) is far from stationary (max |∇| 1e-4 to 1e-1). From there, L-BFGS restarts in
        float64 (fresh curvature history each round, at most :data:`MAX_REFINE_ROUNDS` rounds of ``max_iter``
        iterations) until the rule holds at the rounded float32 weights. When the optimum is the penalty's kink
        W = 0 (small C, uninformative features) the gradient never vanishes; there the subgradient condition
        ``‖∇_W CE(0, b*)‖_F ≤ 0.5/C`` is checked and, when it holds, ``W = 0`` with the prior-matching bias is the
        exact optimum (its minimum-norm subgradient is 0). Sets ``loss_``, ``grad_max_`` (float64), ``converged_``,
        and adds the extra iterations / evaluations to ``n_iter_`` / ``n_evals_``.
        """
        tol = float(self.tol)
        X64 = feats.double()
        W = weight.double().clone().requires_grad_(True)
        b = bias.double().clone().requires_grad_(True)

        def measure() -> tuple[float, float]:
            # The stored weights are float32: measure there, in float64.
            w32 = W.detach().float().double().requires_grad_(True)
            b32 = b.detach().float().double().requires_grad_(True)
            loss = probe_loss(w32, b32, X64, targets, C)
            loss.backward()
            return float(loss.detach()), float(max(w32.grad.abs().max(), b32.grad.abs().max()))

        loss, grad = measure()
        kink = self._zero_optimum(X64, targets, C, y_np, n_classes) if grad > tol else None
        if kink is not None:
            W, b = kink
            # At W = 0 only the bias gradient is left: -∇_W CE lies inside the penalty's subdifferential.
            b_req = b.clone().requires_grad_(True)
            final = probe_loss(W, b_req, X64, targets, C)
            final.backward()
            loss, grad = float(final.detach()), float(b_req.grad.abs().max())
        rounds = MAX_REFINE_ROUNDS if kink is not None else 0
        while grad > tol and rounds < MAX_REFINE_ROUNDS:
            rounds += 1
            # A stricter target inside the round leaves room for rounding the weights to float32.
            opt = torch.optim.LBFGS([W, b], line_search_fn="strong_wolfe", max_iter=self.max_iter,
                                    tolerance_grad=0.5 * tol, tolerance_change=1e-15, history_size=100)
            evals = 0

            def closure() -> torch.Tensor:
                nonlocal evals
                evals += 1
                opt.zero_grad()
                out = probe_loss(W, b, X64, targets, C)
                out.backward()
                return out

            opt.step(closure)
            done = int(opt.state[W].get("n_iter", 0))
            self.n_iter_ += done
            self.n_evals_ += evals
            self.n_rounds_ += 1
            before = grad
            loss, grad = measure()
            if done == 0 or not grad < before:
                break  # no progress left in float64 either
        self.loss_, self.grad_max_, self.converged_ = loss, grad, grad <= tol
        return W.detach().float(), b.detach().float()

    @staticmethod
    def _zero_optimum(X64: torch.Tensor, targets: torch.Tensor, C: float, y_np: np.ndarray,
                      n_classes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W = 0, b*) when it is the optimum of the unsquared-norm objective, else None."""
        prior = np.bincount(y_np, minlength=n_classes) / len(y_np)
        log_prior = np.log(prior)
        b = torch.as_tensor(log_prior - log_prior.mean(), dtype=torch.float64, device=X64.device)
        W = torch.zeros(n_classes, X64.shape[1], dtype=torch.float64, device=X64.device, requires_grad=True)
        F.cross_entropy(F.linear(X64, W, b), targets).backward()
        if float(torch.linalg.matrix_norm(W.grad, ord="fro")) > 0.5 / C:
            return None
        return W.detach(), b

    def _check_fitted(self, X: Any) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RuntimeError("LogisticRegressionProbe is not fitted; call fit(X, y) first")
        X_np = _as_features(X)
        if X_np.shape[1] != self.n_features_in_:
            raise DataError(f"features have {X_np.shape[1]} columns but the probe was fitted on {self.n_features_in_}")
        return X_np

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``X Wᵀ + b`` in float32, ``[N, K]``: the reference's nn.Linear forward, on the CPU."""
        X_np = self._check_fitted(X)
        with torch.inference_mode():
            logits = F.linear(*(torch.from_numpy(_writable(np.ascontiguousarray(a, dtype=np.float32)))
                                for a in (X_np, self.coef_, self.intercept_)))
        return logits.numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax probabilities ``[N, K]`` (float64 for the metric code; computed from float32 logits)."""
        logits = torch.from_numpy(self.decision_function(X))
        return torch.softmax(logits, dim=1).double().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Argmax class ``[N]``."""
        return np.argmax(self.decision_function(X), axis=1)
