"""CLIP models in the Hugging Face transformers layout (`hf-clip:ORG/NAME`), e.g. MONET.

MONET (`chanwkim/monet`) is published as a transformers CLIPModel; its own
preprocessing is Resize 224 bicubic → CenterCrop 224 → ImageNet mean/std
(docs/REFERENCE.md), not the CLIP constants.
"""
from __future__ import annotations

import torch

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .hub import cache_only_for, is_cached, not_cached_message


class HFCLIPEncoder(Encoder):
    family = "hf_clip"
    embed_is_features = False  # `embed` is the visual projection of `features`

    def __init__(self, model, tokenizer, model_id: str, spec: PreprocessSpec, context_length: int):
        self._hf_tokenizer = tokenizer
        self.context_length = context_length
        super().__init__(model_id, spec, self._tokenize_ids, random_init=False)
        self.model = model

    def _tokenize_ids(self, texts):
        # Ids are padded with the pad token and the attention mask is rebuilt from
        # it in `_text`: CLIP pools at the EOS position, so padding must not move it.
        enc = self._hf_tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt")
        return enc["input_ids"]

    @staticmethod
    def _tensor(out):
        # transformers 5 may return a ModelOutput where 4.x returned a tensor.
        if isinstance(out, torch.Tensor):
            return out
        for name in ("image_embeds", "text_embeds", "pooler_output"):
            value = getattr(out, name, None)
            if value is not None:
                return value
        raise ModelError("unexpected output type from transformers CLIPModel")

    def _image(self, x, kind):
        if kind == "embed":
            return self._tensor(self.model.get_image_features(pixel_values=x))
        out = self.model.vision_model(pixel_values=x)
        if kind == "features":
            return out.pooler_output
        return out.last_hidden_state

    def projection_head(self):
        return self.model.visual_projection

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def _text(self, ids):
        pad = self._hf_tokenizer.pad_token_id
        eos = self._hf_tokenizer.eos_token_id
        mask = (ids != pad).long()
        if pad == eos:
            # The first EOS is real text; only what follows it is padding.
            first_eos = (ids == eos).int().argmax(dim=1)
            mask = (torch.arange(ids.shape[1], device=ids.device)[None] <= first_eos[:, None]).long()
        return self._tensor(self.model.get_text_features(input_ids=ids, attention_mask=mask))


def load_hf_clip(repo: str, monet_preprocess: bool = False) -> HFCLIPEncoder:
    from transformers import AutoTokenizer, CLIPModel

    local = cache_only_for(repo)  # an unreachable hub: the local cache only, without transformers' retries
    try:
        model, info = CLIPModel.from_pretrained(repo, output_loading_info=True, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(repo, local_files_only=local)
    except OSError as exc:
        if local and not is_cached(repo):
            raise ModelError(not_cached_message(f"hf-clip:{repo}")) from exc
        raise ModelError(f"hf-clip:{repo}: {str(exc).splitlines()[0]}") from exc
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    unexpected = [k for k in info.get("unexpected_keys", []) if "position_ids" not in k]
    if missing or unexpected:
        raise ModelError(f"hf-clip:{repo}: checkpoint does not match CLIPModel (missing {missing[:5]}, unexpected {unexpected[:5]})")
    size = int(model.config.vision_config.image_size)
    if monet_preprocess:
        spec = PreprocessSpec(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
    else:
        spec = PreprocessSpec(size=size)
    ctx = int(model.config.text_config.max_position_embeddings)
    encoder = HFCLIPEncoder(model.eval(), tokenizer, f"hf-clip:{repo}", spec, ctx)
    # config.json (also in architecture(), as the CLIPModel's `config`) and the tokenizer, which no module records.
    encoder.model_config = {"config": model.config.to_dict(), "tokenizer": type(tokenizer).__name__,
                            "context_length": ctx}
    return encoder
