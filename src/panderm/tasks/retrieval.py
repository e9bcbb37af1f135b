"""Zero-shot cross-modal retrieval metrics on precomputed embeddings.

This module is pure tensor code: it takes image and text embeddings (one
image-text pair per row, as in the reference CSV) and returns ranks and metrics.
Loading models and CSVs is done elsewhere.

Reference behaviour (ref-panderm2 §3, open_clip ``get_clip_metrics``)
----------------------------------------------------------------------
For ``image_to_text`` the query is image ``i`` and the ground truth is text
``i``; ``text_to_image`` is the transpose. ``r_i`` is the 0-based rank of the
ground truth when the similarities of query ``i`` are sorted in descending
order, and

* ``*_R@k``        = mean(r < k)
* ``*_mean_rank``   = mean(r) + 1
* ``*_median_rank`` = floor(median(r)) + 1

We add ``R@1``, ``*_mean_recall`` (mean of R@5, R@10 and R@50, whatever ``ks``
is), ``mean_recall`` (the average of the two directions' mean recalls, the
"Mean Recall" of the DermFM-Zero README) and bootstrap CIs.

Embeddings are L2-normalised here, row by row, so callers may pass raw or
already-normalised features; a row of zeros cannot be normalised and is an error.
Inputs in float64 are compared in float64, everything else in float32.

How ranks are computed
----------------------
The reference builds the full N x N similarity matrix and argsorts every row:
O(N^2) memory (40 GB of float32 plus 80 GB of int64 indices at N = 100k). We
never hold more than a ``chunk_size`` x ``chunk_size`` block: the rank of the
ground truth is just the number of keys that score above it, so it can be
counted block by block with one matmul per block and no sort at all. Extra
memory is O(chunk_size^2 + N), flat in N; time is one pass of matmuls.

Ties
----
Ranks equal positions in a *stable* descending sort
(``torch.argsort(s, descending=True, stable=True)`` or
``np.argsort(-s, kind="stable")``): a competitor with exactly the ground
truth's score counts as ahead of it when its index is lower. Formally, for
query ``i`` with ground-truth key ``t``::

    r_i = #{j != t : s_ij > s_it} + #{j < t : s_ij == s_it}

Without ties this is exactly the reference's rank. With ties the reference's
``torch.argsort`` (unstable) orders equal scores in an unspecified way; ours is
deterministic and, for exact duplicates of the ground truth placed before it,
pessimistic.

Exact ties need bit-identical scores. Identical rows get identical scores
within one block and, in practice, across blocks of the same shape. Scores a
few ulps apart can order differently than in a full-matrix matmul, as they can
between two BLAS libraries; the benchmark checks the chunked ranks against the
reference's argsort ranks on the same data.

The reference door (``src/main.py --val-data``) needs the reference's own
order among equal scores (repeated captions, float16 scores under CPU
autocast): :func:`argsort_ranks` builds the full matrix and argsorts it as the
reference does, whenever that fits in memory (:func:`argsort_fits`).

Duplicates and groups
---------------------
The reference counts duplicates (the same image with several captions, or the
same caption for several images) as *competitors*: they can push the ground
truth down, and an exact duplicate at a lower row costs one rank under the tie
rule above. That stays the default here (no groups given), so published numbers
reproduce.

Group mode (``image_groups`` and/or ``text_groups``, e.g. from
:func:`duplicate_groups` of the image paths / captions, or a ``--group-by``
column naming the image) follows CLIP_benchmark's multi-caption recall instead:

* each distinct image and each distinct caption is one item, represented by the
  embedding of its first row; image_to_text has one query per distinct image,
  text_to_image one per distinct caption, and each distinct item is one key
  (a competitor with three rows is counted once, not three times);
* rows linked through a shared image or a shared caption form one group
  (connected components, so the relation is transitive), and every key of the
  query's group is a hit;
* the rank is the 0-based position of the *first* hit: the number of
  non-hits scoring above the best-scoring hit (ties broken by index as above).
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import nullcontext as _nullcontext
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from panderm.errors import DataError, PandermError

__all__ = [
    "DEFAULT_KS",
    "MEAN_RECALL_KS",
    "DEFAULT_CHUNK_SIZE",
    "DIRECTIONS",
    "DEFAULT_LOSS_BATCH_SIZE",
    "RetrievalResult",
    "rank_of_targets",
    "rank_metrics",
    "retrieval_metrics",
    "clip_val_loss",
    "argsort_ranks",
    "argsort_fits",
    "reference_clip_loss",
    "duplicate_groups",
    "bootstrap_retrieval_ci",
]

#: Recall cut-offs reported by default (the reference reports 5, 10, 50; we add 1).
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)
#: The recalls averaged into ``*_mean_recall``, independent of the ``ks`` asked for.
MEAN_RECALL_KS: tuple[int, ...] = (5, 10, 50)
#: Rows per block on each side; a block of scores is chunk_size^2 floats (64 MB).
DEFAULT_CHUNK_SIZE = 4096
#: Metric-name prefixes, in output order.
DIRECTIONS: tuple[str, str] = ("image_to_text", "text_to_image")
#: The reference evaluates retrieval with --batch-size=256; the in-batch loss depends on it.
DEFAULT_LOSS_BATCH_SIZE = 256

_MISSING = object()  # shared group key for None / NaN values in duplicate_groups


# --------------------------------------------------------------------------- input checks


def _as_embeddings(x: Any, name: str) -> torch.Tensor:
    """`x` as a 2-D floating tensor (no copy for NumPy float32/float64 input)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "fiub":
            raise DataError(f"{name} must be a 2-D float array, got dtype {arr.dtype}")
        with warnings.catch_warnings():
            # Read-only arrays (np.load(mmap_mode="r")) are fine: we never write into them.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.as_tensor(arr)
    if t.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (rows x dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise DataError(f"{name} must be floating point, got dtype {str(t.dtype).replace('torch.', '')}")
    if t.shape[1] == 0:
        raise DataError(f"{name} has 0 columns")
    return t


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 only if every input is float64; half/bfloat16 are promoted to float32."""
    return torch.float64 if all(t.dtype == torch.float64 for t in tensors) else torch.float32


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PandermError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PandermError(f"device {device!r} was asked for but CUDA is not available")
    return dev


def _check_chunk_size(chunk_size: Any) -> int:
    # Counts are summed as float32 0/1 values, exact up to 2**24 per row.
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or not 1 <= chunk_size <= 2**24:
        raise DataError(f"chunk_size must be an integer from 1 to 2**24, got {chunk_size!r}")
    return int(chunk_size)


def _row_norms(t: torch.Tensor, name: str, dtype: torch.dtype, chunk: int) -> torch.Tensor:
    """L2 norm of every row, checking finiteness; done in blocks so no N x d copy is made."""
    out = torch.empty(t.shape[0], dtype=dtype, device=t.device)
    for a in range(0, t.shape[0], chunk):
        block = t[a : a + chunk].to(dtype)
        norms = torch.linalg.vector_norm(block, dim=1)
        # A NaN or inf entry makes the norm non-finite, so one check on the norms
        # suffices; the slower per-entry check runs only to name the culprit.
        if not bool(torch.isfinite(norms).all()):
            bad = a + int(torch.nonzero(~torch.isfinite(norms))[0])
            if bool(torch.isfinite(t[bad]).all()):
                raise DataError(f"{name} row {bad} has values too large to L2-normalise")
            raise DataError(f"{name} row {bad} contains NaN or infinity")
        if bool((norms == 0).any()):
            bad = a + int(torch.nonzero(norms == 0)[0])
            raise DataError(f"{name} row {bad} is all zeros and cannot be L2-normalised")
        out[a : a + chunk] = norms
    return out


def _check_pair_count(n_image: int, n_text: int) -> None:
    if n_image != n_text:
        raise DataError(
            f"image and text embeddings must have the same number of rows (one pair per row), "
            f"got {n_image} and {n_text}"
        )
    if n_image < 2:
        raise DataError(f"retrieval needs at least 2 image-text pairs, got {n_image}")


def _check_same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{name_a} and {name_b} must have the same dimension, got {a.shape[1]} and {b.shape[1]}"
        )


def _check_ks(ks: Iterable[Any]) -> tuple[int, ...]:
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"recall cut-offs must be positive integers, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise DataError("at least one recall cut-off k is needed")
    return tuple(out)


def _labels_1d(values: Any, n: int, name: str) -> list:
    """A per-row label sequence of length n (any hashable values)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise DataError(f"{name} must be a sequence with one value per row")
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{name} has {len(arr)} values but there are {n} rows")
    return list(arr)


# --------------------------------------------------------------------------- groups


def _group_key(v: Any) -> Any:
    if v is None:
        return _MISSING
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return _MISSING
    return v.item() if isinstance(v, np.generic) else v


def duplicate_groups(values: Any) -> np.ndarray:
    """Group ids for identical values (captions, image paths, a ``--group-by`` column).

    Equal values get the same id; ids are ``0, 1, 2, ...`` in order of first
    occurrence, so ``duplicate_groups(["a", "b", "a"]) == [0, 1, 0]``. Values
    are compared as given (no stripping or case folding). ``None`` and NaN all
    share one group: the reference turns a missing caption into the string
    ``"nan"``, so such rows really are identical captions.

    Returns an int64 array of length ``len(values)``.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise DataError("duplicate_groups needs a sequence of values, one per row")
    ids: dict[Any, int] = {}
    out = []
    try:
        for v in values:
            out.append(ids.setdefault(_group_key(v), len(ids)))
    except TypeError as exc:  # unhashable value, e.g. a list
        raise DataError(f"group values must be hashable (strings or numbers): {exc}") from exc
    return np.asarray(out, dtype=np.int64)


def _row_groups(image_codes: np.ndarray, text_codes: np.ndarray) -> np.ndarray:
    """Connected components of rows linked by a shared image or a shared caption.

    A bipartite graph with one node per distinct image and per distinct caption
    and one edge per row; every row gets the component id of its image node.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_img = int(image_codes.max()) + 1
    n_txt = int(text_codes.max()) + 1
    graph = coo_matrix(
        (np.ones(len(image_codes), dtype=np.int8), (image_codes, n_img + text_codes)),
        shape=(n_img + n_txt, n_img + n_txt),
    )
    _, labels = connected_components(graph, directed=False)
    return labels[image_codes].astype(np.int64)


# --------------------------------------------------------------------------- ranking core


def _pieces(lo: int, hi: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, hi)) for s in range(lo, hi, chunk)]


