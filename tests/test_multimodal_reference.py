"""The multimodal path against the reference's computation (PanDermFormer.py, dataloader.py, scripts).

Each test pins one behaviour the reference-compatible doors must reproduce by default:
metadata cross attention over the raw encoder outputs, drop path in the CAE towers, fp32,
cv2-style resizing, std 0.228, the reference's flags, PanDerm v1 mean pooling and the
one-hot MetaSubNet.
"""
import argparse
import dataclasses
import shlex
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from panderm.errors import PandermError
from panderm.models import load_encoder
from panderm.models.cae_vit import drop_path, drop_path_rates
from panderm.models.registry import resolve_alias
from panderm.cli.multimodal import register
from panderm.compat.multimodal_door import reference_parser
from panderm.tasks.multimodal.data import (
    IMAGENET_STD,
    REFERENCE_STD,
    AugParams,
    PairedTransform,
    apply_aug,
    load_pad_ufes20,
    reference_resize,
    to_float_tensor,
)
from panderm.tasks.multimodal.model import (
    FusionConfig,
    FusionHead,
    MetaSubNet,
    PanDermTFormer,
    cae_tower,
    image_features,
    resolve_pool,
)
from panderm.tasks.multimodal.train import MultimodalTrainer, TrainConfig

REPO = Path(__file__).resolve().parents[1]
PAD_CSV = REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"
NO_NORM = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


# -- 1. C+D+M: the metadata token attends to cat(cli_f, der_f), the encoder outputs -----------

def test_meta_fusion_ignores_the_image_fusion_outputs():
    torch.manual_seed(0)
    h = 8
    cfg = FusionConfig(num_classes=3, fusion="cross attention", meta_fusion="cross attention", att_depth=1,
                       num_head=2, meta_att_depth=2, meta_num_head=2, out="linear")
    head = FusionHead(cfg, hidden_dim=h, meta_feat_dim=5).eval()
    cli, der, meta = torch.randn(4, h), torch.randn(4, h), torch.randn(4, 5)
    with torch.no_grad():
        before = head.fuse(cli, der, meta)
        for p in head.image_fusion.parameters():
            p.add_(0.5)
        after = head.fuse(cli, der, meta)
        expected_meta = head.meta_fusion(head.meta_proj(meta).unsqueeze(1), torch.cat([cli, der], 1).unsqueeze(1))
    # [der_f_cli, meta_fused, cli_f_derm]: only the fused image slots move with the image-fusion weights
    torch.testing.assert_close(after[:, h:2 * h], before[:, h:2 * h])
    torch.testing.assert_close(after[:, h:2 * h], expected_meta.squeeze(1))
    assert not torch.allclose(after[:, :h], before[:, :h]) and not torch.allclose(after[:, 2 * h:], before[:, 2 * h:])


# -- 2. drop path ---------------------------------------------------------------------------

def test_finetune_reuses_the_cae_drop_path_helpers():
    from panderm.tasks import finetune

    assert finetune._drop_path is drop_path and finetune._drop_path_rates is drop_path_rates


def test_drop_path_is_per_sample_scale_by_keep_and_off_in_eval():
    torch.manual_seed(0)
    x = torch.ones(4000, 3)
    assert drop_path(x, 0.25, training=False) is x and drop_path(x, 0.0, training=True) is x
    out = drop_path(x, 0.25, training=True)
    rows = out[:, 0]
    assert torch.all((rows == 0) | torch.isclose(rows, torch.tensor(1 / 0.75)))
    assert (out == out[:, :1]).all()  # one draw per sample
    assert abs(float((rows == 0).float().mean()) - 0.25) < 0.03
    assert drop_path_rates(3, 0.1) == pytest.approx([0.0, 0.05, 0.1])


def _batch(enc, n=4):
    s = enc.preprocess_spec.size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(1))


