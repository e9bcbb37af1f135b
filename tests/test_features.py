"""Feature extraction equals direct encoding, in CSV order, and the cache serves repeats."""
import os

import numpy as np
import pytest
import torch

from panderm.data.images import open_image
from panderm.data.tables import load_table
from panderm.errors import DataError
from panderm.features import cache_key, extract_features
from panderm.models import load_encoder


@pytest.fixture(scope="module")
def table(ham_csv):
    return load_table(ham_csv, "image_path")


def _direct(encoder, paths, kind):
    with torch.no_grad():
        x = torch.stack([encoder.preprocess(open_image(p)) for p in paths])
        return encoder.encode_image(x, kind).numpy()


@pytest.mark.parametrize("kind", ["embed", "features"])
def test_extraction_equals_direct_encoding(tiny_openclip, table, tmp_path, kind):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = table.paths[:23]
    res = extract_features(enc, paths, kind, batch_size=5, num_workers=0, cache_dir=tmp_path)
    assert res.array.dtype == np.float32 and res.array.shape[0] == 23
    np.testing.assert_allclose(res.array, _direct(enc, paths, kind), atol=1e-5)


def test_tokens_kind_is_the_cls_row(tiny_panderm2, table, tmp_path):
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    paths = table.paths[:6]
    res = extract_features(enc, paths, "tokens", batch_size=4, num_workers=0, cache_dir=tmp_path)
    np.testing.assert_allclose(res.array, _direct(enc, paths, "tokens")[:, 0], atol=1e-5)


def test_workers_give_identical_results(tiny_openclip, table, tmp_path):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    a = extract_features(enc, table.paths[:20], batch_size=8, num_workers=0, cache=False, cache_dir=tmp_path)
    b = extract_features(enc, table.paths[:20], batch_size=8, num_workers=2, cache=False, cache_dir=tmp_path)
    assert np.array_equal(a.array, b.array)


def test_cache_hit_and_invalidation(tiny_openclip, ham_csv, tmp_path):
    from panderm.models.base import PreprocessSpec

    src = load_table(ham_csv, "image_path").paths[:8]
    imgs = []
    for p in src:
        dst = tmp_path / "imgs" / p.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(p.read_bytes())
        imgs.append(dst)
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    cache = tmp_path / "cache"
    first = extract_features(enc, imgs, cache_dir=cache, num_workers=0)
    second = extract_features(enc, imgs, cache_dir=cache, num_workers=0)
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.array, second.array)
    key = first.key
    # Touching an image changes the key.
    st = os.stat(imgs[3])
    os.utime(imgs[3], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache_key(enc, "embed", imgs) != key
    assert not extract_features(enc, imgs, cache_dir=cache, num_workers=0).from_cache
    # So does another kind, and another preprocessing.
    assert cache_key(enc, "features", imgs) != cache_key(enc, "embed", imgs)
    k1 = cache_key(enc, "embed", imgs)
    enc.set_preprocess(PreprocessSpec(size=32, interpolation="bilinear"))
    assert cache_key(enc, "embed", imgs) != k1
    # Only complete entries exist: no temp files are left behind.
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]


def test_decode_failures_are_all_reported_and_nothing_cached(tiny_openclip, ham_csv, tmp_path):
    good = load_table(ham_csv, "image_path").paths[:3]
    bad = []
    for i in range(2):
        p = tmp_path / f"trunc{i}.jpg"
        p.write_bytes(good[i].read_bytes()[:2000])
        bad.append(p)
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    with pytest.raises(DataError) as err:
        extract_features(enc, good + bad, cache_dir=tmp_path / "c", num_workers=0)
    assert "2 image(s) could not be decoded" in str(err.value)
    assert "trunc0.jpg" in str(err.value) and "trunc1.jpg" in str(err.value)
    assert not list((tmp_path / "c").glob("*.npy"))


