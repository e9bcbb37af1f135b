"""The feature and text-embedding caches never serve a wrong number (issue 13).

- the key covers the model's configuration, not only its weights: the same weights with another
  `vision_cfg.head_width` are a miss, and the features equal a fresh computation;
- every entry carries a checksum: an entry zeroed in place or truncated is recomputed with one warning;
- `--no-cache` writes no temp file (a kill -9 leaves nothing in TMPDIR); a killed cached run resumes and its
  leftovers are cleared by the next run;
- a full disk (errno 28) mid-extraction leaves nothing partial in the cache and is one line.
"""
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.data.tables import load_table
from panderm.errors import PandermError
from panderm.features import cache_key, extract_features, extract_text_features
from panderm.models import load_encoder
from panderm.tasks.zeroshot import class_embeddings
from tiny_models import build_hf_clip, build_tiny_dinov3, build_tiny_openclip, build_tiny_panderm2

REPO = Path(__file__).resolve().parents[1]
HAM_DIR = REPO / "data" / "sample" / "ham10000_sample"


@pytest.fixture(scope="module")
def paths(ham_csv):
    return load_table(ham_csv, "image_path").paths[:30]


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _warnings(caplog, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and needle in r.getMessage()]


# --------------------------------------------------------------------------- the key covers the configuration