def _complement_pieces(lo: int, hi: int, n: int, chunk: int) -> list[tuple[int, int]]:
    """The global chunk grid over [0, n) with [lo, hi) cut out.

    Keeping the global grid (rather than re-chunking from `hi`) gives every query
    block the same matmul shapes, so identical key rows get bit-identical scores.
    """
    out = []
    for g0 in range(0, n, chunk):
        g1 = min(g0 + chunk, n)
        if g0 < lo:
            out.append((g0, min(g1, lo)))
        if g1 > hi:
            out.append((max(g0, hi), g1))
    return out


def _count_ahead(
    S: torch.Tensor,
    best: torch.Tensor,
    first: torch.Tensor,
    key_ids: torch.Tensor,
) -> torch.Tensor:
    """Per query row of `S`: keys scoring above `best`, plus exact ties with a lower key id.

    `S` must already have the query's hits set to -inf; it is overwritten. Most
    pieces lie entirely before or after the query's first hit in key-id order,
    and there the tie rule is a plain comparison: ``s >= best`` (written as
    ``s > nextafter(best, -inf)``) before it, ``s > best`` after it. Only rows
    whose first hit id falls inside the piece's id range need an equality pass.
    """
    ids_min, ids_max = key_ids.min(), key_ids.max()
    ties_ahead = ids_max < first  # every tied key has a lower id: ties count
    ties_behind = ids_min > first
    counts = torch.zeros(S.shape[0], dtype=torch.int64, device=S.device)
    mixed = ~(ties_ahead | ties_behind)
    if bool(mixed.any()):
        rows = mixed.nonzero().squeeze(1)
        eq = S.index_select(0, rows) == best.index_select(0, rows)[:, None]
        r, c = eq.nonzero(as_tuple=True)
        ahead = key_ids[c] < first[rows[r]]
        counts.index_add_(0, rows[r[ahead]], torch.ones_like(c[ahead]))
    thr = torch.where(ties_ahead, torch.nextafter(best, torch.full_like(best, -math.inf)), best)
    # In place and summed as floats: ~5x cheaper than reducing a bool mask
    # (exact, since a row has at most chunk_size <= 2**24 ones).
    counts += S.gt_(thr[:, None]).sum(dim=1).to(torch.int64)
    return counts