def test_panderm2_towers_get_the_reference_drop_path_in_training_only(tiny_panderm2):
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    cfg = FusionConfig(num_classes=3, use_cli=True, use_derm=True, use_meta=False, num_head=2, att_depth=1,
                       out="linear")
    model = PanDermTFormer(enc, cfg)
    depth = len(cae_tower(enc).blocks)
    for e in (model.cli_encoder, model.derm_encoder):  # the derm deep copy carries the same rates
        assert [b.drop_path for b in cae_tower(e).blocks] == pytest.approx(drop_path_rates(depth, 0.1))
    assert model.describe()["drop_path"] == 0.1 and model.describe()["drop_path_applied"]

    strong = PanDermTFormer(load_encoder(f"local-dir:{tiny_panderm2}"), cfg, drop_path=0.5)
    x = _batch(enc)
    with torch.no_grad():
        strong.train()
        torch.manual_seed(0)
        a = strong(None, x, x)
        b = strong(None, x, x)
        assert not torch.allclose(a, b)  # a fresh draw per forward
        strong.eval()
        ev = strong(None, x, x)
        assert torch.equal(ev, strong(None, x, x))
        for e in (strong.cli_encoder, strong.derm_encoder):  # rate 0: train mode computes exactly eval mode
            for blk in cae_tower(e).blocks:
                blk.drop_path = 0.0
        strong.train()  # linear head, no image dropout / BN: the only train-mode difference was drop path
        torch.testing.assert_close(strong(None, x, x), ev)


def test_frozen_encoders_get_no_drop_path(tiny_panderm2):
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    cfg = FusionConfig(num_classes=3, use_cli=True, use_derm=False, use_meta=False, out="linear")
    model = PanDermTFormer(enc, cfg, freeze_encoders=True, drop_path=0.5).train()
    assert not cae_tower(enc).training and not model.describe()["drop_path_applied"]


# -- 3/4/5. door vs CLI defaults: precision, resize mode, std, drop path -----------------------

def _built_config(monkeypatch, tmp_path, argv, ref: bool) -> TrainConfig:
    """The TrainConfig `_build` makes from a command line (encoder and trainer stubbed)."""
    import panderm.models
    import panderm.tasks.multimodal.train as mm_train
    from panderm.cli import multimodal as cli

    seen = {}

    class Trainer:
        def __init__(self, encoder, table, fusion, cfg, out, device="cpu"):
            seen["cfg"] = cfg
            self.model = SimpleNamespace(fusion=SimpleNamespace(hidden_dim=1024))

    monkeypatch.setattr(panderm.models, "load_encoder", lambda *a, **k: SimpleNamespace(device="cpu"))
    monkeypatch.setattr(mm_train, "MultimodalTrainer", Trainer)
    if ref:
        args = reference_parser("train").parse_args(
            ["--dataset", "pad", "--data_dir", str(PAD_CSV), "--use_cli", "--output_dir", str(tmp_path / "o"),
             "--cuda", "false", *argv])
    else:
        from panderm.cli import add_model_args

        p = argparse.ArgumentParser()
        register(p.add_subparsers(), add_model_args)
        args = p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", str(PAD_CSV), "--use-cli", "--device", "cpu",
                             "--output-dir", str(tmp_path / "o"), *argv])
    cli._build(args, train=True)
    return seen["cfg"]


def test_door_defaults_are_the_reference_computation(monkeypatch, tmp_path):
    cfg = _built_config(monkeypatch, tmp_path, [], ref=True)
    assert (cfg.precision, cfg.reference_std, cfg.resize_mode, cfg.drop_path, cfg.bgr) == \
        ("fp32", True, "reference", None, True)
    cfg = _built_config(monkeypatch, tmp_path, ["--precision", "amp", "--imagenet_std", "--resize_mode", "antialias",
                                                "--drop_path", "0.2", "--rgb"], ref=True)
    assert (cfg.precision, cfg.reference_std, cfg.resize_mode, cfg.drop_path, cfg.bgr) == \
        ("amp", False, "antialias", 0.2, False)


