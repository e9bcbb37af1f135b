"""Model cards (issue 14 item 5): every alias of the registry, the loader table, `register_family`, and the card
answers against the per-model rules the tasks used before the cards (name substrings and family checks).

Each alias whose weights can be built tiny loads through its real loader path: the stand-in is written in the
hub's own layout under the alias's real repository id, in a hub cache private to this module (so the session
cache keeps saying "not cached" for those ids, which other tests check).
"""
import shutil
import types

import huggingface_hub.constants
import open_clip
import pytest
import timm
import torch
from torch import nn

from panderm.errors import ModelError
from panderm.models import (
    ALIASES, CARDS, KINDS, Encoder, LoadRequest, ModelCard, PreprocessSpec, add_card, card_for, format_cards,
    list_cards, load_encoder, register_family,
)
from panderm.models import cards, registry
from panderm.models.cae_vit import CAEVisionTower
from panderm.models.constants import IMAGENET_MEAN, IMAGENET_STD
from panderm.tasks.linear_probe.pipeline import reference_feature, reference_precision
from tiny_models import (
    build_hf_clip, build_tiny_biomedclip, build_tiny_bert, build_tiny_dinov3, build_tiny_openclip,
    build_tiny_panderm2, put_in_hf_cache,
)


# --- the rules as the tasks wrote them before the cards (the oracle) --------------------------------------------
def old_reference_feature(encoder):
    if encoder.family == "open_clip":
        if getattr(encoder, "layout", None):
            return "features", False
        if "biomedclip" in encoder.model_id.lower():
            return "embed", True
        return "embed", False
    if encoder.family == "hf_clip":
        return "embed", False
    return "features", False


def old_reference_precision(encoder):
    return "amp" if "monet" in encoder.model_id.lower() else "fp32"


def old_cae_tower(encoder):
    tower = getattr(encoder, "tower", None)
    if tower is None:
        visual = getattr(getattr(encoder, "model", None), "visual", None)
        tower = getattr(visual, "trunk", visual)
    return tower if isinstance(tower, CAEVisionTower) else None


def old_multimodal_pool(encoder):
    if "tokens" not in encoder.image_kinds or old_cae_tower(encoder) is None:
        return "features"
    return "mean" if encoder.family == "panderm_v1" else "cls"


def old_multimodal_drop_path(encoder):
    if old_cae_tower(encoder) is None or encoder.family == "panderm_v1":
        return 0.0
    return 0.1


def old_finetune_mean_pool(encoder):
    return encoder.family == "panderm_v1"


def old_monet_preprocess(target):
    return "monet" in target.lower()


def answers(card: ModelCard) -> tuple:
    return (card.family, card.cae_tower, card.preprocessing, card.probe_feature, card.probe_normalize,
            card.probe_precision, card.pooling, card.drop_path)


def assert_card_is_old_rules(card: ModelCard, encoder) -> None:
    assert card.reference_feature == old_reference_feature(encoder)
    assert card.probe_precision == old_reference_precision(encoder)
    assert card.pooling == old_multimodal_pool(encoder)
    assert card.drop_path == old_multimodal_drop_path(encoder)
    assert (card.pooling == "mean") == old_finetune_mean_pool(encoder)


# --- stand-ins under the aliases' real repository ids -----------------------------------------------------------
CAE_REPOS = ("redlessone/PanDerm2", "redlessone/DermFM-Zero", "redlessone/DermLIP_PanDerm-base-w-PubMed-256")
CLIP_REPOS = ("redlessone/DermLIP_ViT-B-16", "ryanyip7777/pmc_vit_l_14")
BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
DINOV3_REPOS = ("facebook/dinov3-vitl16-pretrain-lvd1689m", "facebook/dinov3-vitb16-pretrain-lvd1689m",
                "facebook/dinov3-vit7b16-pretrain-lvd1689m")


@pytest.fixture(scope="module")
def stand_in_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    cache = root / "hf-hub"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(cache))
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        put_in_hf_cache(build_tiny_bert(root / "bert"), "test/tiny-pubmedbert")
        cae = build_tiny_panderm2(root / "cae", text_repo="test/tiny-pubmedbert")
        clip = build_tiny_openclip(root / "clip")
        for repo in CAE_REPOS:
            put_in_hf_cache(cae, repo)
        for repo in CLIP_REPOS:
            put_in_hf_cache(clip, repo)
        put_in_hf_cache(build_tiny_biomedclip(root / "biomedclip", text_repo="test/tiny-pubmedbert"), BIOMEDCLIP_REPO)
        put_in_hf_cache(build_hf_clip(root / "monet"), "chanwkim/monet")
        dinov3 = build_tiny_dinov3(root / "dinov3")
        for repo in DINOV3_REPOS:
            put_in_hf_cache(dinov3, repo)
        yield cache
    shutil.rmtree(root, ignore_errors=True)


