"""Tiny models saved exactly as their hubs store them, so tests run the real loading code offline."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from panderm.models.demo import write_openclip_dir

WORDS = (
    "this is a an skin image of the shown in depicted lesion cancer type condition disorder melanoma nevus "
    "basal cell carcinoma actinic keratosis seborrheic squamous benign malignant dermatofibroma vascular "
    "common atypical dermoscopic asymmetry pigment network dots globules streaks absent present typical colors "
    "brown dark light blue white red black gray fully symmetric regression areas veil whitish axis one in"
).split()


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Random values everywhere (LayerScale and LayerNorm included) so no parameter is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("pos_embed"):
                continue
            base = 1.0 if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "LayerNorm.weight")) else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))


def put_in_hf_cache(folder: Path, repo_id: str) -> Path:
    """Copy `folder` into $HF_HUB_CACHE the way huggingface_hub lays out a download."""
    cache = Path(os.environ["HF_HUB_CACHE"])
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo_dir / "snapshots" / commit
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_openclip(folder: Path) -> Path:
    return write_openclip_dir(folder, TINY_CLIP_CFG, preprocess_cfg={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
                              seed=1, random_init_flag=False)


def build_tiny_bert(folder: Path) -> Path:
    """A BERT config + WordPiece vocab + tokenizer config: what AutoConfig/AutoTokenizer read."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", ";", ":", "/", "-", "(", ")"]
    vocab += sorted(set(WORDS))
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64, pad_token_id=0)
    cfg.save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}))
    return folder


def build_tiny_panderm2(folder: Path, text_repo: str, seed: int = 3) -> Path:
    """A reduced PanDerm-2: CAE tower (width 64, depth 2, patch 8, 32 px) with the reference key names."""
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file

    from panderm.models.cae_vit import CAEConfig, CAEVisionTower

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": 32,
        # As in the fork's PanDerm-large-v2 config: a placeholder ViT-B and a pretrain_path key.
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16, "pretrain_path": None,
                       "head_width": 32},
        "text_cfg": {"context_length": 32, "hf_model_name": text_repo, "hf_tokenizer_name": text_repo,
                     "hf_pooler_type": "mean_pooler"},
    }
    text_cfg = {k: v for k, v in model_cfg["text_cfg"].items()}
    text_cfg["hf_model_pretrained"] = False
    model = CustomTextCLIP(embed_dim=32, vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                                     "head_width": 32}, text_cfg=text_cfg)
    model.visual = CAEVisionTower(CAEConfig(width=64, depth=2, heads=2, patch_size=8, image_size=32, mlp_hidden=256,
                                            head_dim_out=32))
    randomize_(model, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}, indent=2))
    return folder


def build_tiny_panderm_v1(path: Path, seed: int = 5) -> Path:
    """A PanDerm-v1-style .pth: bare state dict, `encoder.` keys plus decoder/teacher keys to be dropped."""
    from panderm.models.cae_vit import CAEConfig, CAEVisionTower

    tower = CAEVisionTower(CAEConfig(width=64, depth=2, heads=1, patch_size=8, image_size=32, mlp_hidden=256,
                                     head_dim_out=None), pooling="cls")
    randomize_(tower, seed)
    sd = {f"encoder.{k}": v for k, v in tower.state_dict().items()}
    sd["decoder.blocks.0.norm1.weight"] = torch.ones(64)
    sd["teacher.cls_token"] = torch.zeros(1, 1, 64)
    sd["regressor.blocks.0.attn.q_bias"] = torch.zeros(64)
    torch.save(sd, path)
    return path


def build_hf_clip(folder: Path) -> Path:
    """A transformers CLIPModel (the MONET hub layout) with a tiny CLIP BPE tokenizer from open_clip's vocab."""
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    cfg = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(7)
    model = CLIPModel(cfg)
    model.save_pretrained(folder)
    _write_clip_tokenizer(folder)
    return folder


def _write_clip_tokenizer(folder: Path) -> None:
    """CLIP's byte-level BPE files, produced from open_clip's bundled merges."""
    import gzip

    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    tok = SimpleTokenizer()
    vocab = {{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(k, k): v
             for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))


def build_tiny_biomedclip(folder: Path, text_repo: str, seed: int = 9) -> Path:
    """BiomedCLIP's layout: a timm ViT tower (pool '', linear proj) + an HF BERT text tower with CLS pooling."""
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": text_repo, "hf_tokenizer_name": text_repo, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32},
    }
    text_cfg = {**model_cfg["text_cfg"], "hf_model_pretrained": False}
    torch.manual_seed(seed)
    model = CustomTextCLIP(embed_dim=32, vision_cfg=model_cfg["vision_cfg"], text_cfg=text_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return folder


# What facebook/dinov3-* repositories publish as preprocessor_config.json (square resize, bilinear, ImageNet).
DINOV3_PROCESSOR = {
    "image_processor_type": "DINOv3ViTImageProcessorFast", "do_resize": True, "size": {"height": 32, "width": 32},
    "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}


def build_tiny_dinov3(folder: Path, seed: int = 11) -> Path:
    """A transformers DINOv3ViTModel (register tokens, RoPE, LayerScale) saved as the hub stores it."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    folder.mkdir(parents=True, exist_ok=True)
    cfg = DINOv3ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8, num_register_tokens=2)
    model = DINOv3ViTModel(cfg)
    randomize_(model, seed)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV3_PROCESSOR, indent=2))
    return folder
