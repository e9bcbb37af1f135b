"""Every model family loads through the code path a user runs, offline, with strict keys."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from panderm.errors import ModelError
from panderm.models import PreprocessSpec, load_encoder
from panderm.models.cae_vit import detect_cae_layout, sincos_pos_embed
from panderm.models.registry import model_short_name, resolve_alias
from reference_cae import sincos_table, tower_outputs


def test_sincos_matches_the_reference_layout():
    assert torch.allclose(sincos_pos_embed(4, 16), sincos_table(4, 16), atol=1e-6)
    # CLS slot is zero; patch 5 of a 4x4 grid is row 1, column 1.
    table = sincos_pos_embed(4, 16)
    assert torch.count_nonzero(table[0, 0]) == 0
    assert math.isclose(float(table[0, 1 + 5, 0]), math.sin(1.0), rel_tol=1e-6)


def test_openclip_local_dir_and_hf_hub_load_the_same_weights(tiny_openclip):
    a = load_encoder(f"local-dir:{tiny_openclip}")
    b = load_encoder("hf-hub:test/tiny-clip")
    assert a.fingerprint == b.fingerprint
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.encode_image(x), b.encode_image(x))
    # The hub config's preprocess_cfg is honoured.
    assert a.preprocess_spec.mean == (0.5, 0.5, 0.5) and a.preprocess_spec.size == 32
    assert not a.random_init
    sd = load_file(str(tiny_openclip / "open_clip_model.safetensors"))
    assert torch.equal(a.model.state_dict()["visual.proj"], sd["visual.proj"])


def test_openclip_features_are_pre_projection(tiny_openclip):
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = enc.encode_image(x, "features")
        embed = enc.encode_image(x, "embed")
    assert feats.shape == (3, 64) and embed.shape == (3, 32)
    assert torch.allclose(feats @ enc.model.visual.proj, embed, atol=1e-5)
    with pytest.raises(ModelError, match="does not provide kind 'tokens'"):
        enc.encode_image(x, "tokens")


def test_panderm2_style_tower_is_chosen_from_keys_and_matches_reference(tiny_panderm2):
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    assert detect_cae_layout(sd) == "paper"
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    assert enc.extra["vision_tower"] == "cae-paper"
    x = torch.randn(2, 3, 32, 32)
    ref = tower_outputs(sd, x, heads=2)
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x, "embed"), ref["embed"], atol=1e-4)
        assert torch.allclose(enc.encode_image(x, "features"), ref["pooled_double"], atol=1e-4)
        assert torch.allclose(enc.encode_image(x, "tokens")[:, 0], ref["cls"], atol=1e-4)
    # The double LayerNorm is really different from a single one on these weights.
    assert not torch.allclose(ref["pooled_double"], ref["pooled_single"], atol=1e-3)


def test_panderm2_hub_id_loads_offline_with_bert_text_tower(tiny_panderm2):
    enc = load_encoder("hf-hub:test/tiny-panderm2")
    ids = enc.tokenize(["melanoma", "a skin image of nevus"])
    assert ids.shape == (2, 32)  # context length from text_cfg
    assert ids[0, 0].item() == 2  # [CLS] of the WordPiece vocab
    with torch.no_grad():
        t = enc.encode_text(ids)
    assert t.shape == (2, 32)
    # Masked mean pooling: padding does not change the result.
    longer = torch.cat([ids, torch.zeros(2, 0, dtype=ids.dtype)], 1)
    with torch.no_grad():
        assert torch.allclose(enc.encode_text(longer), t)


def test_open_layout_single_layernorm(tiny_panderm2, tmp_path):
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    moved = {(k.replace("visual.", "visual.trunk.", 1) if k.startswith("visual.") else k): v for k, v in sd.items()}
    folder = tmp_path / "open"
    folder.mkdir()
    save_file(moved, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text((tiny_panderm2 / "open_clip_config.json").read_text())
    enc = load_encoder(f"local-dir:{folder}")
    assert enc.extra["vision_tower"] == "cae-open"
    x = torch.randn(2, 3, 32, 32)
    ref = tower_outputs(sd, x, heads=2)
    with torch.no_grad():
        feats = enc.encode_image(x, "features")
    assert torch.allclose(feats, ref["pooled_single"], atol=1e-4)


def test_missing_and_unexpected_keys_are_errors(tiny_panderm2, tmp_path):
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_panderm2 / "open_clip_config.json").read_text())
    bad = dict(sd)
    bad.pop("visual.norm.weight")
    bad["visual.extra_thing"] = torch.zeros(1)
    save_file(bad, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(ModelError) as err:
        load_encoder(f"local-dir:{folder}")
    msg = str(err.value)
    assert "missing 1 key(s): visual.norm.weight" in msg and "unexpected 1 key(s): visual.extra_thing" in msg


def test_no_weights_is_an_error_unless_random_init_is_asked(tiny_openclip, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_openclip / "open_clip_config.json").read_text())
    with pytest.raises(ModelError, match="no weights file found"):
        load_encoder(f"local-dir:{folder}")
    enc = load_encoder(f"local-dir:{folder}", allow_random_init=True)
    assert enc.random_init and enc.describe()["random_init"] is True


def test_unknown_ids_and_uncached_hub_ids_fail_clearly():
    with pytest.raises(ModelError, match="unknown model id 'no-such-model'"):
        load_encoder("no-such-model")
    with pytest.raises(ModelError, match="not in the local HF cache"):
        load_encoder("hf-hub:nobody/not-cached")
    with pytest.raises(ModelError, match="checkpoint file not found"):
        load_encoder("panderm-v1-large", checkpoint="/nonexistent/file.pth")


def test_panderm_v1_strips_encoder_prefix_and_uses_cls_after_final_norm(tiny_panderm_v1):
    enc = load_encoder("PanDerm-L", checkpoint=str(tiny_panderm_v1))
    sd = torch.load(tiny_panderm_v1, weights_only=True)
    enc_sd = {"visual." + k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    x = torch.randn(2, 3, 32, 32)
    ref = tower_outputs(enc_sd, x, heads=1)
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x, "features"), ref["cls"], atol=1e-4)
        assert torch.allclose(enc.encode_image(x, "embed"), ref["cls"], atol=1e-4)
    assert not enc.has_text
    with pytest.raises(ModelError, match="vision-only"):
        enc.tokenize(["x"])


def test_panderm_v1_checkpoint_of_another_architecture_is_rejected(tiny_openclip):
    with pytest.raises(ModelError, match="not a CAE/BEiT ViT state dict"):
        load_encoder("PanDerm-L", checkpoint=str(tiny_openclip / "open_clip_model.safetensors"))


def test_hf_clip_layout_loads_with_monet_preprocessing(tiny_hf_clip):
    enc = load_encoder("hf-clip:test/tiny-monet")
    assert enc.preprocess_spec.mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        img = enc.encode_image(x)
        txt = enc.encode_text(enc.tokenize(["melanoma", "nevus"]))
        direct = enc.model.visual_projection(enc.model.vision_model(pixel_values=x).pooler_output)
    assert img.shape == (2, 16) and txt.shape == (2, 16)
    assert torch.allclose(img, direct, atol=1e-5)


def test_timm_and_torchvision_with_checkpoint(tmp_path):
    import timm
    import torchvision

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    del m
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    enc = load_encoder("torchvision:resnet18", checkpoint=str(tmp_path / "r18.pth"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = enc.encode_image(x, "features")
        tv.fc = torch.nn.Identity()
        tv.eval()
        assert torch.allclose(out, tv(x), atol=1e-5)
    assert out.shape == (1, 512)
    # A checkpoint of another architecture is an error, not a silent partial load.
    with pytest.raises(ModelError, match="does not match the model"):
        load_encoder("torchvision:resnet34", checkpoint=str(tmp_path / "r18.pth"))


def test_timm_backbone_from_checkpoint(tmp_path):
    import timm

    m = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.save(m.state_dict(), tmp_path / "r10.pth")
    enc = load_encoder("timm:resnet10t", checkpoint=str(tmp_path / "r10.pth"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x), m.eval()(x), atol=1e-5)


def test_aliases_and_short_names():
    assert resolve_alias("panderm2").model_id == "hf-hub:redlessone/PanDerm2"
    assert resolve_alias("open_clip_hf-hub:redlessone/PanDerm2").model_id == "hf-hub:redlessone/PanDerm2"
    assert resolve_alias("CLIP-L14").pretrained == "openai"
    assert model_short_name("hf-hub:redlessone/PanDerm2") == "PanDerm2"
    assert model_short_name("ViT-L-14") == "ViT-L-14"


def test_fingerprint_changes_with_weights_and_preprocessing(tiny_openclip):
    from panderm.models.base import PreprocessSpec

    a = load_encoder(f"local-dir:{tiny_openclip}")
    fp = a.fingerprint
    a.set_preprocess(PreprocessSpec(size=32, interpolation="bilinear"))
    assert a.fingerprint != fp
    b = load_encoder(f"local-dir:{tiny_openclip}")
    with torch.no_grad():
        b.model.visual.proj.add_(1e-3)
    b._fingerprint = None
    assert b.fingerprint != fp


def test_monet_openai_format_state_dict_loads_into_open_clip(tmp_path, monkeypatch):
    """MONET's weight_clip.pt is an OpenAI CLIP state dict; a reduced QuickGELU CLIP stands in for ViT-L/14."""
    import open_clip
    from open_clip.model import CLIP

    from panderm.models import registry
    from tiny_models import TINY_CLIP_CFG

    cfg_file = tmp_path / "tiny-openai-quickgelu.json"
    cfg_file.write_text(json.dumps({**TINY_CLIP_CFG, "quick_gelu": True}))
    open_clip.add_model_config(cfg_file)
    monkeypatch.setattr(registry, "MONET_OPENAI_CONFIG", "tiny-openai-quickgelu")
    torch.manual_seed(11)
    model = CLIP(**TINY_CLIP_CFG, quick_gelu=True).eval()
    torch.save(model.state_dict(), tmp_path / "weight_clip.pt")
    enc = load_encoder("MONET", checkpoint=str(tmp_path / "weight_clip.pt"))
    assert enc.preprocess_spec.mean == (0.485, 0.456, 0.406)  # MONET's ImageNet normalisation
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x), model.encode_image(x), atol=1e-5)