def _rank_core(
    Q: torch.Tensor,
    K: torch.Tensor,
    q_norms: torch.Tensor,
    k_norms: torch.Tensor,
    q_rows: np.ndarray,
    k_rows: np.ndarray,
    lab_q: np.ndarray,
    lab_k: np.ndarray,
    chunk: int,
    dtype: torch.dtype,
) -> np.ndarray:
    """0-based rank of the first hit for each query, by blockwise counting.

    Query ``i`` is row ``q_rows[i]`` of `Q`; key ``j`` is row ``k_rows[j]`` of `K`.
    Key ``j`` is a hit for query ``i`` iff ``lab_k[j] == lab_q[i]`` (each query has
    at least one hit). Non-group mode is the special case ``lab_k = arange``.

    Keys are visited in label order and queries in label order, so the hits of
    a block of queries sit in one contiguous key range (the "span"). Pass A
    scores the span to find each query's best hit; pass B counts competitors
    above it in the span (hits masked out) and in every other key block. In the
    usual case the span is one block and its scores are reused, so every score
    is computed exactly once.
    """
    device = K.device
    nq, nk = len(lab_q), len(lab_k)

    # Sort keys by label so each label's hits are contiguous; ``key_ids`` keeps the
    # original key index for the tie rule.
    if nk < 2 or bool(np.all(lab_k[1:] >= lab_k[:-1])):
        key_ids = np.arange(nk, dtype=np.int64)
    else:
        key_ids = np.argsort(lab_k, kind="stable").astype(np.int64)
    lab_sorted = lab_k[key_ids]
    lo = np.searchsorted(lab_sorted, lab_q, side="left")
    hi = np.searchsorted(lab_sorted, lab_q, side="right")
    q_order = np.argsort(lab_q, kind="stable")
    lo_s, hi_s = lo[q_order], hi[q_order]  # both non-decreasing along q_order

    sorted_rows = k_rows[key_ids]
    contiguous = bool(np.array_equal(sorted_rows, np.arange(nk)))  # plain slices, no gather
    sorted_rows_t = torch.from_numpy(sorted_rows).to(device)
    key_ids_t = torch.from_numpy(key_ids).to(device)
    k_norms_sorted = k_norms.index_select(0, sorted_rows_t)
    q_rows_sorted_t = torch.from_numpy(q_rows[q_order].astype(np.int64)).to(device)
    lo_t = torch.from_numpy(lo_s).to(device)
    hi_t = torch.from_numpy(hi_s).to(device)

    def keys(s: int, e: int) -> torch.Tensor:
        rows = K[s:e] if contiguous else K.index_select(0, sorted_rows_t[s:e])
        return rows.to(dtype) / k_norms_sorted[s:e, None]

    # One reusable score buffer: avoids re-faulting chunk^2 fresh pages per block.
    buf = torch.empty(min(chunk, nq) * min(chunk, nk), dtype=dtype, device=device)

    def scores(Qb: torch.Tensor, s: int, e: int) -> torch.Tensor:
        out = buf[: Qb.shape[0] * (e - s)].view(Qb.shape[0], e - s)
        return torch.matmul(Qb, keys(s, e).T, out=out)

    ranks = np.empty(nq, dtype=np.int64)
    a = 0
    while a < nq:
        # Largest block (<= chunk queries) whose hits fit in one chunk of keys;
        # a single label with more than `chunk` keys still advances by one query.
        b = min(a + chunk, int(np.searchsorted(hi_s, lo_s[a] + chunk, side="right")))
        b = max(b, a + 1)
        rows_q = q_rows_sorted_t[a:b]
        Qb = Q.index_select(0, rows_q).to(dtype) / q_norms.index_select(0, rows_q)[:, None]
        lo_b, hi_b = lo_t[a:b, None], hi_t[a:b, None]
        span_lo, span_hi = int(lo_s[a]), int(hi_s[b - 1])
        span = _pieces(span_lo, span_hi, chunk)

        def hit_mask(s: int, e: int) -> torch.Tensor:
            cols = torch.arange(s, e, device=device)[None, :]
            return (cols >= lo_b) & (cols < hi_b)

        # Pass A: best hit score per query and the lowest key id reaching it.
        best = torch.full((b - a,), -math.inf, dtype=dtype, device=device)
        first = torch.full((b - a,), nk, dtype=torch.int64, device=device)
        for s, e in span:
            S = scores(Qb, s, e)
            hit = hit_mask(s, e)
            piece_best = torch.where(hit, S, -math.inf).max(dim=1).values
            r, c = (hit & (S == piece_best[:, None])).nonzero(as_tuple=True)
            piece_first = torch.full_like(first, nk).scatter_reduce_(0, r, key_ids_t[s + c], "amin")
            first = torch.where(
                piece_best > best,
                piece_first,
                torch.where(piece_best == best, torch.minimum(first, piece_first), first),
            )
            best = torch.maximum(best, piece_best)

        # Pass B: count competitors. A one-piece span still holds its scores in the
        # buffer; a longer one (one label with more than `chunk` keys) is recomputed
        # with the same matmul shapes, so the scores match pass A bit for bit.
        counts = torch.zeros(b - a, dtype=torch.int64, device=device)
        for s, e in span:
            if len(span) > 1:
                S, hit = scores(Qb, s, e), hit_mask(s, e)
            S.masked_fill_(hit, -math.inf)
            counts += _count_ahead(S, best, first, key_ids_t[s:e])
        for s, e in _complement_pieces(span_lo, span_hi, nk, chunk):
            counts += _count_ahead(scores(Qb, s, e), best, first, key_ids_t[s:e])  # no hits here
        ranks[q_order[a:b]] = counts.cpu().numpy()
        a = b
    return ranks