def test_panderm_cli_defaults_and_flags(monkeypatch, tmp_path):
    cfg = _built_config(monkeypatch, tmp_path, [], ref=False)
    assert (cfg.precision, cfg.reference_std, cfg.resize_mode, cfg.drop_path, cfg.bgr) == \
        ("amp", False, "antialias", None, False)
    cfg = _built_config(monkeypatch, tmp_path, ["--precision", "fp32", "--reference-std", "--resize-mode", "reference",
                                                "--drop-path", "0.3", "--bgr"], ref=False)
    assert (cfg.precision, cfg.reference_std, cfg.resize_mode, cfg.drop_path, cfg.bgr) == \
        ("fp32", True, "reference", 0.3, True)


def test_trainer_passes_resize_mode_and_std_to_the_datasets(tiny_panderm2, tmp_path):
    table = load_pad_ufes20(PAD_CSV)
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    fc = FusionConfig(num_classes=6, use_cli=True, use_derm=False, use_meta=False, out="linear")
    ref = MultimodalTrainer(enc, table, fc, TrainConfig(resize_mode="reference", reference_std=True), tmp_path)
    for ds in ref.datasets.values():
        assert ds.transform.resize_mode == "reference" and tuple(ds.transform.std) == REFERENCE_STD
    plain = MultimodalTrainer(enc, table, fc, TrainConfig(), tmp_path)
    assert plain.datasets["train"].transform.resize_mode == "antialias"
    assert tuple(plain.datasets["train"].transform.std) == IMAGENET_STD
    with pytest.raises(PandermError, match="resize mode"):
        TrainConfig(resize_mode="bicubic").check()


# -- 4. cv2-style resizing ----------------------------------------------------------------------

def _bilinear_half_pixel(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear with half-pixel centres and edge clamping, two taps per axis (cv2 INTER_LINEAR), in float."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, fy = axis(img.shape[0], out_h)
    x0, x1, fx = axis(img.shape[1], out_w)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


@pytest.mark.parametrize("shape,size", [((37, 53), 24), ((50, 40), 64), ((224, 224), 256), ((300, 200), 224)])
def test_reference_resize_is_two_tap_bilinear_rounded_to_8_bit(shape, size):
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3)).astype(np.uint8)
    ours = reference_resize(torch.from_numpy(img).permute(2, 0, 1).float() / 255, size)
    ours = (ours * 255).permute(1, 2, 0).numpy()
    assert np.allclose(ours, ours.round(), atol=1e-3)  # on the uint8 grid, as cv2 keeps uint8
    diff = np.abs(ours.round() - _bilinear_half_pixel(img.astype(np.float64), size, size).round())
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # only exact .5 ties may round the other way


def test_reference_resize_does_not_antialias():
    # columns 255, 0, 0, 255, ...: a 4x shrink samples between columns 4k+1 and 4k+2 only
    img = torch.zeros(3, 64, 64)
    img[..., 0::4] = 1.0
    img[..., 3::4] = 1.0
    assert torch.equal(reference_resize(img, 16), torch.zeros(3, 16, 16))  # no filter mixes in the bright columns
    from torchvision.transforms.v2 import functional as TF

    assert TF.resize(img, [16, 16], antialias=True).max() > 0.2  # what the antialiased path gives
    assert reference_resize(img, 64) is img  # same size: untouched, as cv2


def test_reference_resize_within_one_grey_level_of_cv2():
    cv2 = pytest.importorskip("cv2")  # not a dependency; checked where OpenCV happens to be installed
    rng = np.random.default_rng(1)
    for (h, w), size in (((450, 600), 224), ((224, 224), 256), ((120, 130), 224)):
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        want = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR).astype(int)
        got = (reference_resize(torch.from_numpy(img).permute(2, 0, 1).float() / 255, size) * 255).round()
        assert np.abs(got.permute(1, 2, 0).numpy().astype(int) - want).max() <= 1


