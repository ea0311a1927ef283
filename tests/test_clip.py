"""Loading and splitting open_clip towers (docs/method.md section 1)."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vs2_export.clip import ClipHead, ClipTrunk, load_clip, read_state_dict
from vs2_export.config import ModelSpec
from vs2_export.errors import Vs2Error


def split_matches_open_clip(name: str) -> None:
    clip = load_clip(ModelSpec(name, "none"))
    size = clip.preprocess.image_size
    x = torch.randn(2, 3, size, size)
    head = ClipHead(clip.model.visual)
    with torch.no_grad():
        expected = clip.model.encode_image(x)
        h = ClipTrunk(clip.model.visual, cls_only=False)(x)
        h_cls = ClipTrunk(clip.model.visual, cls_only=True)(x)
    assert h.shape == h_cls.shape == (2, clip.width)
    torch.testing.assert_close(head(h), expected, rtol=0, atol=0)  # the same ops: bit-exact
    # The CLS-only last block is the same math in another order: float rounding only.
    torch.testing.assert_close(head(h_cls), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.full
@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_trunk_then_head_is_open_clips_image_tower(name):
    split_matches_open_clip(name)


def test_random_weights_are_the_same_on_every_load():
    a = load_clip(ModelSpec("ViT-B-32", "none")).model.visual.conv1.weight
    b = load_clip(ModelSpec("ViT-B-32", "none")).model.visual.conv1.weight
    assert torch.equal(a, b)


def test_a_tower_without_a_cls_token_is_refused():
    clip = load_clip(ModelSpec("RN50", "none"))
    with pytest.raises(Vs2Error, match="VisionTransformer"):
        ClipTrunk(clip.model.visual)


def test_unknown_architecture_and_missing_pretrained_are_clear_errors():
    with pytest.raises(Vs2Error, match="open_clip architecture"):
        load_clip(ModelSpec("ViT-Q-99", "none"))
    with pytest.raises(Vs2Error, match="--pretrained"):
        ModelSpec("ViT-B-32", None)


def test_checkpoints_load_only_as_tensors(tmp_path):
    clip = load_clip(ModelSpec("ViT-B-32", "none"))
    good = tmp_path / "good.pt"
    torch.save(clip.model.state_dict(), good)
    loaded = load_clip(ModelSpec("ViT-B-32", str(good)))
    assert torch.equal(loaded.model.visual.proj, clip.model.visual.proj)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": clip.model.state_dict(), "opt": object()}, pickled)
    with pytest.raises(Vs2Error, match="weights_only"):
        read_state_dict(pickled)
    with pytest.raises(Vs2Error, match="found none"):
        read_state_dict(tmp_path / "missing.safetensors")


def _shrunk(create):
    """open_clip.create_model with every open_clip-native tower cut to 2 narrow layers: each
    architecture's structure (pooling, layer scale, QuickGELU, image size, ln_pre, text pooling)
    at a size a test can build in a fraction of a second."""
    def build(name, pretrained=None, **kwargs):
        cfg = open_clip.get_model_config(name)
        vision, text = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
        if vision.get("timm_model_name"):  # SigLIP, EVA, ...: the smallest timm ViT
            vision.update(timm_model_name="vit_tiny_patch16_224", image_size=224)
        else:
            vision.update(layers=2 if isinstance(vision["layers"], int) else [1, 1, 1, 1],
                          width=64, head_width=32)
        if not text.get("hf_model_name"):
            text.update(layers=1, width=64, heads=2)
        return create(name, pretrained, vision_cfg=vision, text_cfg=text, embed_dim=32, **kwargs)
    return build


def test_every_open_clip_architecture_loads_and_splits_or_is_refused_in_one_line(monkeypatch):
    """Issue 13: no internal error for any architecture open_clip lists. Each one (shrunk) either
    loads and splits into trunk + head equal to open_clip's encode_image, or is refused with a
    Vs2Error (a tower VS2 cannot steer, a package an HF or timm tower needs)."""
    monkeypatch.setattr(open_clip, "create_model", _shrunk(open_clip.create_model))
    outcomes = {}
    for name in open_clip.list_models():
        try:
            clip = load_clip(ModelSpec(name, "none"))
            trunk, head = ClipTrunk(clip.model.visual), ClipHead(clip.model.visual)
        except Vs2Error as exc:
            outcomes[name] = str(exc).splitlines()[0]
            continue
        size = clip.preprocess.image_size
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():  # directions: CoCa's encode_image normalises, CLIP's does not
            torch.testing.assert_close(F.normalize(head(trunk(x)), dim=-1),
                                       F.normalize(clip.model.encode_image(x), dim=-1),
                                       rtol=1e-4, atol=1e-5, msg=name)
        outcomes[name] = "ok"
    steerable = [n for n, o in outcomes.items() if o == "ok"]
    assert {"ViT-B-32", "ViT-L-14-336-quickgelu", "ViT-M-16-alt", "ViT-bigG-14"} <= set(steerable)
    assert not {n for n in steerable if "CLIPA" in n or n.startswith("RN")}
