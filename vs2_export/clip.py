"""Load open_clip models and split the image tower where VS2 acts (docs/method.md section 1).

    pixels -> [trunk: patch embed, blocks] -> h = CLS of the last block -> [head: ln_post, proj]

Sources: an open_clip hub name + pretrained tag (downloads as open_clip does), a local checkpoint
(safetensors, or torch.load with weights_only=True: never a pickle), random weights ('none'), or
the bundled demo model by name.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from safetensors.torch import load_file
from torch import nn

from .config import DEMO_MODEL, ModelSpec
from .errors import Vs2Error
from .runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class LoadedClip:
    """An open_clip CLIP in eval mode with what the rest of the pipeline needs to know about it."""

    model: nn.Module
    """open_clip.model.CLIP (eval, fp32)."""
    preprocess: PreprocessSpec
    """Its eval preprocessing, as data."""
    spec: ModelSpec
    """Where it came from."""
    tokenizer: Callable[[list[str]], torch.Tensor]
    """Text -> token ids [N, context_length]."""
    default_classes: tuple[str, ...] = ()
    """Class names that ship with the model (the demo model only)."""
    weights_sha256: str = ""
    """weights_sha256(model): which weights these are, whatever the spec says. It travels from
    extract (meta.json) through train (cfg.json), calibrate (steering.json) and export (the
    manifest), so an export with other weights of the same architecture is refused."""

    @property
    def width(self) -> int:
        """d: the CLS residual width the SAE reads."""
        return self.model.visual.transformer.width

    @property
    def embed_dim(self) -> int:
        """E: the embedding width after the projection."""
        return self.model.visual.output_dim


def load_clip(spec: ModelSpec) -> LoadedClip:
    """Load the CLIP named by `spec`, in eval mode on the CPU (callers move it)."""
    if spec.name == DEMO_MODEL:
        return _load_demo(spec)
    model = _create(spec.name, spec.pretrained)
    preprocess = _preprocess_of(model, spec)
    try:
        tokenizer = open_clip.get_tokenizer(spec.name)
    except Exception as exc:  # noqa: BLE001 - hub tokenizers fail offline in many ways
        raise Vs2Error(f"model {spec.name}: could not load its tokenizer ({exc})") from None
    return LoadedClip(model.eval(), preprocess, spec, tokenizer,
                      weights_sha256=weights_sha256(model))


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over every state_dict entry in name order: name, dtype, shape, then the raw bytes.
    The same weights give the same checksum wherever they were loaded from (hub, checkpoint,
    seeded random init); ViT-B-32 (600 MB) takes about a second."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


def release_text_tower(clip: LoadedClip) -> None:
    """Free the text tower's weights once the class embeddings (and text.onnx) are made: nothing
    after that runs it, and it is 1.4 GB of ViT-H-14's 3.9 GB (bigG: 2.8 of 10.2). The visual
    tower (encode_image) stays whole; weights_sha256 was computed at load and is kept."""
    for name, tensor in [*clip.model.named_parameters(), *clip.model.named_buffers()]:
        if not name.startswith("visual."):
            tensor.data = torch.empty(0, dtype=tensor.dtype)
    gc.collect()


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """PyTorch's fused MHA fast path does not export (immich #12496): off while exporting. Here,
    below every exporter (image graph, text.onnx, bench baselines), so none imports another."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def describe(name: str, source: str, weights: str | None = None) -> str:
    """What the torch-side commands say on their first line: which model, which weights."""
    source = {"none": "RANDOM WEIGHTS (--pretrained none)", "demo": "the bundled demo model"}.get(
        source, f"pretrained {source}")
    shown = f", weights sha256 {weights[:12]}" if weights else ""
    return f"model {name}, {source}{shown}"


def _create(name: str, pretrained: str | None) -> nn.Module:
    if name not in open_clip.list_models():
        raise Vs2Error(f"model: expected an open_clip architecture (e.g. ViT-B-32), got {name!r}")
    if pretrained == "none":
        log.warning("model %s: RANDOM WEIGHTS (--pretrained none); fine for speed and parity "
                    "checks, meaningless for accuracy", name)
        # Seeded, so export and verify (two loads) see the same random model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return _build(name, None)
    path = Path(pretrained)
    if path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.exists():
        model = _build(name, None)
        _load_state(model, read_state_dict(path), f"checkpoint {path}")
        return model
    return _build(name, pretrained)