def test_reference_transform_chain():
    arr = np.random.default_rng(2).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    img = Image.fromarray(arr)
    x = to_float_tensor(img)
    ev = PairedTransform(train=False, image_size=16, resize_mode="reference", **NO_NORM)
    torch.testing.assert_close(ev.one(img), reference_resize(x, 16), rtol=0, atol=0)
    tr = PairedTransform(train=True, image_size=16, resize_to=20, resize_mode="reference", **NO_NORM)
    params = AugParams(top=1, left=2, height=15, width=13, vflip=True, hflip=False, rot90=1)
    big = reference_resize(reference_resize(x, 16), 20)  # the loader's 224 first, then A.Resize(256)
    crop = reference_resize(big[:, 1:16, 2:15], 16)  # RandomResizedCrop: crop, then cv2 INTER_LINEAR
    expected = torch.rot90(crop.flip(-2), 1, dims=(-2, -1))
    torch.testing.assert_close(apply_aug(big, params, 16, "reference"), expected, rtol=0, atol=0)
    torch.testing.assert_close(tr.one(img, params), expected, rtol=0, atol=0)
    # the default path stays the single antialiased resize
    plain = PairedTransform(train=False, image_size=16, **NO_NORM)
    assert not torch.equal(plain.one(img), ev.one(img))


# -- 6. the reference's command lines -------------------------------------------------------------

# Verbatim from SiyuanYan1/PanDerm-2 script/multimodal_finetune/{Derm7pt(C+D+M),PAD(C+M)}.sh (python train.py / test.py
# arguments); MILK-11 rebuilt from the reference script's values (the script itself is not in the stored reference copy).
REFERENCE_LINES = {
    ("train", "derm7pt"): """--model_name 'PanDerm-v2' --dataset_name 'Derm7pt'
        --dir_release "../meta-files/multi-modality-finetune/derm7pt/" --epochs 50 --batch_size 32 --accum_freq 2
        --hidden_dim 1024 --learning_rate 1e-5 --cuda True --use_derm --use_cli --use_meta --use_text_encoder
        --meta_dim 768 --num_head 8 --att_depth 2 --meta_num_head 8 --meta_att_depth 4 --fusion 'cross attention'
        --meta_fusion_mode 'cross attention' --encoder_pool 'mean' --out 'mlp'
        --output_dir '../multimodal_finetune-result/derm7pt/PanDermv2/'""",
    ("test", "derm7pt"): """--model_name 'PanDerm-v2'
        --model_path '../multimodal_finetune-result/derm7pt/PanDermv2/bestacc_model_33.pth' --dataset_name 'Derm7pt'
        --dir_release "../meta-files/multi-modality-finetune/derm7pt/" --epochs 50 --batch_size 32 --hidden_dim 1024
        --cuda True --use_derm --use_cli --use_meta --use_text_encoder --meta_dim 768 --num_head 8 --att_depth 2
        --meta_num_head 8 --meta_att_depth 4 --fusion 'cross attention' --meta_fusion_mode 'cross attention'
        --encoder_pool 'mean' --out 'mlp' --output_dir '../multimodal_finetune-result/derm7pt/PanDermv2/'""",
    ("train", "pad"): """--model_name 'PanDerm-v2' --dataset_name 'PAD' --class_num 6 --epochs 50 --batch_size 32
        --accum_freq 2 --hidden_dim 1024 --learning_rate 1e-5 --cuda True --use_cli --use_meta --use_text_encoder
        --meta_dim 768 --num_head 8 --att_depth 4 --meta_num_head 8 --meta_att_depth 2 --fusion 'cross attention'
        --meta_fusion_mode 'cross attention' --encoder_pool 'mean' --out 'mlp'
        --output_dir '../multimodal_finetune-result/PAD/PanDermv2/'""",
    ("test", "pad"): """--model_name 'PanDerm-v2'
        --model_path '..multimodal_finetune-result/PAD/PanDermv2/bestacc_model_19.pth' --dataset_name 'PAD'
        --class_num 6 --epochs 50 --batch_size 32 --hidden_dim 1024 --cuda True --use_cli --use_meta
        --use_text_encoder --meta_dim 768 --num_head 8 --att_depth 4 --meta_num_head 8 --meta_att_depth 2
        --fusion 'cross attention' --meta_fusion_mode 'cross attention' --encoder_pool 'mean' --out 'mlp'
        --output_dir '../multimodal_finetune-result/PAD/PanDermv2/'""",
    ("train", "milk11"): """--model_name 'PanDerm-v2' --dataset_name 'MILK-11' --class_num 11 --epochs 50
        --batch_size 32 --accum_freq 2 --hidden_dim 1024 --learning_rate 5e-6 --weight_decay 1e-4 --cuda True
        --use_derm --use_cli --num_head 8 --att_depth 4 --fusion 'cross attention' --encoder_pool 'mean'
        --out 'mlp' --monitor loss --patience 25 --weight_sampler
        --output_dir '../multimodal_finetune-result/MILK-11/PanDerm-v2_weighted_sampler/'""",
    ("test", "milk11"): """--model_name 'PanDerm-v2'
        --model_path '../multimodal_finetune-result/MILK-11/PanDerm-v2_weighted_sampler/bestvalloss_model_21.pth'
        --dataset_name 'MILK-11' --class_num 11 --epochs 50 --batch_size 32 --hidden_dim 1024 --cuda True
        --use_derm --use_cli --num_head 8 --att_depth 4 --fusion 'cross attention' --encoder_pool 'mean'
        --out 'mlp' --output_dir '../multimodal_finetune-result/MILK-11/PanDerm-v2_weighted_sampler/'""",
}