def test_biomedclip_layout_timm_tower_and_bert_loads_offline(models_root, tiny_bert):
    from panderm.tasks.linear_probe.pipeline import reference_feature
    from tiny_models import build_tiny_biomedclip, put_in_hf_cache

    folder = build_tiny_biomedclip(models_root / "tiny-biomedclip", text_repo="test/tiny-pubmedbert")
    put_in_hf_cache(folder, "test/tiny-biomedclip")
    enc = load_encoder("hf-hub:test/tiny-biomedclip")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        img = enc.encode_image(x)
        txt = enc.encode_text(enc.tokenize(["melanoma", "benign nevus"]))
        direct = enc.model.visual(x)
    assert img.shape == txt.shape == (2, 32)
    assert torch.allclose(img, direct, atol=1e-5)
    # The reference linear probe used BiomedCLIP's L2-normalised projected features.
    assert reference_feature(enc) == ("embed", True)


def test_review_fixes_model_loading(tiny_panderm2, tmp_path, monkeypatch):
    from panderm.models import REFERENCE_LP_PREPROCESS
    from panderm.models import openclip_family

    # MONET with the reference's `--pretrained openai` is MONET (hf-clip), not plain OpenAI CLIP.
    with pytest.raises(ModelError, match="hf-clip:chanwkim/monet"):
        load_encoder("MONET", checkpoint="openai")
    # OpenAI pretrained tags build the QuickGELU variant, as the reference's OpenAI loader did.
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", lambda cfg, **kw: str(tmp_path / "w.pt"))
    files = openclip_family.resolve_config_name("ViT-B-16", "openai")
    assert files.config["model_cfg"]["quick_gelu"] is True
    # DermFM-Zero-Open's training-only knowledge_encoder.* keys are dropped, not a strict-load error.
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    sd["knowledge_encoder.proj.weight"] = torch.zeros(4, 4)
    folder = tmp_path / "open"
    folder.mkdir()
    save_file(sd, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text((tiny_panderm2 / "open_clip_config.json").read_text())
    assert load_encoder(f"local-dir:{folder}").extra["vision_tower"] == "cae-paper"
    # A timm ViT built at 518 px (DINOv2) runs under the reference's 224-px probe transform.
    enc = load_encoder("timm:vit_small_patch14_dinov2", allow_random_init=True, preprocess=REFERENCE_LP_PREPROCESS)
    with torch.no_grad():
        assert enc.encode_image(torch.randn(1, 3, 224, 224), "features").shape == (1, 384)


def test_effective_precision():
    from panderm.features import effective_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert effective_precision(cpu, "amp") == "fp32"
    assert effective_precision(gpu, "amp") == "fp16"
    assert effective_precision(gpu, "amp_bfloat16") == effective_precision(gpu, "pure_bf16") == "bf16"
    assert effective_precision(gpu, "fp32") == "fp32"
    with pytest.raises(ModelError, match="unknown precision 'fp23'"):
        effective_precision(gpu, "fp23")


def test_torchvision_checkpoint_without_classifier(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    torch.save(sd, tmp_path / "ssl.pth")
    enc = load_encoder("torchvision:resnet18", checkpoint=str(tmp_path / "ssl.pth"))
    assert enc.encode_image(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_preprocess_override_of_another_size_on_a_fixed_size_model_is_one_model_error(tiny_openclip):
    from panderm.models import REFERENCE_LP_PREPROCESS

    # The demo ViT takes 64 px; the reference linear-probe transform crops 224 px.
    with pytest.raises(ModelError) as err:
        load_encoder("demo", preprocess=REFERENCE_LP_PREPROCESS)
    msg = str(err.value)
    assert "\n" not in msg and "demo takes 64-px input" in msg and "crops 224 px" in msg
    # The library names no flag; each door names its own way out.
    from panderm.cli.linear_probe import FLAGS as CLI_FLAGS
    from panderm.compat.linear_probe_door import FLAGS as DOOR_FLAGS

    assert "--" not in msg and err.value.param == "model_preprocess"
    assert err.value.render(CLI_FLAGS).endswith("use the model's own preprocessing (drop --reference-preprocess)")
    assert err.value.render(DOOR_FLAGS).endswith("use the model's own preprocessing (add --model_preprocess)")
    with pytest.raises(ModelError, match="takes 32-px input"):
        load_encoder(f"local-dir:{tiny_openclip}", preprocess=REFERENCE_LP_PREPROCESS)
    # Same size: no check needed; CNNs take any size.
    load_encoder("demo", preprocess=PreprocessSpec(size=64, interpolation="bilinear"))
    enc = load_encoder("torchvision:resnet18", allow_random_init=True, preprocess=PreprocessSpec(size=96))
    assert enc.preprocess_spec.size == 96