def test_same_weights_other_head_width_is_a_miss_and_equals_a_fresh_computation(tmp_path, paths):
    folder = build_tiny_openclip(tmp_path / "clip")  # hub layout: open_clip_config.json + safetensors
    cache = tmp_path / "cache"
    before = load_encoder(f"local-dir:{folder}")
    first = extract_features(before, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    assert not first.from_cache
    assert extract_features(before, paths, "features", batch_size=8, num_workers=0, cache_dir=cache).from_cache

    # 2 heads of 32 → 4 heads of 16: every tensor keeps its shape, the weights file is untouched.
    _edit_json(folder / "open_clip_config.json", lambda c: c["model_cfg"]["vision_cfg"].update(head_width=16))
    after = load_encoder(f"local-dir:{folder}")
    assert after.fingerprint != before.fingerprint
    res = extract_features(after, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    fresh = extract_features(after, paths, "features", batch_size=8, num_workers=0, cache=False).array
    assert not res.from_cache and res.key != first.key
    assert np.array_equal(np.asarray(res.array), fresh)
    assert np.abs(fresh - np.asarray(first.array)).max() > 1e-5  # the head count does change the numbers
    # embed (derived from cached features through the projection) follows the same key
    emb = extract_features(after, paths, "embed", batch_size=8, num_workers=0, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(emb.array),
                                  extract_features(after, paths, "embed", batch_size=8, num_workers=0,
                                                   cache=False).array)


def test_every_config_change_of_the_file_changes_the_key(tmp_path, paths):
    """A preprocessing edit in the config file is another key; undoing it gives the first fingerprint back; the
    same files in another folder give the same fingerprint (where the files sit is not part of the key)."""
    folder = build_tiny_openclip(tmp_path / "clip")
    base = load_encoder(f"local-dir:{folder}")
    _edit_json(folder / "open_clip_config.json", lambda c: c["preprocess_cfg"].update(interpolation="bilinear"))
    assert cache_key(load_encoder(f"local-dir:{folder}"), "embed", paths) != cache_key(base, "embed", paths)
    _edit_json(folder / "open_clip_config.json", lambda c: c["preprocess_cfg"].pop("interpolation"))
    assert load_encoder(f"local-dir:{folder}").fingerprint == base.fingerprint
    moved = tmp_path / "elsewhere" / "clip"
    shutil.copytree(folder, moved)
    assert load_encoder(f"local-dir:{moved}").fingerprint == base.fingerprint


def _panderm2(tmp_path, tiny_bert):
    folder = build_tiny_panderm2(tmp_path / "pd2", text_repo="test/tiny-pubmedbert")
    return f"local-dir:{folder}", folder / "open_clip_config.json", \
        lambda c: c["model_cfg"]["vision_cfg"].update(head_width=16)


def _hf_clip(tmp_path, tiny_bert):
    folder = build_hf_clip(tmp_path / "hfclip")
    return f"hf-clip:{folder}", folder / "config.json", \
        lambda c: c["vision_config"].update(num_attention_heads=4)


def _dinov3(tmp_path, tiny_bert):
    folder = build_tiny_dinov3(tmp_path / "dinov3")
    return f"hf-vision:{folder}", folder / "config.json", lambda c: c.update(layer_norm_eps=1e-3)


@pytest.mark.parametrize("family", [_panderm2, _hf_clip, _dinov3], ids=["cae", "hf-clip", "hf-vision"])
def test_every_family_fingerprint_covers_its_configuration(family, tmp_path, tiny_bert, paths):
    model_id, config, edit = family(tmp_path, tiny_bert)
    before = load_encoder(model_id)
    fp = before.fingerprint
    assert load_encoder(model_id).fingerprint == fp  # stable across loads
    _edit_json(config, edit)
    after = load_encoder(model_id)
    assert after.fingerprint != fp
    kind = "features"
    a = extract_features(before, paths[:4], kind, num_workers=0, cache=False).array
    b = extract_features(after, paths[:4], kind, num_workers=0, cache=False).array
    assert np.abs(a - b).max() > 1e-6, "the edit must change the numbers for this test to mean anything"


# --------------------------------------------------------------------------- checksums


def _zero_rows(entry: Path, rows: slice, dim: int) -> None:
    """Overwrite rows of a float32 .npy with zeros in place: same size, same header."""
    header = entry.stat().st_size - np.load(entry, mmap_mode="r").nbytes
    with open(entry, "r+b") as fh:
        fh.seek(header + rows.start * dim * 4)
        fh.write(b"\0" * ((rows.stop - rows.start) * dim * 4))


def _truncate(entry: Path) -> None:
    with open(entry, "r+b") as fh:
        fh.truncate(entry.stat().st_size // 2)


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_image_entry_is_recomputed_with_one_warning(tiny_openclip, paths, tmp_path, caplog, damage):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    first = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    good = np.array(first.array)
    entry = cache / f"{first.key}.npy"
    size = entry.stat().st_size
    if damage == "zeroed":
        _zero_rows(entry, slice(5, 10), good.shape[1])
        assert entry.stat().st_size == size
    else:
        _truncate(entry)
    with caplog.at_level(logging.WARNING):
        again = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    assert not again.from_cache
    assert np.array_equal(np.asarray(again.array), good)
    warned = _warnings(caplog, "cache entry")
    assert len(warned) == 1 and str(entry) in warned[0] and "recomput" in warned[0], warned
    # repaired: the next read is a verified hit, silently
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    assert third.from_cache and np.array_equal(np.asarray(third.array), good) and not _warnings(caplog, "cache")


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_embed_entry_derived_from_features_is_recomputed(tiny_openclip, paths, tmp_path, caplog, damage):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    first = extract_features(enc, paths, "embed", batch_size=8, num_workers=0, cache_dir=cache)
    good = np.array(first.array)
    entry = cache / f"{first.key}.npy"
    _zero_rows(entry, slice(0, 5), good.shape[1]) if damage == "zeroed" else _truncate(entry)
    with caplog.at_level(logging.WARNING):
        again = extract_features(enc, paths, "embed", batch_size=8, num_workers=0, cache_dir=cache)
    assert np.array_equal(np.asarray(again.array), good)
    assert len(_warnings(caplog, str(entry))) == 1


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_partial_extraction_is_not_resumed(tiny_openclip, paths, tmp_path, caplog, damage):
    """An interrupted extraction's finished rows are checked against its progress record before a resume."""
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    fresh = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache=False).array
    original = enc._image
    calls = []

    def interrupted(x, kind):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(x, kind)

    enc._image = interrupted
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=tmp_path)
    enc._image = original
    partial = next(tmp_path.glob("*.partial.npy"))
    assert json.loads(next(tmp_path.glob("*.partial.json")).read_text())["done"] == 12
    _zero_rows(partial, slice(2, 6), fresh.shape[1]) if damage == "zeroed" else _truncate(partial)
    with caplog.at_level(logging.WARNING):
        res = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=tmp_path)
    assert np.array_equal(np.asarray(res.array), fresh)
    if damage == "zeroed":
        assert len(_warnings(caplog, str(partial))) == 1


