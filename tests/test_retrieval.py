"""Tests for panderm.tasks.retrieval against brute-force full-matrix computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panderm.errors import DataError, PandermError
from panderm.tasks.retrieval import (
    DEFAULT_KS,
    bootstrap_retrieval_ci,
    clip_val_loss,
    duplicate_groups,
    rank_metrics,
    rank_of_targets,
    retrieval_metrics,
)

# --------------------------------------------------------------------------- brute force


def _normalise(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _scores(q, k):
    return _normalise(q) @ _normalise(k).T


def brute_ranks(S, targets=None):
    """Position of the target under a stable descending argsort of each full row."""
    targets = np.arange(S.shape[0]) if targets is None else np.asarray(targets)
    order = np.argsort(-S, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(order[i] == targets[i])[0]) for i in range(S.shape[0])])


def brute_group_ranks(S, hits):
    """Position of the first hit under a stable descending argsort of each full row."""
    order = np.argsort(-S, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(hits[i, order[i]])[0]) for i in range(S.shape[0])])


def brute_metrics(r, prefix, ks=DEFAULT_KS):
    out = {f"{prefix}_R@{k}": float(np.mean(r < k)) for k in ks}
    out[f"{prefix}_mean_rank"] = r.mean() + 1
    out[f"{prefix}_median_rank"] = math.floor(np.median(r)) + 1
    out[f"{prefix}_mean_recall"] = np.mean([np.mean(r < k) for k in (5, 10, 50)])
    return out


def _pairs(n, d=16, noise=1.0, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, d))
    txt = img + noise * rng.normal(size=(n, d))
    return img.astype(dtype), txt.astype(dtype)


def _sign_vectors(n, d, seed):
    """±1 rows: with d a perfect square the normalised entries are ±1/sqrt(d), exact
    in binary, so every dot product is a multiple of 1/d, exact in float32 in any
    summation order, and there are many exact ties."""
    assert math.isqrt(d) ** 2 == d
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)


# --------------------------------------------------------------------------- ranks


@pytest.mark.parametrize("n,chunk", [(60, 1), (60, 7), (60, 60), (61, 16), (150, 64), (150, 4096), (2, 1)])
def test_ranks_match_bruteforce_both_directions(n, chunk):
    img, txt = _pairs(n, seed=n + chunk)
    S = _scores(img, txt)
    np.testing.assert_array_equal(rank_of_targets(img, txt, chunk_size=chunk), brute_ranks(S))
    np.testing.assert_array_equal(rank_of_targets(txt, img, chunk_size=chunk), brute_ranks(S.T))


@pytest.mark.parametrize("chunk", [1, 7, 97, 4096])
def test_metrics_match_bruteforce(chunk):
    n = 97
    img, txt = _pairs(n, noise=1.5, seed=3)
    S = _scores(img, txt)
    res = retrieval_metrics(img, txt, chunk_size=chunk)
    want = {**brute_metrics(brute_ranks(S), "image_to_text"), **brute_metrics(brute_ranks(S.T), "text_to_image")}
    for key, value in want.items():
        assert res.metrics[key] == pytest.approx(value, abs=1e-12), key
    assert res.metrics["mean_recall"] == pytest.approx(
        (want["image_to_text_mean_recall"] + want["text_to_image_mean_recall"]) / 2
    )
    assert res.metrics["num_samples"] == n
    assert res.metrics["num_images"] == res.metrics["num_texts"] == n
    # Without groups every row is its own query.
    np.testing.assert_array_equal(res.image_to_text_row_ranks, brute_ranks(S))
    np.testing.assert_array_equal(res.text_to_image_row_ranks, brute_ranks(S.T))
    assert res.row_groups is None
    # Some ranks land beyond every k so the R@k are not trivially 1.
    assert res.metrics["image_to_text_R@1"] < res.metrics["image_to_text_R@10"] < 1


def test_metric_keys_reference_spelling():
    img, txt = _pairs(20)
    keys = list(retrieval_metrics(img, txt, logit_scale=100.0).metrics)
    for d in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10, 50):
            assert f"{d}_R@{k}" in keys
        for m in ("mean_rank", "median_rank", "mean_recall"):
            assert f"{d}_{m}" in keys
    for key in ("mean_recall", "clip_val_loss", "num_samples"):
        assert key in keys
    assert "clip_val_loss" not in retrieval_metrics(img, txt).metrics


def test_rank_metrics_formulas():
    r = np.array([0, 0, 3, 4, 7, 60])
    m = rank_metrics(r, ks=(1, 5), prefix="x")
    assert m["x_R@1"] == pytest.approx(2 / 6)
    assert m["x_R@5"] == pytest.approx(4 / 6)
    assert m["x_mean_rank"] == pytest.approx(r.mean() + 1)
    assert m["x_median_rank"] == 4.0  # median 3.5 -> floor 3 -> +1
    assert m["x_mean_recall"] == pytest.approx((4 / 6 + 5 / 6 + 5 / 6) / 3)  # R@5, R@10, R@50


def test_explicit_targets_and_unequal_counts():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(40, 12))
    k = rng.normal(size=(25, 12))
    targets = rng.integers(0, 25, size=40)
    S = _scores(q, k)
    for chunk in (1, 6, 25, 100):
        np.testing.assert_array_equal(rank_of_targets(q, k, targets, chunk_size=chunk), brute_ranks(S, targets))


def test_torch_inputs_and_float16():
    img, txt = _pairs(50, seed=9)
    want = rank_of_targets(img, txt)
    np.testing.assert_array_equal(rank_of_targets(torch.from_numpy(img), torch.from_numpy(txt)), want)
    # float16 is promoted to float32; compare with the brute force on the rounded values.
    h_img, h_txt = img.astype(np.float16), txt.astype(np.float16)
    S = _scores(h_img.astype(np.float64), h_txt.astype(np.float64))
    np.testing.assert_array_equal(rank_of_targets(h_img, h_txt, chunk_size=8), brute_ranks(S))


def test_unnormalised_inputs_are_normalised():
    img, txt = _pairs(40, seed=2)
    scale = np.random.default_rng(0).uniform(0.1, 50, size=(40, 1))
    np.testing.assert_array_equal(rank_of_targets(img * scale, txt), rank_of_targets(img, txt))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    img, txt = _pairs(300, seed=4)
    np.testing.assert_array_equal(
        rank_of_targets(img, txt, chunk_size=64, device="cuda"), rank_of_targets(img, txt, chunk_size=64)
    )


# --------------------------------------------------------------------------- ties


@pytest.mark.parametrize("chunk", [1, 7, 40, 4096])
def test_ties_follow_stable_descending_sort(chunk):
    n = 40
    img = _sign_vectors(n, 16, seed=1)  # only 17 distinct scores, so ties everywhere
    txt = _sign_vectors(n, 16, seed=2)
    txt[::5] = img[::5]
    S = _scores(img, txt)
    assert (S == S[:, :1]).sum() > n  # the data really has ties
    np.testing.assert_array_equal(rank_of_targets(img, txt, chunk_size=chunk), brute_ranks(S))
    np.testing.assert_array_equal(rank_of_targets(txt, img, chunk_size=chunk), brute_ranks(S.T))
    # The same rule as torch's stable descending argsort.
    order = torch.argsort(torch.from_numpy(S), dim=1, descending=True, stable=True).numpy()
    torch_ranks = np.array([np.flatnonzero(order[i] == i)[0] for i in range(n)])
    np.testing.assert_array_equal(rank_of_targets(img, txt, chunk_size=chunk), torch_ranks)


def test_tie_rule_lower_index_counts_ahead():
    e = np.eye(4, dtype=np.float32)
    img = e[[0, 1, 2]]
    txt = e[[0, 0, 2]]  # text 1 equals text 0 and is orthogonal to image 1
    # image 0: text 0 (its target) ties with text 1 (higher index) -> rank 0.
    # image 1 (e1) scores 0 against every text: only text 0 (lower index) is ahead -> rank 1.
    np.testing.assert_array_equal(rank_of_targets(img, txt), [0, 1, 0])
    # text query 1 (= e0) vs images: image 0 scores 1, image 1 (target) scores 0 -> rank 1.
    np.testing.assert_array_equal(rank_of_targets(txt, img), [0, 1, 0])
    # Target after an identical competitor: the earlier duplicate counts as ahead.
    np.testing.assert_array_equal(rank_of_targets(e[[0, 0]], e[[0, 0]]), [0, 1])


# --------------------------------------------------------------------------- groups


def _with_duplicate_captions(n, seed):
    """Pairs where some captions are exact copies of another row's caption."""
    rng = np.random.default_rng(seed)
    img, txt = _pairs(n, seed=seed, noise=1.2)
    captions = np.array([f"c{i}" for i in range(n)], dtype=object)
    for i in rng.choice(n, size=n // 3, replace=False):
        j = int(rng.integers(0, n))
        txt[i] = txt[j]
        captions[i] = captions[j]
    return img, txt, captions


@pytest.mark.parametrize("chunk", [1, 5, 33, 4096])
def test_rank_of_targets_group_mode_matches_bruteforce(chunk):
    rng = np.random.default_rng(11)
    q = rng.normal(size=(45, 10))
    k = rng.normal(size=(60, 10))
    gk = rng.integers(0, 12, size=60)
    gk[:12] = np.arange(12)  # every group has a key
    gq = rng.integers(0, 12, size=45)
    gk_str = np.array([f"g{g}" for g in gk])  # labels need not be integers
    gq_str = [f"g{g}" for g in gq]
    S = _scores(q, k)
    hits = gq[:, None] == gk[None, :]
    want = brute_group_ranks(S, hits)
    np.testing.assert_array_equal(rank_of_targets(q, k, groups_q=gq_str, groups_k=gk_str, chunk_size=chunk), want)


def test_group_larger_than_chunk():
    """One label owns more keys than a chunk: the hit span is scored in several pieces."""
    rng = np.random.default_rng(12)
    q = rng.normal(size=(30, 6))
    k = rng.normal(size=(50, 6))
    gk = np.where(np.arange(50) < 30, 0, np.arange(50))
    gq = np.where(np.arange(30) < 10, 0, 30 + np.arange(30) % 20)
    S = _scores(q, k)
    want = brute_group_ranks(S, gq[:, None] == gk[None, :])
    for chunk in (1, 4, 7, 16):
        np.testing.assert_array_equal(rank_of_targets(q, k, groups_q=gq, groups_k=gk, chunk_size=chunk), want)


def test_group_ties_with_sign_vectors():
    img = _sign_vectors(30, 4, seed=7)
    txt = _sign_vectors(30, 4, seed=8)
    g = np.arange(30) % 9
    S = _scores(img, txt)
    want = brute_group_ranks(S, g[:, None] == g[None, :])
    for chunk in (1, 4, 30):
        np.testing.assert_array_equal(rank_of_targets(img, txt, groups_q=g, groups_k=g, chunk_size=chunk), want)


def _closure_groups(img_ids, txt_ids):
    """Row groups by transitive closure of 'same image or same caption' (independent of scipy)."""
    A = (img_ids[:, None] == img_ids[None, :]) | (txt_ids[:, None] == txt_ids[None, :])
    A = A.astype(np.int64)
    while True:
        B = ((A @ A) > 0).astype(np.int64)
        if np.array_equal(A, B):
            break
        A = B
    return A.astype(bool)


def _brute_group_metrics(img, txt, img_ids, txt_ids):
    linked = _closure_groups(img_ids, txt_ids)
    img_rep = np.array(sorted({int(np.flatnonzero(img_ids == v)[0]) for v in img_ids}))
    txt_rep = np.array(sorted({int(np.flatnonzero(txt_ids == v)[0]) for v in txt_ids}))
    S = _scores(img[img_rep], txt[txt_rep])
    r_i2t = brute_group_ranks(S, linked[np.ix_(img_rep, txt_rep)])
    r_t2i = brute_group_ranks(S.T, linked[np.ix_(txt_rep, img_rep)])
    return r_i2t, r_t2i


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_group_mode_duplicate_captions_matches_bruteforce(chunk):
    n = 60
    img, txt, captions = _with_duplicate_captions(n, seed=21)
    res = retrieval_metrics(img, txt, text_groups=duplicate_groups(captions), chunk_size=chunk)
    r_i2t, r_t2i = _brute_group_metrics(img, txt, np.arange(n), duplicate_groups(captions))
    np.testing.assert_array_equal(res.image_to_text_ranks, r_i2t)
    np.testing.assert_array_equal(res.text_to_image_ranks, r_t2i)
    assert res.metrics["num_images"] == n
    assert res.metrics["num_texts"] == len(set(captions)) < n
    want = {**brute_metrics(r_i2t, "image_to_text"), **brute_metrics(r_t2i, "text_to_image")}
    for key, value in want.items():
        assert res.metrics[key] == pytest.approx(value), key


def test_group_mode_multi_caption_images_matches_bruteforce():
    """Images with several captions (repeated image paths) plus a caption shared by two images."""
    rng = np.random.default_rng(31)
    n_images = 25
    base_img = rng.normal(size=(n_images, 12))
    rows_img, paths = [], []
    for i in range(n_images):
        for _ in range(int(rng.integers(1, 4))):
            rows_img.append(base_img[i])
            paths.append(f"img{i}.jpg")
    img = np.array(rows_img)
    txt = img + 1.3 * rng.normal(size=img.shape)
    captions = [f"cap{r}" for r in range(len(img))]
    captions[5] = captions[0]
    txt[5] = txt[0]
    img_ids, txt_ids = duplicate_groups(paths), duplicate_groups(captions)
    for chunk in (1, 8, 4096):
        res = retrieval_metrics(img, txt, image_groups=paths, text_groups=captions, chunk_size=chunk)
        r_i2t, r_t2i = _brute_group_metrics(img, txt, img_ids, txt_ids)
        np.testing.assert_array_equal(res.image_to_text_ranks, r_i2t)
        np.testing.assert_array_equal(res.text_to_image_ranks, r_t2i)
    assert res.metrics["num_images"] == n_images
    assert res.metrics["num_samples"] == len(img)
    # Per-row ranks repeat the rank of the row's image query.
    np.testing.assert_array_equal(res.image_to_text_row_ranks, r_i2t[img_ids])
    np.testing.assert_array_equal(res.text_to_image_row_ranks, r_t2i[txt_ids])


def test_reference_mode_counts_duplicates_as_competitors():
    """Identical captions: the reference ranks the earlier copy ahead, group mode counts it as a hit."""
    rng = np.random.default_rng(41)
    img = rng.normal(size=(6, 8))
    txt = img.copy()
    txt[3] = txt[1]  # row 3's caption is identical to row 1's ("melanoma" twice)
    ref = retrieval_metrics(img, txt)
    grp = retrieval_metrics(img, txt, text_groups=["a", "m", "b", "m", "c", "d"])
    # Image 3's own text is an exact copy of text 1, which has a lower index.
    assert ref.image_to_text_row_ranks[3] > 0
    assert grp.image_to_text_row_ranks[3] == 0
    # Text query 1 ("m"): image 1 and image 3 are both hits in group mode.
    assert grp.text_to_image_row_ranks[1] == 0 and grp.text_to_image_row_ranks[3] == 0
    assert ref.metrics["image_to_text_R@1"] < grp.metrics["image_to_text_R@1"] == 1.0


def test_groups_without_duplicates_equal_reference():
    img, txt = _pairs(40, seed=13)
    ref = retrieval_metrics(img, txt, chunk_size=9)
    grp = retrieval_metrics(img, txt, image_groups=[f"p{i}" for i in range(40)], chunk_size=9)
    np.testing.assert_array_equal(ref.image_to_text_ranks, grp.image_to_text_ranks)
    np.testing.assert_array_equal(ref.text_to_image_ranks, grp.text_to_image_ranks)
    for key in ref.metrics:
        assert ref.metrics[key] == grp.metrics[key]


def test_duplicate_groups():
    np.testing.assert_array_equal(duplicate_groups(["b", "a", "b", "c", "a"]), [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(duplicate_groups(np.array([7, 3, 7])), [0, 1, 0])
    np.testing.assert_array_equal(duplicate_groups(["x", None, float("nan"), "x", np.nan]), [0, 1, 1, 0, 1])
    assert duplicate_groups(["a", "A", "a "]).tolist() == [0, 1, 2]  # compared as given
    assert duplicate_groups([]).dtype == np.int64


# --------------------------------------------------------------------------- CLIP loss


def _direct_clip_loss(img, txt, scale, bs):
    img = torch.nn.functional.normalize(torch.as_tensor(img, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.as_tensor(txt, dtype=torch.float64), dim=1)
    total, count = 0.0, 0
    for a in range(0, len(img), bs):
        logits = scale * img[a : a + bs] @ txt[a : a + bs].T
        labels = torch.arange(logits.shape[0])
        ce = torch.nn.functional.cross_entropy
        loss = (ce(logits, labels) + ce(logits.T, labels)) / 2
        total += loss.item() * logits.shape[0]
        count += logits.shape[0]
    return total / count


@pytest.mark.parametrize("bs", [1, 8, 23, 256])
def test_clip_val_loss_matches_direct_computation(bs):
    img, txt = _pairs(50, seed=17)
    want = _direct_clip_loss(img, txt, 100.0, bs)
    assert clip_val_loss(img * 3.0, txt, 100.0, batch_size=bs) == pytest.approx(want, rel=1e-10)
    got32 = clip_val_loss(img.astype(np.float32), txt.astype(np.float32), torch.tensor(100.0), batch_size=bs)
    assert got32 == pytest.approx(want, rel=1e-4)
    res = retrieval_metrics(img, txt, logit_scale=100.0, loss_batch_size=bs)
    assert res.metrics["clip_val_loss"] == pytest.approx(want, rel=1e-10)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_paired():
    img, txt = _pairs(80, noise=1.5, seed=19)
    res = retrieval_metrics(img, txt)
    a = bootstrap_retrieval_ci(res.image_to_text_ranks, res.text_to_image_ranks, n_resamples=200, seed=42)
    b = bootstrap_retrieval_ci(res.image_to_text_ranks, res.text_to_image_ranks, n_resamples=200, seed=42)
    c = bootstrap_retrieval_ci(res.image_to_text_ranks, res.text_to_image_ranks, n_resamples=200, seed=7)
    assert a == b
    assert a != c
    for key, entry in a.items():
        assert entry["value"] == pytest.approx(res.metrics[key])
        assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
        assert entry["n_resamples"] == 200
    # Replicates are RandomState(seed).choice(n, n), one per replicate, shared by both directions.
    rs = np.random.RandomState(42)
    r1, r2 = res.image_to_text_ranks, res.text_to_image_ranks
    reps = []
    for _ in range(200):
        idx = rs.choice(80, 80)
        reps.append((np.mean(r1[idx] < 5) + np.mean(r2[idx] < 5)) / 2)
    pair_mean = (a["image_to_text_R@5"]["mean"] + a["text_to_image_R@5"]["mean"]) / 2
    assert pair_mean == pytest.approx(np.mean(reps))


def test_bootstrap_unequal_query_counts():
    rng = np.random.default_rng(0)
    out = bootstrap_retrieval_ci(rng.integers(0, 20, 30), rng.integers(0, 20, 45), ks=(1, 5), n_resamples=50)
    assert set(out) >= {"image_to_text_R@1", "text_to_image_R@5", "mean_recall"}
    assert out["mean_recall"]["ci_low"] <= out["mean_recall"]["ci_high"]


# --------------------------------------------------------------------------- bad input


def _raises(fn, match):
    with pytest.raises(DataError, match=match):
        fn()


def test_bad_inputs_raise_data_error():
    img, txt = _pairs(10)
    _raises(lambda: retrieval_metrics(img[:1], txt[:1]), r"^retrieval needs at least 2 image-text pairs, got 1$")
    _raises(lambda: rank_of_targets(img[:1], txt[:1]), "at least 2 image-text pairs, got 1")
    _raises(lambda: retrieval_metrics(img, txt[:9]), "same number of rows.*got 10 and 9")
    _raises(lambda: rank_of_targets(img, txt[:9]), "same number of rows")
    _raises(lambda: retrieval_metrics(img, txt[:, :5]), "same dimension, got 16 and 5")
    _raises(lambda: retrieval_metrics(img[0], txt), r"2-D array.*shape \(16,\)")
    _raises(lambda: retrieval_metrics(img.astype(int), txt), "floating point")
    _raises(lambda: retrieval_metrics(np.array([["a", "b"]] * 3), txt), "float array")
    bad = img.copy()
    bad[4, 2] = np.nan
    _raises(lambda: retrieval_metrics(bad, txt), "image embeddings row 4 contains NaN or infinity")
    bad = txt.copy()
    bad[7, 0] = np.inf
    _raises(lambda: retrieval_metrics(img, bad), "text embeddings row 7 contains NaN")
    bad = txt.copy()
    bad[3] = 0
    _raises(lambda: retrieval_metrics(img, bad), "text embeddings row 3 is all zeros")
    _raises(lambda: rank_of_targets(img, txt, targets=[0] * 9), "one key index per query")
    _raises(lambda: rank_of_targets(img, txt, targets=[11] + [0] * 9), r"targets\[0\] = 11 is not a key index")
    _raises(lambda: rank_of_targets(img, txt, targets=np.zeros(10)), "integer")
    _raises(lambda: rank_of_targets(img, txt, groups_q=np.arange(10)), "together")
    _raises(
        lambda: rank_of_targets(img, txt, groups_q=[0] * 9 + [5], groups_k=[0] * 10),
        "query 9: no key is in its group 5",
    )
    _raises(
        lambda: rank_of_targets(img, txt, targets=np.arange(10), groups_q=np.arange(10), groups_k=np.zeros(10, int)),
        "not in the query's group",
    )
    _raises(
        lambda: retrieval_metrics(img, txt, text_groups=["a"] * 9), "text_groups has 9 values but there are 10 rows"
    )
    _raises(lambda: retrieval_metrics(img, txt, chunk_size=0), "chunk_size must be an integer from 1")
    _raises(lambda: retrieval_metrics(img, txt, ks=(0, 5)), "positive integers")
    _raises(lambda: retrieval_metrics(img, txt, logit_scale=-1.0), "logit_scale must be a positive")
    _raises(lambda: clip_val_loss(img, txt, 100.0, batch_size=0), "batch size")
    _raises(lambda: duplicate_groups([["a"], ["b"]]), "hashable")
    _raises(lambda: bootstrap_retrieval_ci([], [1, 2]), "non-empty")
    with pytest.raises(PandermError, match="device"):
        rank_of_targets(img, txt, device="nonsense")