@pytest.mark.parametrize("mode,dataset", sorted(REFERENCE_LINES))
def test_doors_parse_the_reference_command_lines(mode, dataset):
    args = reference_parser(mode).parse_args(shlex.split(REFERENCE_LINES[(mode, dataset)]))
    assert args.dataset == dataset and args.cuda is True and args.model == "PanDerm-v2"
    assert args.batch_size == 32 and args.head == "mlp" and args.fusion == "cross attention"
    if mode == "test":
        assert args.model_path.endswith(".pth") and args.epochs == 50
    else:
        assert args.epochs == 50 and args.accum_freq == 2


def test_dataset_name_spellings_and_default():
    p = reference_parser("train")
    assert p.parse_args([]).dataset == "derm7pt"  # the reference's default "Derm7pt"
    for spelling, key in (("Derm7pt", "derm7pt"), ("MILK-11", "milk11"), ("PAD", "pad"), ("pad", "pad"),
                          ("csv", "csv")):
        assert p.parse_args(["--dataset_name", spelling]).dataset == key
        assert p.parse_args(["--dataset", spelling]).dataset == key
    with pytest.raises(SystemExit):
        p.parse_args(["--dataset_name", "ISIC"])


def test_door_accepts_the_reference_flags_it_never_reads():
    args = reference_parser("train").parse_args(["--fold", "3", "--pretrained", "True", "--pretrain_path", "w.pth"])
    assert args.checkpoint == "w.pth"
    assert reference_parser("test").parse_args(["--epochs", "100", "--pretrain_path", "w.pth"]).checkpoint == "w.pth"


# -- 7. PanDerm v1 (the reference's PanDerm-Large / PanDerm-Base) -----------------------------------

