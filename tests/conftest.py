"""Test environment: everything offline, caches in a private temp folder.

The HF cache variables must be set before huggingface_hub is imported (it reads
them once), so they are set here, at collection time.
"""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="panderm-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)  # tiny models and caches: ~10 MB a run, on a shared disk
os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_ROOT / "inductor")  # else ~1 GB stays in /tmp
os.environ["HF_HUB_CACHE"] = str(_ROOT / "hf-hub")
os.environ["HF_HOME"] = str(_ROOT / "hf-home")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["PANDERM_CACHE"] = str(_ROOT / "panderm-cache")
os.environ.pop("HF_TOKEN", None)
# Under pytest-xdist each worker gets one core's worth of threads (its subprocesses and notebook kernels too):
# two workers each spinning 2 OpenMP threads on a 2-core runner slow a training test ~10x.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

import pytest  # noqa: E402

from tiny_models import (  # noqa: E402
    build_hf_clip,
    build_tiny_bert,
    build_tiny_openclip,
    build_tiny_panderm2,
    build_tiny_panderm_v1,
    put_in_hf_cache,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def ham_csv() -> Path:
    return SAMPLE / "ham10000_sample" / "ham10000_sample.csv"


@pytest.fixture(scope="session")
def models_root() -> Path:
    d = _ROOT / "models"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def tiny_openclip(models_root):
    """A stock open_clip ViT + text transformer, as local-dir AND as hf-hub:test/tiny-clip."""
    folder = build_tiny_openclip(models_root / "tiny-clip")
    put_in_hf_cache(folder, "test/tiny-clip")
    return folder


@pytest.fixture(scope="session")
def tiny_bert(models_root):
    folder = build_tiny_bert(models_root / "tiny-bert")
    put_in_hf_cache(folder, "test/tiny-pubmedbert")
    return folder


@pytest.fixture(scope="session")
def tiny_panderm2(models_root, tiny_bert):
    """PanDerm-2-style CLIP: CAE tower with reference key names + tiny BERT text tower."""
    folder = build_tiny_panderm2(models_root / "tiny-panderm2", text_repo="test/tiny-pubmedbert")
    put_in_hf_cache(folder, "test/tiny-panderm2")
    return folder


@pytest.fixture(scope="session")
def tiny_panderm_v1(models_root):
    return build_tiny_panderm_v1(models_root / "panderm_v1_tiny.pth")


@pytest.fixture(scope="session")
def tiny_hf_clip(models_root):
    folder = build_hf_clip(models_root / "tiny-hf-clip")
    put_in_hf_cache(folder, "test/tiny-monet")
    return folder


@pytest.fixture(scope="session")
def tiny_dinov3(models_root):
    """A DINOv3 backbone in the transformers hub layout, as a folder AND as hf-vision:test/tiny-dinov3."""
    from tiny_models import build_tiny_dinov3

    folder = build_tiny_dinov3(models_root / "tiny-dinov3")
    put_in_hf_cache(folder, "test/tiny-dinov3")
    return folder


@pytest.fixture
def two_torch_threads():
    """torch on 2 threads for the test (1 under xdist: the other core runs the other worker), restored afterwards
    (the CI runner has 2 cores; more only contend)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    yield
    torch.set_num_threads(old)