def _only_entry(folder: Path, pattern: str) -> Path:
    found = [p for p in folder.glob(pattern) if ".partial" not in p.name]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_text_entries_are_recomputed_with_one_warning(tiny_openclip, tmp_path, caplog, damage):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    texts = [f"a photo of lesion number {i}" for i in range(12)]
    classes = ["melanoma", "nevus", "basal cell carcinoma", "actinic keratosis"]
    good_text = extract_text_features(enc, texts, cache_dir=cache)
    good_classes = class_embeddings(enc, classes, cache_dir=cache)
    text_entry = _only_entry(cache, "text-*.npy")
    class_entry = _only_entry(cache / "text", "classes-*.npy")
    for entry, dim in ((text_entry, good_text.shape[1]), (class_entry, good_classes.shape[1])):
        if damage == "zeroed":
            size = entry.stat().st_size
            _zero_rows(entry, slice(1, 3), dim)
            assert entry.stat().st_size == size
        else:
            _truncate(entry)
    with caplog.at_level(logging.WARNING):
        text = extract_text_features(enc, texts, cache_dir=cache)
        weights = class_embeddings(enc, classes, cache_dir=cache)
    assert np.array_equal(text, good_text) and np.array_equal(weights, good_classes)
    assert len(_warnings(caplog, str(text_entry))) == 1
    assert len(_warnings(caplog, str(class_entry))) == 1
    assert len(_warnings(caplog, "cache entry")) == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # repaired: verified hits
        assert np.array_equal(extract_text_features(enc, texts, cache_dir=cache), good_text)
        assert np.array_equal(class_embeddings(enc, classes, cache_dir=cache), good_classes)
    assert not _warnings(caplog, "cache")


def test_entry_without_its_checksum_is_not_served(tiny_openclip, paths, tmp_path, caplog):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    first = extract_features(enc, paths[:6], "features", num_workers=0, cache_dir=cache)
    good = np.array(first.array)
    record = json.loads((cache / f"{first.key}.json").read_text())
    assert len(record["sha256"]) == 64 and record["shape"] == list(good.shape)
    (cache / f"{first.key}.json").unlink()
    np.save(cache / f"{first.key}.npy", np.zeros_like(good))  # a well-formed file with wrong numbers
    with caplog.at_level(logging.WARNING):
        again = extract_features(enc, paths[:6], "features", num_workers=0, cache_dir=cache)
    assert np.array_equal(np.asarray(again.array), good) and len(_warnings(caplog, "cache entry")) == 1


# --------------------------------------------------------------------------- temp files and kill -9

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PANDERM_DEBUG": "0"}


def _csv(tmp_path: Path, rows: int) -> Path:
    images = pd.read_csv(HAM_DIR / "ham10000_sample.csv")["image_path"]
    csv = tmp_path / "many.csv"
    pd.DataFrame({"image_path": [images[i % len(images)] for i in range(rows)]}).to_csv(csv, index=False)
    return csv


