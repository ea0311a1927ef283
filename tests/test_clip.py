"""Loading and splitting open_clip towers (docs/method.md section 1)."""

import pytest
import torch

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
