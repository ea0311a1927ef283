"""The text tower as its own graph, text.onnx, so apps name classes at run time without torch.

    input_ids int64 [N, L] -> open_clip encode_text -> L2 normalise -> text_embedding float32 [N, E]
    L = the tokenizer's context length (16 for the demo model, 77 for CLIP ViTs)

Written with the export's BPE vocab (tokenizer/bpe_simple_vocab_16e6.txt.gz) and checked against
open_clip's encode_text before it is kept (TEXT_TOLERANCE). runtime/classes.py and vs2.js turn
its embeddings into class_embeddings the way zeroshot.class_embeddings does.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import atomic_path
from .clip import LoadedClip, no_mha_fastpath
from .errors import Vs2Error
from .onnx_files import onnx_mb, write_onnx
from .runtime import contract
from .runtime.providers import create_session
from .runtime.tokenizer import TokenizerError, TokenizerSpec, open_clip_vocab, spec_of_open_clip

log = logging.getLogger(__name__)
TEXT_TOLERANCE = 1e-5
"""Max abs difference of normalised text embeddings, text.onnx vs open_clip (measured: 7e-8 on
the demo model, 1.6e-7 on a random ViT-B-32)."""
TEXT_OPSET = 18
"""text.onnx's opset, whatever model.onnx uses: 18 is what onnxruntime-web and -node 1.20+ run,
and the TorchScript exporter supports it."""
CHECK_PROMPTS = ("a photo of a cat.", "a drawing of a big red circle.", "x",
                 "the quick brown fox jumps over the lazy dog " * 4)
"""Short, one-token and truncated prompts: the EOT pooling must pick the right token in each."""


class TextTower(nn.Module):
    """input_ids [N, L] -> normalised text embeddings [N, E] (open_clip CLIP.encode_text)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(input_ids), dim=-1)


def text_spec(clip: LoadedClip) -> TokenizerSpec | None:
    """The torch-free tokenizer of this model, or None (with a warning) where there is none:
    only open_clip's CLIP BPE tokenizer is ported, so other models keep their export-time
    classes only."""
    try:
        return spec_of_open_clip(clip.tokenizer)
    except TokenizerError as exc:
        log.warning("no text graph: %s; classes stay as exported (no run-time class names)", exc)
        return None


def write_text_tower(clip: LoadedClip, out: Path) -> None:
    """out/text.onnx (+ text.onnx.data when its weights pass 2 GB: ViT-bigG-14's 2.8 GB tower)
    and out/tokenizer/...vocab, checked against open_clip (Vs2Error if not) before either is
    kept."""
    tower = TextTower(clip.model).eval()
    ids = clip.tokenizer(list(CHECK_PROMPTS))
    final = write_onnx(_traced(tower, ids), out / contract.TEXT_MODEL_FILE,
                       check=lambda tmp: _check_text_graph(tmp, tower, ids))
    with atomic_path(out / contract.VOCAB_FILE) as tmp:
        shutil.copyfile(open_clip_vocab(), tmp)
    log.info("exported %s (%.1f MB)", final, onnx_mb(final))


def _traced(tower: TextTower, ids: torch.Tensor) -> onnx.ModelProto:
    """The TorchScript exporter's graph of `tower`, weights in memory. It writes a model over
    2 GB as one file per tensor beside the graph, hence a scratch folder, read back whole and
    saved by onnx_files.write_onnx (one sidecar, the layout the runtime's guard accepts)."""
    with tempfile.TemporaryDirectory(prefix="vs2-text-") as scratch:
        raw = Path(scratch) / contract.TEXT_MODEL_FILE
        # The TorchScript exporter: 0.6-2 s where dynamo took 20 s on the demo tower, and
        # parity-equal (both measured); the text tower has nothing it cannot trace.
        with no_mha_fastpath(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(tower, (ids[:2],), str(raw), dynamo=False, opset_version=TEXT_OPSET,
                              input_names=[contract.INPUT_IDS],
                              output_names=[contract.TEXT_EMBEDDING],
                              dynamic_axes={contract.INPUT_IDS: {0: "n"},
                                            contract.TEXT_EMBEDDING: {0: "n"}})
        return onnx.load(str(raw))


def _check_text_graph(path: Path, tower: TextTower, ids: torch.Tensor) -> None:
    session = create_session(Path(path), precision="fp32")
    got = session.run([contract.TEXT_EMBEDDING], {contract.INPUT_IDS: ids.numpy()})[0]
    with torch.no_grad():
        want = tower(ids).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= TEXT_TOLERANCE:
        raise Vs2Error(f"export: text.onnx differs from open_clip's text tower by {diff:.3g} "
                       f"(max abs, limit {TEXT_TOLERANCE})")
    log.info("text.onnx vs open_clip encode_text: max abs %.2g", diff)