@pytest.mark.slow
def test_torchrun_two_processes_give_identical_features(tiny_openclip, ham_csv, tmp_path):
    """2 gloo ranks on CPU: byte-identical to one process, no padded or duplicated rows."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import os

    # torchrun gives each rank one thread; the single process gets the same so the kernels sum in the same order.
    # TMPDIR: torchrun's torchelastic_* folders land in the test's folder, not in /tmp.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TMPDIR": str(tmp_path)}
    common = ["features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--batch-size", "8",
              "--workers", "0", "--no-cache", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "panderm", *common, "--out", str(tmp_path / "one.npy")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "panderm", *common,
                          "--out", str(tmp_path / "two.npy")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr
    a, b = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert a.shape == b.shape == (70, 32)
    assert a.tobytes() == b.tobytes()


def test_shard_indices_cover_every_sample_once():
    from panderm.distributed import shard_indices

    parts = [shard_indices(23, 4, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(23))
    assert parts[0][:4] == [0, 1, 2, 3] and parts[1][:4] == [4, 5, 6, 7] and parts[0][4:8] == [12, 13, 14, 15]


def test_interrupted_extraction_resumes_where_it_stopped(tiny_openclip, ham_csv, tmp_path):
    """Ctrl-C (or SIGTERM, mapped to it by the doors) mid-extraction: the rerun encodes only the missing rows."""
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = load_table(ham_csv, "image_path").paths
    reference = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache=False).array
    enc.output_dim("features")
    original = enc._image
    calls = []

    def flaky(x, kind):
        calls.append(x.shape[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(x, kind)

    enc._image = flaky
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=tmp_path)
    assert list(tmp_path.glob("*.partial.npy")) and not [p for p in tmp_path.glob("*.npy") if ".partial" not in p.name]
    calls.clear()
    enc._image = lambda x, kind: (calls.append(x.shape[0]), original(x, kind))[1]
    res = extract_features(enc, paths, "features", batch_size=8, num_workers=0, cache_dir=tmp_path)
    assert sum(calls) == 70 - 24  # three full batches were already done
    assert np.array_equal(np.asarray(res.array), reference)
    assert not list(tmp_path.glob("*.partial.*"))


# --------------------------------------------------------------------------- --compile, --batch-size auto


def test_compiled_features_equal_eager_and_share_the_cache_key(tiny_openclip, table, tmp_path):
    """torch.compile on CPU (inductor + the C++ compiler): same numbers within 1e-4, same cache entry."""
    from panderm.features import _COMPILED_ATTR

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = table.paths[:10]  # batches of 4, 4, 2: the last one is padded to the compiled shape
    eager = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache=False).array
    comp = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=tmp_path, compile=True)
    assert not comp.from_cache and comp.array.shape == (10, 64)
    np.testing.assert_allclose(comp.array, eager, atol=1e-4, rtol=0)
    assert float(np.abs(comp.array).max()) > 0.1  # real features, not zeros
    compiled_fn = getattr(enc, _COMPILED_ATTR)["features"]
    assert hasattr(compiled_fn, "_torchdynamo_orig_callable")  # the compiled path really ran
    assert comp.key == cache_key(enc, "features", paths)
    again = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache_dir=tmp_path)
    assert again.from_cache and np.array_equal(np.asarray(again.array), np.asarray(comp.array))
    # built once per process: a second compiled run reuses the same compiled function
    extract_features(enc, paths[:4], "features", batch_size=4, num_workers=0, cache=False, compile=True)
    assert getattr(enc, _COMPILED_ATTR)["features"] is compiled_fn


def test_compile_without_a_cpp_compiler_is_a_one_line_error(tiny_openclip, table, monkeypatch):
    import shutil

    from panderm.errors import ModelError

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ModelError, match="torch.compile on CPU needs a C\\+\\+ compiler") as err:
        extract_features(enc, table.paths[:2], "features", num_workers=0, cache=False, compile=True)
    assert err.value.param == "compile" and err.value.render({"compile": "--compile"}).endswith("(drop --compile)")


def _fake_try(threshold, tried, frac=None):
    def attempt(b):
        tried.append(b)
        if b > threshold:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} MiB")
        return None if frac is None else frac(b)
    return attempt


def test_batch_size_search_halves_until_it_fits():
    from panderm.features import search_batch_size

    tried, released = [], []
    assert search_batch_size(_fake_try(300, tried), on_oom=lambda: released.append(1)) == 256
    assert tried == [1024, 512, 256] and len(released) == 2
    tried = []
    assert search_batch_size(_fake_try(5000, tried)) == 1024 and tried == [1024]
    # a size that fits but leaves less than the headroom is passed over
    tried = []
    assert search_batch_size(_fake_try(300, tried, frac=lambda b: b / 300), headroom=0.2) == 128
    assert tried == [1024, 512, 256, 128]
    # never larger than the number of images: one batch then holds them all
    tried = []
    assert search_batch_size(_fake_try(1000, tried), limit=70) == 70 and tried == [70]
    tried = []
    assert search_batch_size(_fake_try(40, tried), limit=70) == 32 and tried == [70, 64, 32]
    # the older spelling: a RuntimeError whose message says out of memory
    def old_style(b):
        if b > 8:
            raise RuntimeError("CUDA error: out of memory")
        return None
    assert search_batch_size(old_style) == 8


def test_batch_size_search_errors():
    from panderm.errors import ModelError
    from panderm.features import search_batch_size

    with pytest.raises(ModelError, match="not even 1 image"):
        search_batch_size(_fake_try(0, []))

    def broken(b):
        raise ValueError("a bug, not memory")
    with pytest.raises(ValueError, match="a bug"):
        search_batch_size(broken)


def test_batch_size_auto_on_cpu_is_64_and_gives_the_same_features(tiny_openclip, table, caplog):
    import logging

    from panderm.errors import ModelError
    from panderm.features import CPU_AUTO_BATCH, resolve_batch_size

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    with caplog.at_level(logging.INFO, logger="panderm.features"):
        assert resolve_batch_size(enc, "auto") == CPU_AUTO_BATCH == 64
    assert "batch size auto: 64 on cpu" in caplog.text
    assert resolve_batch_size(enc, 12) == 12
    for bad in (0, -3, "x", 2.5):
        with pytest.raises(ModelError, match="positive integer or 'auto'"):
            resolve_batch_size(enc, bad)
    auto = extract_features(enc, table.paths[:70], "features", batch_size="auto", num_workers=0, cache=False).array
    fixed = extract_features(enc, table.paths[:70], "features", batch_size=64, num_workers=0, cache=False).array
    assert np.array_equal(auto, fixed)


def test_loader_is_sized_from_the_cpu_count_and_bounds_prefetch(tiny_openclip, table, monkeypatch):
    from panderm import features

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    loader = features._loader(enc, table.paths, 64, None, None)
    assert loader.num_workers == 4 and loader.prefetch_factor == 4 and not loader.pin_memory  # CPU: at most 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert features.default_workers(torch.device("cpu")) == 2  # 2 cores: both decode (large JPEGs are decode-bound)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert features._loader(enc, table.paths, 64, 64, None).num_workers == 32  # never more than the cores
    assert features._loader(enc, table.paths, 64, 0, None).prefetch_factor is None
    assert features.default_workers(torch.device("cuda")) == 16
    # 15 workers × 1024-image batches: one batch each in flight, not four (4 × 15 × 1024 × 0.6 MB pinned)
    assert features._prefetch_factor(15, 1024) == 1 and features._prefetch_factor(15, 64) == 4
    assert features._prefetch_factor(8, 256) == 2


def test_cli_batch_size_auto_and_bad_values(tiny_openclip, ham_csv, tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "panderm", "features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv),
            "--device", "cpu", "--workers", "0", "--no-cache", "--kind", "features"]
    r = subprocess.run([*base, "--batch-size", "auto", "--out", str(tmp_path / "a.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "batch size auto: 64 on cpu" in r.stderr
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    enc.set_draft_decode(True)  # as `panderm features` decodes by default
    ref = extract_features(enc, load_table(ham_csv, "image_path").paths, "features", batch_size=64, num_workers=0,
                           cache=False).array
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), ref, atol=1e-6)
    bad = subprocess.run([*base, "--batch-size", "0", "--out", str(tmp_path / "b.npy")], capture_output=True, text=True)
    assert bad.returncode == 2 and "must be a positive integer or 'auto', got '0'" in bad.stderr
    assert not (tmp_path / "b.npy").exists()


def test_auto_batch_failure_on_one_rank_is_an_error_on_every_rank(tiny_openclip, ham_csv, tmp_path, monkeypatch):
    """A rank whose GPU fits no batch still joins the size exchange, so no rank waits forever; all raise."""
    import torch.distributed as dist

    from panderm.errors import ModelError
    from panderm.features import extract

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = load_table(ham_csv, "image_path").paths[:4]

    def no_batch_fits(encoder, batch_size, *args, **kw):
        if batch_size == "auto":
            raise ModelError("no batch size fits in GPU memory")
        return batch_size

    monkeypatch.setattr(extract, "resolve_batch_size", no_batch_fits)
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'pg'}")
    try:
        with pytest.raises(ModelError, match="rank 0: no batch size fits"):
            extract._run_distributed(enc, paths, "embed", "auto", 0, "fp32", None, False)
    finally:
        dist.destroy_process_group()