def rank_of_targets(
    queries: Any,
    keys: Any,
    targets: Any = None,
    groups_q: Any = None,
    groups_k: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """0-based rank of each query's ground-truth key, without an N x N matrix.

    Parameters
    ----------
    queries, keys:
        ``[Nq, d]`` and ``[Nk, d]`` float arrays or tensors; L2-normalised here.
    targets:
        Ground-truth key index per query; default ``i`` for query ``i`` (then
        ``Nq == Nk`` is required).
    groups_q, groups_k:
        Optional group labels (any hashable values), one per query / key; both or
        neither. When given, every key whose label equals the query's is a hit and
        the rank is that of the *first* hit: the number of non-hits scoring above
        the best-scoring hit. ``targets``, if also given, must lie in the query's
        group.
    chunk_size:
        Rows per block on both sides. Extra memory is a few ``chunk_size**2``
        arrays (about 280 MB at 4096, 26 MB at 1024 in float32) plus O(N)
        bookkeeping, whatever N is. On a CPU 1024 is as fast as 4096; on a GPU
        larger blocks amortise the per-block overhead.
    device:
        Where the matmuls run (``"cpu"``, ``"cuda"``, ...). Off the CPU both
        inputs are copied to the device once.

    Returns
    -------
    int64 array of length ``Nq``. Ties follow a stable descending sort: an
    equal-scoring competitor with a lower key index counts as ahead (see the
    module docstring).
    """
    chunk = _check_chunk_size(chunk_size)
    dev = _resolve_device(device)
    Q = _as_embeddings(queries, "queries")
    K = _as_embeddings(keys, "keys")
    _check_same_dim(Q, K, "queries", "keys")
    nq, nk = Q.shape[0], K.shape[0]
    if nq == 0:
        raise DataError("no queries to rank")
    if targets is None and groups_q is None and nq != nk:
        raise DataError(
            f"queries and keys must have the same number of rows when no targets are given, got {nq} and {nk}"
        )
    if nk < 2:
        if targets is None and groups_q is None:
            raise DataError(f"retrieval needs at least 2 image-text pairs, got {nk}")
        raise DataError(f"retrieval needs at least 2 keys to rank, got {nk}")

    tgt = None
    if targets is not None:
        tgt = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets)
        if tgt.ndim != 1 or len(tgt) != nq:
            raise DataError(f"targets must be 1-D with one key index per query ({nq}), got shape {tgt.shape}")
        if tgt.dtype.kind not in "iu":
            raise DataError(f"targets must be integer key indices, got dtype {tgt.dtype}")
        tgt = tgt.astype(np.int64)
        if len(tgt) and (tgt.min() < 0 or tgt.max() >= nk):
            bad = int(np.flatnonzero((tgt < 0) | (tgt >= nk))[0])
            raise DataError(f"targets[{bad}] = {tgt[bad]} is not a key index (there are {nk} keys)")

    if (groups_q is None) != (groups_k is None):
        raise DataError("groups_q and groups_k must be given together")
    if groups_q is None:
        lab_k = np.arange(nk, dtype=np.int64)
        lab_q = tgt if tgt is not None else np.arange(nq, dtype=np.int64)
    else:
        gq = _labels_1d(groups_q, nq, "groups_q")
        gk = _labels_1d(groups_k, nk, "groups_k")
        codes = duplicate_groups(gq + gk)
        lab_q, lab_k = codes[:nq], codes[nq:]
        if tgt is not None and not np.array_equal(lab_k[tgt], lab_q):
            bad = int(np.flatnonzero(lab_k[tgt] != lab_q)[0])
            raise DataError(f"query {bad}: its target key {tgt[bad]} is not in the query's group {gq[bad]!r}")
        has_hit = np.isin(lab_q, lab_k)
        if not has_hit.all():
            bad = int(np.flatnonzero(~has_hit)[0])
            raise DataError(f"query {bad}: no key is in its group {gq[bad]!r}")

    dtype = _compute_dtype(Q, K)
    if dev.type != "cpu":
        Q, K = Q.to(dev, dtype), K.to(dev, dtype)
    else:
        Q, K = Q.cpu(), K.cpu()
    q_norms = _row_norms(Q, "queries", dtype, chunk)
    k_norms = _row_norms(K, "keys", dtype, chunk)
    with torch.inference_mode():
        return _rank_core(
            Q, K, q_norms, k_norms, np.arange(nq), np.arange(nk), lab_q, lab_k, chunk, dtype
        )