# Aliases whose real weights cannot be built tiny: the architecture comes from the name itself (timm names, open_clip
# built-in configs with the `openai` tag), so a stand-in would be the full-size model. For these the card is checked
# to resolve to the loader it names, the name/tag to exist in that library, and its answers to equal the old rules
# applied to an encoder of that family and id.
CARD_ONLY = {"CLIP-L14", "CLIP-B16", "open_clip_vit_large_14", "open_clip_vit_base_16", "DINOv2-L", "DINOv2-B",
             "dinov2", "vit-base-16"}


def _load_kwargs(card: ModelCard, tiny_panderm_v1) -> dict:
    if card.needs_checkpoint:
        return {"checkpoint": str(tiny_panderm_v1)}
    if card.family == "torchvision":
        return {"allow_random_init": True}  # ResNet-50 random init: small enough, no download
    return {}


def test_every_alias_has_a_card_and_the_card_table_is_the_alias_table():
    assert [a for a in CARDS if a != "demo"] == list(ALIASES)
    for alias, card in CARDS.items():
        assert card.alias == alias
        assert registry.resolve_alias(alias).model_id == card.model_id
        assert registry.resolve_alias(alias).pretrained == card.pretrained
        assert registry.loader_key(card.model_id) == card.loader, alias
        assert card_for(alias) is card and card_for(f" {alias} ") is card
        assert card_for(alias.upper()).model_id == card.model_id
        assert answers(card_for(alias.upper())) == answers(card)
        assert card.preprocessing in cards.PREPROCESSING and card.pooling in cards.POOLINGS
    # Cards loading the same model agree on every answer (card_for(encoder) may return any of them).
    by_id = {}
    for card in CARDS.values():
        assert answers(by_id.setdefault(card.model_id, card)) == answers(card), card.alias


