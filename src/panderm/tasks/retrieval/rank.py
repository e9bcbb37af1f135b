"""Chunked ranking of paired embeddings: input checks, duplicate groups and the rank of the ground truth.

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

The reference door (``src/main.py`` with retrieval data) needs the reference's own
order among equal scores (repeated captions, float16 scores under CPU
autocast): :func:`argsort_ranks` builds the full matrix and argsorts it as the
reference does, whenever that fits in memory (:func:`argsort_fits`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from panderm.errors import DataError, PandermError

#: Rows per block on each side; a block of scores is chunk_size^2 floats (64 MB).
DEFAULT_CHUNK_SIZE = 4096

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


def _on_device(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], dev: torch.device, chunk: int):
    """Both matrices in their common compute dtype on `dev` (on the CPU the cast is left to the blocks), with
    their checked row norms: `(a, b, a_norms, b_norms, dtype)`."""
    dtype = _compute_dtype(a, b)
    if dev.type != "cpu":
        a, b = a.to(dev, dtype), b.to(dev, dtype)
    else:
        a, b = a.cpu(), b.cpu()
    return a, b, _row_norms(a, names[0], dtype, chunk), _row_norms(b, names[1], dtype, chunk), dtype


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
    """Group ids for identical values (captions, image paths, a group-by column).

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

    Q, K, q_norms, k_norms, dtype = _on_device(Q, K, ("queries", "keys"), dev, chunk)
    with torch.inference_mode():
        return _rank_core(
            Q, K, q_norms, k_norms, np.arange(nq), np.arange(nk), lab_q, lab_k, chunk, dtype
        )