# --------------------------------------------------------------------------- metrics


def rank_metrics(ranks: Any, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> dict[str, float]:
    """Metrics of one direction from its 0-based ranks.

    Returns ``{prefix_R@k for k in ks, prefix_mean_rank, prefix_median_rank,
    prefix_mean_recall}`` (keys without a leading underscore when `prefix` is
    empty). ``mean_recall`` always averages R@5, R@10 and R@50.
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or len(r) == 0:
        raise DataError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    ks = _check_ks(ks)
    p = f"{prefix}_" if prefix else ""
    out: dict[str, float] = {f"{p}R@{k}": float(np.mean(r < k)) for k in ks}
    out[f"{p}mean_rank"] = float(np.mean(r)) + 1.0
    out[f"{p}median_rank"] = float(np.floor(np.median(r))) + 1.0
    out[f"{p}mean_recall"] = float(np.mean([np.mean(r < k) for k in MEAN_RECALL_KS]))
    return out


def _both_directions(ranks_i2t: np.ndarray, ranks_t2i: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    out = rank_metrics(ranks_i2t, ks, DIRECTIONS[0])
    out.update(rank_metrics(ranks_t2i, ks, DIRECTIONS[1]))
    out["mean_recall"] = (out[f"{DIRECTIONS[0]}_mean_recall"] + out[f"{DIRECTIONS[1]}_mean_recall"]) / 2
    return out


@dataclass(frozen=True)
class RetrievalResult:
    """What :func:`retrieval_metrics` returns.

    Attributes
    ----------
    metrics:
        ``image_to_text_R@k`` (k in ks), ``image_to_text_mean_rank``,
        ``image_to_text_median_rank``, ``image_to_text_mean_recall``, the same for
        ``text_to_image``, then ``mean_recall`` (average of the two directions),
        ``clip_val_loss`` (only when ``logit_scale`` was given), ``num_samples``
        (pairs), ``num_images`` / ``num_texts`` (distinct query items; equal to
        ``num_samples`` without groups).
    image_to_text_ranks, text_to_image_ranks:
        0-based rank per *query*: one per distinct image / caption in group mode,
        one per row otherwise. Feed these to :func:`bootstrap_retrieval_ci`.
    image_query_of_row, text_query_of_row:
        For each row, the index of its query in the arrays above (identity
        without groups).
    row_groups:
        Group id per row in group mode, else None.
    """

    metrics: dict[str, float]
    image_to_text_ranks: np.ndarray
    text_to_image_ranks: np.ndarray
    image_query_of_row: np.ndarray
    text_query_of_row: np.ndarray
    row_groups: np.ndarray | None = None

    @property
    def image_to_text_row_ranks(self) -> np.ndarray:
        """Rank of each row's image query (per-row CSV output)."""
        return self.image_to_text_ranks[self.image_query_of_row]

    @property
    def text_to_image_row_ranks(self) -> np.ndarray:
        """Rank of each row's caption query (per-row CSV output)."""
        return self.text_to_image_ranks[self.text_query_of_row]


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    ks: Sequence[int] = DEFAULT_KS,
    image_groups: Any = None,
    text_groups: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    logit_scale: float | None = None,
    loss_batch_size: int = DEFAULT_LOSS_BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> RetrievalResult:
    """Image-to-text and text-to-image retrieval metrics for paired embeddings.

    Row ``i`` of `image_emb` and of `text_emb` is one pair. Both are
    L2-normalised here.

    Without groups this is the reference (ref-panderm2 §3): duplicates are
    competitors. With ``image_groups`` (rows showing the same image, e.g.
    ``duplicate_groups(paths)`` or a ``--group-by`` column) and/or
    ``text_groups`` (identical captions) every caption of the same image counts
    as a hit, CLIP_benchmark style; see the module docstring for the exact rule.

    ``logit_scale`` is the model's *multiplier* (``logit_scale.exp()``, e.g.
    100), used only for ``clip_val_loss`` over batches of ``loss_batch_size``
    rows in row order (the reference's loss, computed per row whatever the
    groups). Returns a :class:`RetrievalResult`.
    """
    ks = _check_ks(ks)
    chunk = _check_chunk_size(chunk_size)
    dev = _resolve_device(device)
    I = _as_embeddings(image_emb, "image embeddings")
    T = _as_embeddings(text_emb, "text embeddings")
    _check_pair_count(I.shape[0], T.shape[0])
    _check_same_dim(I, T, "image embeddings", "text embeddings")
    n = I.shape[0]

    dtype = _compute_dtype(I, T)
    if dev.type != "cpu":
        I, T = I.to(dev, dtype), T.to(dev, dtype)
    else:
        I, T = I.cpu(), T.cpu()
    i_norms = _row_norms(I, "image embeddings", dtype, chunk)
    t_norms = _row_norms(T, "text embeddings", dtype, chunk)

    rows = np.arange(n, dtype=np.int64)
    if image_groups is None and text_groups is None:
        img_q = txt_q = rows
        groups = None
        img_rep = txt_rep = rows
        lab_img = lab_txt = rows
    else:
        img_q = rows if image_groups is None else duplicate_groups(_labels_1d(image_groups, n, "image_groups"))
        txt_q = rows if text_groups is None else duplicate_groups(_labels_1d(text_groups, n, "text_groups"))
        groups = _row_groups(img_q, txt_q)
        # First row of each distinct image / caption (ids are in first-occurrence order).
        img_rep = np.unique(img_q, return_index=True)[1]
        txt_rep = np.unique(txt_q, return_index=True)[1]
        lab_img, lab_txt = groups[img_rep], groups[txt_rep]

    with torch.inference_mode():
        r_i2t = _rank_core(I, T, i_norms, t_norms, img_rep, txt_rep, lab_img, lab_txt, chunk, dtype)
        r_t2i = _rank_core(T, I, t_norms, i_norms, txt_rep, img_rep, lab_txt, lab_img, chunk, dtype)

    metrics = _both_directions(r_i2t, r_t2i, ks)
    if logit_scale is not None:
        metrics["clip_val_loss"] = _clip_loss(I, T, i_norms, t_norms, logit_scale, loss_batch_size, dtype)
    metrics["num_samples"] = n
    metrics["num_images"] = len(r_i2t)
    metrics["num_texts"] = len(r_t2i)
    return RetrievalResult(metrics, r_i2t, r_t2i, img_q, txt_q, groups)


# --------------------------------------------------------------------------- the reference's full-matrix ranking


def argsort_bytes(n: int, itemsize: int) -> int:
    """Peak memory of :func:`argsort_ranks` for N pairs: the N x N scores, argsort's sorted copy (and a
    contiguous copy of the transposed matrix) in the scores' dtype, and its int64 indices."""
    return n * n * (3 * itemsize + 8)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def argsort_fits(n: int, itemsize: int, available: int | None = None) -> bool:
    """Whether the reference's N x N ranking takes at most half the available memory (4 GB when unknown)."""
    available = _available_memory() if available is None else available
    return argsort_bytes(n, itemsize) <= (available // 2 if available else 4 << 30)


def argsort_ranks(image_features: torch.Tensor, text_features: torch.Tensor,
                  logit_scale: Any) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ranks (open_clip ``get_clip_metrics``, ref-panderm2 §3), ties included.

    The scores are ``(logit_scale · I) @ Tᵀ`` over the full N x N matrix, in the features' dtype (float16
    for features computed under CPU autocast), with ``logit_scale`` a float32 scalar tensor as the model
    returns it. Every row of the matrix (image_to_text) and of its transpose, a view as there
    (text_to_image), is ordered by ``torch.argsort(descending=True)``; the rank is the position of the
    ground truth. Among equal scores that order is torch's unstable sort, not row order: it is what the
    reference reports for repeated captions. Memory: :func:`argsort_bytes`.
    Returns 0-based (image_to_text, text_to_image) ranks.
    """
    n = image_features.shape[0]
    scale = torch.as_tensor(logit_scale, dtype=torch.float32)
    truth = torch.arange(n)[:, None]
    out = []
    with torch.inference_mode():
        logits = scale * image_features @ text_features.t()
        for mat in (logits, logits.t()):
            order = torch.argsort(mat, descending=True)
            ranks = np.empty(n, dtype=np.int64)
            for a in range(0, n, 1024):  # where the ground truth sits, a block of rows at a time
                ranks[a:a + 1024] = (order[a:a + 1024] == truth[a:a + 1024]).nonzero()[:, 1].numpy()
            del order
            out.append(ranks)
    return out[0], out[1]


def reference_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: Any,
                        batch_size: int, autocast_dtype: torch.dtype | None = None) -> float:
    """The reference's ``clip_val_loss`` as it accumulates it: per batch of ``batch_size`` rows
    ``(CE(s·I_b @ T_bᵀ) + CE of the transpose) / 2`` (under CPU autocast in ``autocast_dtype`` when given,
    where the matmul is in that dtype and the cross-entropy in float32), summed as a float32 tensor weighted
    by batch size, divided by N."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"loss batch size must be a positive integer, got {batch_size!r}")
    scale = torch.as_tensor(_check_logit_scale(logit_scale), dtype=torch.float32)
    n = image_features.shape[0]
    total: Any = 0.0
    with torch.inference_mode():
        for a in range(0, n, int(batch_size)):
            b = min(a + int(batch_size), n)
            ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None else _nullcontext()
            with ctx:
                logits = scale * image_features[a:b] @ text_features[a:b].t()
                labels = torch.arange(b - a)
                loss = (torch.nn.functional.cross_entropy(logits, labels)
                        + torch.nn.functional.cross_entropy(logits.t(), labels)) / 2
            total = total + loss * (b - a)
    return float(total / n)


# --------------------------------------------------------------------------- CLIP loss


def _check_logit_scale(logit_scale: Any) -> float:
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise DataError(f"logit_scale must be a single number, got shape {tuple(logit_scale.shape)}")
        logit_scale = logit_scale.detach().cpu().item()
    try:
        value = float(logit_scale)
    except (TypeError, ValueError) as exc:
        raise DataError(f"logit_scale must be a number, got {logit_scale!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"logit_scale must be a positive finite multiplier (logit_scale.exp()), got {value}")
    return value


def _clip_loss(
    I: torch.Tensor,
    T: torch.Tensor,
    i_norms: torch.Tensor,
    t_norms: torch.Tensor,
    logit_scale: Any,
    batch_size: Any,
    dtype: torch.dtype,
) -> float:
    scale = _check_logit_scale(logit_scale)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"loss batch size must be a positive integer, got {batch_size!r}")
    n = I.shape[0]
    total = 0.0
    with torch.inference_mode():
        for a in range(0, n, int(batch_size)):
            b = min(a + int(batch_size), n)
            im = I[a:b].to(dtype) / i_norms[a:b, None]
            tx = T[a:b].to(dtype) / t_norms[a:b, None]
            logits = scale * im @ tx.T
            labels = torch.arange(b - a, device=logits.device)
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            total += float(loss) * (b - a)  # weighted by batch size: the last batch may be short
    return total / n


def clip_val_loss(
    image_emb: Any,
    text_emb: Any,
    logit_scale: float,
    batch_size: int = DEFAULT_LOSS_BATCH_SIZE,
) -> float:
    """The reference's ``clip_val_loss`` (open_clip ``evaluate``, ref-panderm2 §3).

    Rows are cut into consecutive batches of ``batch_size`` (the last one may be
    shorter, as with ``drop_last=False``). In each batch the logits are
    ``logit_scale * img @ txt.T`` on L2-normalised embeddings, the loss is the
    mean of the image->text and text->image cross-entropies against the
    diagonal, and the batch losses are averaged weighted by batch size. The
    value therefore depends on ``batch_size`` (the reference used 256).

    ``logit_scale`` is the multiplier, i.e. the model's ``logit_scale.exp()``.
    """
    I = _as_embeddings(image_emb, "image embeddings")
    T = _as_embeddings(text_emb, "text embeddings")
    _check_pair_count(I.shape[0], T.shape[0])
    _check_same_dim(I, T, "image embeddings", "text embeddings")
    dtype = _compute_dtype(I, T)
    chunk = DEFAULT_CHUNK_SIZE
    i_norms = _row_norms(I, "image embeddings", dtype, chunk)
    t_norms = _row_norms(T, "text embeddings", dtype, chunk)
    return _clip_loss(I, T, i_norms, t_norms, logit_scale, batch_size, dtype)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_retrieval_ci(
    ranks_i2t: Any,
    ranks_t2i: Any,
    ks: Sequence[int] = DEFAULT_KS,
    n_resamples: int = 1000,
    seed: int | None = 42,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap 95% CIs of every rank metric, resampling queries.

    Replicate ``b`` uses ``RandomState(seed).choice(n, n)``, drawn one replicate
    after another (the DermFM-Zero bootstrap scheme, on a private RNG). When both
    directions have the same number of queries (no groups: one per pair) the
    same draw resamples the *pairs* for both directions, so ``mean_recall`` keeps
    their correlation. In group mode the counts differ, and each replicate draws
    the image queries first, then the caption queries.

    Returns ``{metric: {"value", "mean", "ci_low", "ci_high", "n_resamples"}}``
    for every key of :func:`rank_metrics` in both directions plus
    ``mean_recall``: the point estimate on all queries, the mean of the
    replicates, and their 2.5th / 97.5th percentiles.
    """
    ks = _check_ks(ks)
    r1 = np.asarray(ranks_i2t)
    r2 = np.asarray(ranks_t2i)
    for r, name in ((r1, "ranks_i2t"), (r2, "ranks_t2i")):
        if r.ndim != 1 or len(r) == 0:
            raise DataError(f"{name} must be a non-empty 1-D array, got shape {r.shape}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")

    point = _both_directions(r1, r2, ks)
    names = list(point)
    samples = np.empty((int(n_resamples), len(names)), dtype=np.float64)
    rs = np.random.RandomState(seed)
    paired = len(r1) == len(r2)
    for b in range(int(n_resamples)):
        idx1 = rs.choice(len(r1), len(r1))
        idx2 = idx1 if paired else rs.choice(len(r2), len(r2))
        rep = _both_directions(r1[idx1], r2[idx2], ks)
        samples[b] = [rep[k] for k in names]
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return {
        name: {
            "value": point[name],
            "mean": float(samples[:, j].mean()),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
            "n_resamples": int(n_resamples),
        }
        for j, name in enumerate(names)
    }