@pytest.mark.parametrize("alias", [a for a in CARDS if a not in CARD_ONLY])
def test_alias_loads_through_its_loader_and_its_card_gives_the_old_answers(alias, stand_in_hub, tiny_panderm_v1):
    card = CARDS[alias]
    enc = load_encoder(alias, **_load_kwargs(card, tiny_panderm_v1))
    assert enc.family == card.family
    assert (old_cae_tower(enc) is not None) == card.cae_tower
    assert answers(card_for(enc)) == answers(card)
    assert_card_is_old_rules(card_for(enc), enc)
    assert reference_feature(enc) == card.reference_feature and reference_precision(enc) == card.probe_precision
    assert old_monet_preprocess(card.model_id) == (card.preprocessing == "imagenet")
    if card.preprocessing == "imagenet":
        assert (enc.preprocess_spec.mean, enc.preprocess_spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    # embed_is_features is what features extraction reads (it used to read an `_identity` function's name): the
    # projection head is then the identity, else a real projection (or None where embed is no function of features)
    from panderm.models.base import _same

    assert (enc.projection_head() is _same) == enc.embed_is_features
    if enc.embed_is_features:
        tower = old_cae_tower(enc)  # the tiny PanDerm v1 tower is 32 px under the family's 224-px transform
        size = tower.cfg.image_size if tower is not None else enc.preprocess_spec.size
        size = 64 if enc.family == "torchvision" else size  # a CNN takes any size: a small one keeps this quick
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            assert torch.equal(enc.encode_image(x, "embed"), enc.encode_image(x, "features"))


@pytest.mark.parametrize("alias", sorted(CARD_ONLY))
def test_alias_without_a_tiny_stand_in_resolves_to_the_loader_it_names(alias):
    """timm names and open_clip configs fix the architecture, so these are checked without loading weights."""
    card = CARDS[alias]
    key = registry.loader_key(card.model_id)
    assert key == card.loader
    if key == cards.OPEN_CLIP_CONFIG:
        assert open_clip.get_model_config(card.model_id) is not None
        assert card.pretrained in open_clip.list_pretrained_tags_by_model(card.model_id)
        model_id = card.model_id  # what the open_clip loader names the encoder
    else:
        assert registry._FAMILIES[key] is registry._load_timm
        name = card.model_id[len(key):].removesuffix("+head")
        assert timm.list_pretrained(name) == [name]
        model_id = f"timm:{name}"
    stub = types.SimpleNamespace(family=card.family, model_id=model_id, image_kinds=KINDS, layout=None)
    assert_card_is_old_rules(card, stub)
    assert answers(cards._derived(model_id, stub)) == answers(card)


def test_ids_without_a_card_keep_the_name_rules(stand_in_hub, tmp_path):
    # Session fixtures that write to the session hub cache are not used here: this module's cache is in place.
    put_in_hf_cache(build_hf_clip(tmp_path / "monet-copy"), "someone/monet-copy")
    monet = load_encoder("hf-clip:someone/monet-copy")
    assert card_for("hf-clip:someone/monet-copy").preprocessing == "imagenet"
    assert monet.preprocess_spec.mean == IMAGENET_MEAN
    assert card_for(monet).alias == "" and card_for(monet).probe_precision == "amp"
    assert_card_is_old_rules(card_for(monet), monet)
    clip = load_encoder(f"local-dir:{build_tiny_openclip(tmp_path / 'clip')}")
    assert card_for(clip).reference_feature == ("embed", False) and card_for(clip).probe_precision == "fp32"
    assert_card_is_old_rules(card_for(clip), clip)
    assert card_for("open_clip_hf-hub:redlessone/PanDerm2") is CARDS["PanDerm2"]


# --- a family added from outside: the "add a model family" recipe of docs/ARCHITECTURE.md ------------------------
class ToyEncoder(Encoder):
    """A vision-only toy family: a mean colour through one linear layer."""

    family = "toy"
    image_kinds = ("embed", "features")
    embed_is_features = True

    def __init__(self, name: str, width: int):
        super().__init__(f"toy:{name}", PreprocessSpec(size=16))
        self.proj = nn.Linear(3, width)

    def _image(self, x, kind):
        return self.proj(x.mean(dim=(2, 3)))


@pytest.fixture
def private_tables(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(cards, "CARDS", dict(cards.CARDS))
    monkeypatch.setattr(cards, "_BY_ALIAS", dict(cards._BY_ALIAS))
    monkeypatch.setattr(cards, "_BY_MODEL_ID", dict(cards._BY_MODEL_ID))


def test_register_family_makes_load_encoder_load_a_toy_family(private_tables):
    seen = []

    def load_toy(req: LoadRequest) -> ToyEncoder:
        seen.append(req)
        if req.name not in ("small", "large"):
            raise ModelError(f"{req.original}: no such toy")
        return ToyEncoder(req.name, {"small": 4, "large": 8}[req.name])

    register_family("toy:", load_toy)
    with pytest.raises(ModelError, match="already registered"):
        register_family("toy:", load_toy)
    enc = load_encoder("toy:small")
    assert isinstance(enc, ToyEncoder) and not enc.training and enc.model_id == "toy:small"
    assert seen[-1].name == "small" and seen[-1].target == "toy:small" and seen[-1].checkpoint is None
    assert enc.feature_dim == enc.embed_dim == 4
    assert registry.loader_key("toy:large") == "toy:"
    with pytest.raises(ModelError, match="no such toy"):
        load_encoder("toy:medium")
    # Without a card the family gets the derived answers: its pooled `features`, float32.
    assert card_for(enc).family == "toy" and card_for(enc).reference_feature == ("features", False)
    assert reference_feature(enc) == ("features", False) and reference_precision(enc) == "fp32"

    add_card(ModelCard("Toy-L", "toy:large", family="toy", loader="toy:", probe_feature="features",
                       note="toy family for the tests"))
    with pytest.raises(ModelError, match="already has a card"):
        add_card(ModelCard("toy-l", "toy:large"))
    big = load_encoder("Toy-L")
    assert big.feature_dim == 8 and card_for("toy-l").alias == "Toy-L"
    assert card_for(big) is cards.CARDS["Toy-L"]
    assert [c.alias for c in list_cards("toy family")] == ["Toy-L"]
    assert "Toy-L" in format_cards()

    # A whole-id key (no ':'): only that id, and the longest key wins over a prefix.
    register_family("toy:tiny", lambda req: ToyEncoder("tiny", 2))
    assert registry.loader_key("toy:tiny") == "toy:tiny" and load_encoder("toy:tiny").feature_dim == 2
    registry.unregister_family("toy:")
    with pytest.raises(ModelError, match="unknown model id"):
        load_encoder("toy:small")


def test_list_and_format_cards():
    assert list_cards() == list(CARDS.values())
    assert [c.alias for c in list_cards("DINOv3")] == ["DINOv3-L16", "DINOv3-B16", "DINOv3-7B"]
    assert list_cards("no-such-model") == []
    lines = format_cards().splitlines()
    assert lines[0].split() == ["alias", "loads", "family", "probe", "pooling", "drop", "path", "preprocessing",
                                "notes"]
    assert [line.split()[0] for line in lines[2:]] == list(CARDS)
    biomed = next(line for line in lines if line.startswith("BiomedCLIP "))
    assert "embed +L2 fp32" in biomed
    monet = next(line for line in lines if line.startswith("MONET "))
    assert "embed amp" in monet and "imagenet" in monet
    v1 = next(line for line in lines if line.startswith("PanDerm-L "))
    assert "mean" in v1 and "panderm_v1 (CAE)" in v1
    assert format_cards([]) == "(no model cards)"