def test_panderm_large_resolves_and_mean_pools_like_the_reference(tiny_panderm_v1):
    assert resolve_alias("PanDerm-Large").model_id == "panderm-v1-large"
    assert resolve_alias("PanDerm-Base").model_id == "panderm-v1-base"
    enc = load_encoder("PanDerm-Large", checkpoint=str(tiny_panderm_v1))
    assert resolve_pool(enc) == "mean"
    tower = enc.tower
    enc.set_preprocess(dataclasses.replace(enc.preprocess_spec, size=tower.cfg.image_size))  # the reduced tower
    x = _batch(enc, 3)
    with torch.no_grad():
        # use_mean_pooling=True, lin_probe=False: x = norm(x); norm(mean(x[:, 1:])) - one LayerNorm, twice
        expected = tower.norm(tower.norm(tower.run_blocks(x))[:, 1:].mean(dim=1))
        torch.testing.assert_close(image_features(enc, x, "mean"), expected)
        assert not torch.allclose(image_features(enc, x, "mean"), tower.tokens(x)[:, 0])
    model = PanDermTFormer(enc, FusionConfig(num_classes=2, use_cli=True, use_derm=False, use_meta=False,
                                             out="linear"))
    d = model.describe()
    assert d["pool"] == "mean" and d["hidden_dim"] == tower.cfg.width
    assert d["drop_path"] == 0.0  # the reference's default CAE class: drop_path_rate 0


def test_mean_pool_needs_a_cae_tower():
    enc = SimpleNamespace(image_kinds=("embed", "features", "tokens"), model_id="timm:x", family="timm")
    with pytest.raises(Exception, match="CAE tower"):
        resolve_pool(enc, "mean")


# -- 8. one-hot metadata: MetaSubNet with one dropout, meta_proj = Identity ---------------------------

def test_one_hot_metadata_path_matches_the_reference():
    net = MetaSubNet(7, 6)
    assert [type(m) for m in net.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU,
                                          nn.Dropout]
    assert net.net[-1].p == 0.3
    torch.manual_seed(0)
    h = 8
    cfg = FusionConfig(num_classes=3, use_text_encoder=False, meta_in_dim=7, meta_dim=6, num_head=2,
                       meta_num_head=2, att_depth=1, meta_att_depth=1, fusion="cross attention",
                       meta_fusion="cross attention", out="mlp")
    head = FusionHead(cfg, hidden_dim=h).eval()
    assert isinstance(head.meta_proj, nn.Identity) and head.final_dim == 2 * h + 6
    proj_in, layer, proj_out = head.meta_fusion.layers[0]
    assert (proj_in.in_features, proj_in.out_features) == (6, 2 * h)  # LinearProject(meta_dim -> 2h) and back
    cli, der, meta = torch.randn(5, h), torch.randn(5, h), torch.randn(5, 7)
    with torch.no_grad():
        m = head.meta_net(meta)
        want = proj_out(layer(proj_in(m).unsqueeze(1), torch.cat([cli, der], 1).unsqueeze(1))).squeeze(1) + m
        torch.testing.assert_close(head.fuse(cli, der, meta)[:, h:h + 6], want)


@pytest.mark.parametrize("k", [2, 4])
def test_test_metrics_equal_the_reference_sklearn_calls(k):
    """eval_metrics.py: accuracy, macro F1, balanced accuracy and recall_score (binary / macro) from sklearn,
    including a class predicted but absent from the test labels (sklearn's macro counts it as recall 0)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    from panderm.tasks.multimodal.train import test_metrics

    rng = np.random.default_rng(k)
    y = rng.integers(0, k - 1, 40)  # the last class never occurs in the labels
    probs = rng.dirichlet(np.ones(k), 40)
    probs[:5, k - 1] += 5  # ... but is predicted for five samples
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    m = test_metrics(y, probs, 0.5)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the case under test
        warnings.simplefilter("ignore")
        assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    expected = recall_score(y, pred, average="binary" if k == 2 else "macro", zero_division=0)
    assert m["sensitivity"] == pytest.approx(expected, abs=1e-12)
    assert m["avg_test_loss"] == 0.5


def test_cli_keeps_the_data_modules_resize_modes():
    """cli.py repeats the names so `panderm --help` starts without importing torch: the two must agree."""
    from panderm.cli import multimodal_args as cli
    from panderm.tasks.multimodal import data

    assert set(cli.RESIZE_MODES) == set(data.RESIZE_MODES)
