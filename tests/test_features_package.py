"""The features package (issue 14 item 6): keys unchanged by the split, one text-embedding cache, one cache-hit
test, the key's lock through `filelock` held across processes, and modules of a readable size."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from panderm.data.templates import SKIN_TEMPLATES, render
from panderm.features import (CACHE_VERSION, code_versions, effective_precision, entry_lock, extract_features,
                              extract_text_features, read_entry)
from panderm.features import extract as extract_module
from panderm.models import load_encoder
from panderm.tasks.zeroshot import class_embeddings

REPO = Path(__file__).resolve().parents[1]


def _token_digest(h, batches) -> None:
    for ids in batches:
        h.update(str(tuple(ids.shape)).encode() + np.ascontiguousarray(ids.cpu().numpy()).tobytes())


def test_text_and_class_entries_keep_the_keys_written_before_the_split(tiny_openclip, tmp_path):
    """Both text caches go through features.text now; the keys are the formulas the entries were written under
    (spelled out here), so entries cached by an earlier version are still hits."""
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    texts = [f"a photo of lesion number {i}" for i in range(5)]
    classes = ["melanoma", "nevus", "seborrheic keratosis"]
    prec = effective_precision(enc.device, "amp")

    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "fp": enc.fingerprint, "kind": "text", "code": code_versions(),
                                   "batch": 2, "prec": prec}).encode())
    _token_digest(h, [enc.tokenize(texts[s:s + 2]) for s in range(0, len(texts), 2)])
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    text = extract_text_features(enc, texts, batch_size=2, cache_dir=tmp_path)
    text_entry = tmp_path / f"text-{h.hexdigest()[:32]}.npy"
    assert text_entry.is_file() and np.array_equal(np.asarray(read_entry(text_entry, 5)), text)

    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "fp": enc.fingerprint, "c": classes,
                                   "t": list(SKIN_TEMPLATES), "code": code_versions(), "per_batch": 2,
                                   "prec": prec}).encode())
    _token_digest(h, [enc.tokenize([p for c in classes[s:s + 2] for p in render(SKIN_TEMPLATES, c)])
                      for s in range(0, len(classes), 2)])
    weights = class_embeddings(enc, classes, classes_per_batch=2, cache_dir=tmp_path)
    class_entry = tmp_path / "text" / f"classes-{h.hexdigest()[:32]}.npy"
    assert class_entry.is_file() and np.array_equal(np.asarray(read_entry(class_entry, 3)), weights)
    assert np.allclose(np.linalg.norm(weights, axis=1), 1, atol=1e-5)

    # a hit is a writable copy, equal to the computation; without the cache nothing is read or written
    again = extract_text_features(enc, texts, batch_size=2, cache_dir=tmp_path)
    assert again.flags.writeable and np.array_equal(again, text)
    fresh = extract_text_features(enc, texts, batch_size=2, cache=False, cache_dir=tmp_path / "none")
    assert np.allclose(fresh, text, atol=1e-6) and not (tmp_path / "none").exists()


def test_one_cache_hit_test_serves_every_kind(tiny_openclip, ham_csv, tmp_path, monkeypatch):
    """features, embed (derived from features through the head) and the lookup itself: every hit is decided by
    extract._lookup, and a run that finds its entry reads nothing else."""
    from panderm.data.tables import load_table

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = load_table(ham_csv, "image_path").paths[:6]
    # embed encodes the features, then applies the head: both entries are written by this one pass
    first = {k: extract_features(enc, paths, k, batch_size=4, num_workers=0, cache_dir=tmp_path)
             for k in ("embed", "features")}
    assert not first["embed"].from_cache and first["features"].from_cache
    seen = []
    real = extract_module._lookup

    def spy(encoder, kind, *a, **k):
        out = real(encoder, kind, *a, **k)
        seen.append((kind, out[2] is not None))
        return out

    monkeypatch.setattr(extract_module, "_lookup", spy)
    monkeypatch.setattr(extract_module, "_run_resumable", lambda *a, **k: pytest.fail("a hit encoded images"))
    for kind in ("features", "embed"):
        hit = extract_features(enc, paths, kind, batch_size=4, num_workers=0, cache_dir=tmp_path)
        res = first[kind]
        assert hit.from_cache and hit.key == res.key and np.array_equal(np.asarray(hit.array), np.asarray(res.array))
    assert seen == [("features", True), ("embed", True)]  # the embed hit never looked at the features entry
    key, entry, array = real(enc, "features", paths, "amp", None, True, tmp_path, probe=False)
    assert key == first["features"].key and entry == tmp_path / f"{key}.npy" and array is None
    assert real(enc, "features", paths, "amp", None, False, tmp_path) == (None, None, None)


_HOLD = """
import sys
from pathlib import Path
from panderm.features import entry_lock
with entry_lock(Path(sys.argv[1])) as held:
    print("held" if held else "busy", flush=True)
    sys.stdin.readline()
"""


def test_the_key_lock_is_exclusive_across_processes_and_its_file_stays(tmp_path):
    entry = tmp_path / "cache" / "abc.npy"
    stale = tmp_path / "cache" / ".abc.npy.1234.tmp"  # what a killed holder leaves
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(entry)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        stale.write_text("x")
        with entry_lock(entry) as held:  # a second process finds it held and does not wait
            assert held is False
        assert stale.exists()  # only the holder clears temp files
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    with entry_lock(entry) as held:
        assert held is True and not stale.exists()
        with entry_lock(entry) as again:  # not reentrant: the same key taken twice in one process is busy
            assert again is False
    assert (tmp_path / "cache" / "abc.lock").is_file()  # the lock file stays, as flock's always did
    with entry_lock(entry, blocking=True) as held:
        assert held is True


def test_the_features_modules_stay_small():
    folder = REPO / "src" / "panderm" / "features"
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert {"engine.py", "cache.py", "extract.py", "text.py", "__init__.py"} <= set(sizes)
    assert max(sizes.values()) < 500, sizes
    assert not (REPO / "src" / "panderm" / "features.py").exists()