def _build(name: str, pretrained: str | None) -> nn.Module:
    """open_clip.create_model, its failures as one line: a download or tag error, or a tower
    that needs a package this install lacks (HF text towers need `transformers`)."""
    try:
        return open_clip.create_model(name, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001 - download, tag and import errors come in many types
        what = "could not build it" if pretrained is None else f"could not load pretrained={pretrained!r}"
        raise Vs2Error(f"model {name}: {what} ({exc})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors, or torch.load(weights_only=True); a pickled object is refused."""
    if not path.is_file():
        raise Vs2Error(f"checkpoint: expected a file at {path}, found none")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise Vs2Error(f"checkpoint {path}: not a valid safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError for pickles, others for junk
        raise Vs2Error(f"checkpoint {path}: refused; only safetensors or plain tensor state "
                       f"dicts load (weights_only=True): {str(exc).splitlines()[0]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Vs2Error(f"checkpoint {path}: expected a dict of tensors, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise Vs2Error(f"{what}: weights do not fit the architecture ({str(exc)[:300]})") from None


def _preprocess_of(model: nn.Module, spec: ModelSpec) -> PreprocessSpec:
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise Vs2Error(f"model {spec.name}: expected a square input size, got {tuple(size)}")
        size = size[0]
    return PreprocessSpec(
        image_size=int(size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"), fill_color=int(cfg.get("fill_color", 0)))


def _load_demo(spec: ModelSpec) -> LoadedClip:
    """The bundled demo CLIP (vs2_export/demo, trained by vs2_export.demo.train_clip)."""
    folder = resources.files("vs2_export.demo")
    cfg = json.loads(folder.joinpath("vs2-demo.json").read_text())
    mc = cfg["model_cfg"]
    model = open_clip.model.CLIP(embed_dim=mc["embed_dim"], vision_cfg=mc["vision_cfg"],
                                 text_cfg=mc["text_cfg"], quick_gelu=mc.get("quick_gelu", False))
    with resources.as_file(folder.joinpath("vs2-demo.safetensors")) as weights:
        _load_state(model, load_file(str(weights)), "demo model")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=mc["text_cfg"]["context_length"])
    return LoadedClip(model.eval(), PreprocessSpec.from_dict(cfg["preprocess"]), spec, tokenizer,
                      tuple(cfg.get("classes", ())), weights_sha256(model))


def check_splittable(visual: nn.Module) -> VisionTransformer:
    """The towers VS2 can act in: an open_clip ViT that pools the CLS token (docs/method.md section 1)."""
    if not isinstance(visual, VisionTransformer):
        raise Vs2Error(f"image tower: expected an open_clip VisionTransformer, got "
                       f"{type(visual).__name__}; VS2 steers the CLS token of a ViT")
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise Vs2Error(f"image tower: expected CLS-token pooling (pool_type 'tok', no attentional "
                       f"pool), got pool_type={visual.pool_type!r}, "
                       f"attn_pool={type(visual.attn_pool).__name__}")
    return visual


class ClipTrunk(nn.Module):
    """pixels [B, 3, S, S] -> h [B, d]: the CLS token at the output of the last block, pre ln_post.

    cls_only: the last block computes only the CLS query (keys and values still see every token).
    VS2 and the head read nothing but that token (docs/method.md section 1), so the other P outputs of
    the last block are dead work: about 6.6% of ViT-B-32's FLOPs (issue 4). Same math; towers
    whose last block is not a plain open_clip self-attention block take the full path.
    """

    def __init__(self, visual: nn.Module, cls_only: bool = True):
        super().__init__()
        self.visual = check_splittable(visual)
        self.cls_only = cls_only and _cls_query_supported(visual.transformer)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.visual._embeds(pixel_values)                    # [B, 1 + P, d]
        if not self.cls_only:
            return self.visual.transformer(x)[:, 0]
        blocks = self.visual.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        return cls_query_block(blocks[-1], x)


def _cls_query_supported(transformer: nn.Module) -> bool:
    """Batch-first open_clip Transformer whose last block is plain self-attention (nn.MHA)."""
    if not getattr(transformer, "batch_first", False) or not len(transformer.resblocks):
        return False
    last = transformer.resblocks[-1]
    return (type(last) is ResidualAttentionBlock and isinstance(last.attn, nn.MultiheadAttention)
            and not hasattr(last, "ln_1_kv"))


def cls_query_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ResidualAttentionBlock for the CLS query only: x [B, T, d] -> CLS out [B, d].

    Same formula as the block (pre-LN attention + MLP residuals), with query = token 0.
    """
    y = block.ln_1(x)
    attn = block.attn(y[:, :1], y, y, need_weights=False)[0]   # [B, 1, d]
    cls = x[:, :1] + block.ls_1(attn)
    cls = cls + block.ls_2(block.mlp(block.ln_2(cls)))
    return cls[:, 0]


class ClipHead(nn.Module):
    """h [B, d] -> embedding [B, E], not normalised: ln_post then the projection.

    ln_post is per-token, so applying it to the CLS token alone equals open_clip's order
    (ln_post over all tokens, then pool) for both values of final_ln_after_pool.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        visual = check_splittable(visual)
        self.ln_post = visual.ln_post
        self.proj = visual.proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.ln_post(h)
        return x @ self.proj if self.proj is not None else x