def _kill9_when(proc, ready, what: str, timeout: float = 600.0) -> None:
    """SIGKILL `proc` once `ready()` holds (polled; the timeout is only a hang guard)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not seen in {timeout:.0f} s")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL


def test_no_cache_run_killed_with_sigkill_leaves_no_temp_file(tiny_openclip, tmp_path):
    rows = 400
    csv = _csv(tmp_path, rows)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    pcache = tmp_path / "pcache"
    err_file = tmp_path / "stderr.txt"
    env = {**ENV, "TMPDIR": str(tmpdir), "PANDERM_CACHE": str(pcache)}
    with open(err_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panderm", "features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(csv),
             "--root", str(HAM_DIR), "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-cache",
             "--out", str(tmp_path / "out.npy")], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)

        def encoding_started():
            # the progress bar (or log line) shows images encoded: extraction is under way
            import re

            counts = [int(c) for c in re.findall(r"(\d+)/%d (?:\[|img)" % rows, err_file.read_text(errors="replace"))]
            return bool(counts) and max(counts) >= 20

        _kill9_when(proc, encoding_started, "20 images encoded")
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    assert not [p for p in left if "panderm" in p or p.endswith(".npy")], left
    assert not (pcache / "features").exists() or not any((pcache / "features").iterdir())
    assert not (tmp_path / "out.npy").exists()


def test_cached_run_killed_with_sigkill_resumes_and_the_next_run_clears_leftovers(tiny_openclip, tmp_path):
    rows = 300
    csv = _csv(tmp_path, rows)
    cache = tmp_path / "cache"
    common = [sys.executable, "-m", "panderm", "features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(csv),
              "--root", str(HAM_DIR), "--batch-size", "2", "--workers", "0", "--device", "cpu"]

    def progress():
        found = list(cache.glob("*.partial.json"))
        try:
            return json.loads(found[0].read_text()) if found else {}
        except (OSError, ValueError):
            return {}

    proc = subprocess.Popen([*common, "--cache-dir", str(cache), "--out", str(tmp_path / "a.npy")], cwd=REPO,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill9_when(proc, lambda: progress().get("done", 0) >= 20, "20 rows recorded")
    done = progress()["done"]
    assert 20 <= done < rows
    # what a kill during a temp-file write would leave: removed by the next run that takes the key's lock
    key = next(cache.glob("*.partial.npy")).name.split(".")[0]
    stale = [cache / f".{key}.partial.json.x1y2.tmp", cache / f".{key}.json.z3.tmp"]
    for path in stale:
        path.write_text("half")
    r = subprocess.run([*common, "--cache-dir", str(cache), "--out", str(tmp_path / "a.npy")], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp") or ".partial" in p.name]
    r = subprocess.run([*common, "--no-cache", "--out", str(tmp_path / "b.npy")], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    record = json.loads((cache / f"{key}.json").read_text())  # the resumed entry carries a valid checksum
    from panderm.features import array_digest

    assert record["sha256"] == array_digest(np.load(cache / f"{key}.npy"))


# --------------------------------------------------------------------------- concurrent runs


def test_a_run_that_finds_the_key_locked_encodes_in_memory_and_writes_nothing(tiny_openclip, paths, tmp_path):
    from panderm.features import entry_lock

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    key = cache_key(enc, "features", paths)
    fresh = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache=False).array
    with entry_lock(cache / f"{key}.npy") as held:  # another process extracting the same key
        assert held
        res = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
        assert not res.from_cache and np.array_equal(res.array, fresh)
        assert _no_partial_left(cache) == []  # neither a partial file nor a temp file of its own
    res = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache)
    assert not res.from_cache and np.array_equal(np.asarray(res.array), fresh)
    assert extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=cache).from_cache


def test_two_concurrent_processes_give_identical_features_and_one_valid_entry(tiny_openclip, tmp_path):
    rows = 120
    csv = _csv(tmp_path, rows)
    cache = tmp_path / "cache"
    common = [sys.executable, "-m", "panderm", "features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(csv),
              "--root", str(HAM_DIR), "--batch-size", "4", "--workers", "0", "--device", "cpu", "--kind",
              "features", "--cache-dir", str(cache)]
    procs = [subprocess.Popen([*common, "--out", str(tmp_path / f"{i}.npy")], cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "cache entry" not in err, err[-2000:]
    a, b = np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy")
    assert a.shape == (rows, 64) and np.array_equal(a, b)
    entries = [p for p in cache.glob("*.npy") if ".partial" not in p.name]
    assert len(entries) == 1 and not [p for p in cache.iterdir() if p.name.endswith(".tmp") or ".partial" in p.name]
    from panderm.features import read_entry

    served = read_entry(entries[0], rows)
    assert served is not None and np.array_equal(np.asarray(served), a)


# --------------------------------------------------------------------------- a full disk


def _no_partial_left(cache: Path) -> list[str]:
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_mid_extraction_keeps_nothing_partial(tiny_openclip, paths, tmp_path, monkeypatch):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    real_write_text = Path.write_text
    calls = []

    def write_text(self, *a, **k):
        calls.append(self.name)
        if len(calls) == 3:  # the third progress record: rows already on disk
            _enospc()
        return real_write_text(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(PandermError) as exc:
        extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=cache)
    assert "errno 28" in str(exc.value) and "No space left on device" in str(exc.value)
    assert str(cache) in str(exc.value) and "\n" not in str(exc.value)
    assert len(calls) == 3
    assert _no_partial_left(cache) == []
    monkeypatch.undo()
    # space again: the next run extracts from scratch and is correct
    res = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=cache)
    assert not res.from_cache
    np.testing.assert_array_equal(np.asarray(res.array),
                                  extract_features(enc, paths, "features", batch_size=4, num_workers=0,
                                                   cache=False).array)


def test_full_disk_when_flushing_or_publishing_keeps_nothing_partial(tiny_openclip, paths, tmp_path, monkeypatch):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    # the memory map's flush (msync) fails
    cache = tmp_path / "c1"
    monkeypatch.setattr(np.memmap, "flush", _enospc)
    with pytest.raises(PandermError, match="errno 28"):
        extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=cache)
    assert _no_partial_left(cache) == []
    monkeypatch.undo()
    # the embed entry derived from features, and the text caches: their one write fails
    cache = tmp_path / "c2"
    extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=cache)
    before = _no_partial_left(cache)
    monkeypatch.setattr(np, "save", _enospc)
    with pytest.raises(PandermError, match="errno 28"):
        extract_features(enc, paths, "embed", batch_size=4, num_workers=0, cache_dir=cache)
    with pytest.raises(PandermError, match="errno 28"):
        extract_text_features(enc, ["a", "b"], cache_dir=cache)
    with pytest.raises(PandermError, match="errno 28"):
        class_embeddings(enc, ["melanoma", "nevus"], cache_dir=cache)
    assert _no_partial_left(cache) == before  # only the complete features entry and its checksum record
