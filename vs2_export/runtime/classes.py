"""Class embeddings for the image graph's class_embeddings input [C, E], torch-free.

    default:   class_embeddings.f32 in the export folder (little-endian float32 [C, E]), checked
               against the manifest's shape and SHA-256 before use
    run time:  names x templates -> tokenizer (runtime.tokenizer) -> text.onnx -> per class the
               mean of the normalised prompt embeddings, renormalised (what the exporter's
               zeroshot.class_embeddings computes with open_clip in torch)

vs2.js does the same (loadModel, setClasses); docs/js.md states the contract.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import contract
from .files import check_regular, open_regular
from .manifest import TEMPLATE_RULE, Manifest, is_template, repeated
from .providers import ModelError, create_session
from .tokenizer import ClipTokenizer

TEXT_BATCH = 256
"""Prompts per text-graph run: bounds memory for long class lists."""


def read_class_embeddings(folder: Path, manifest: Manifest) -> np.ndarray | None:
    """The default class_embeddings [C, E] float32 of an export, or None without classes.

    A file whose size or SHA-256 differs from the manifest is refused (ModelError): logits from a
    swapped matrix would look plausible and be wrong."""
    info = manifest.class_embeddings
    if info is None:
        return None
    path = Path(folder) / info.file
    rows, cols = info.shape
    want = rows * cols * 4
    with open_regular(path, "the default class embeddings (written by vs2 export)",
                      error=ModelError) as (fh, size):
        raw = fh.read(want + 1) if size == want else b""  # sized first: no sparse 6 GB read
    if size != want or len(raw) != want:
        raise ModelError(f"{path}: expected {rows} x {cols} float32 ({want} bytes, "
                         f"from the manifest), got {size} bytes")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != info.sha256:
        raise ModelError(f"{path}: SHA-256 {digest[:12]} differs from the manifest's "
                         f"{info.sha256[:12]}: the file was changed after export")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(rows, cols)


def encode_class_embeddings(matrix: np.ndarray) -> bytes:
    """[C, E] -> the bytes of CLASS_EMBEDDINGS_FILE: little-endian float32, row-major."""
    return np.ascontiguousarray(matrix, dtype="<f4").tobytes()


def class_means(text_embeddings: np.ndarray, n_classes: int, n_templates: int) -> np.ndarray:
    """[C * T, E] prompt embeddings (class-major) -> [C, E]: each row normalised, averaged over the
    templates, renormalised (float64 sums, float32 result)."""
    emb = text_embeddings.astype(np.float64)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    mean = emb.reshape(n_classes, n_templates, -1).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=-1, keepdims=True)).astype(np.float32)


def prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major prompts: for each name, every template filled with it (Python str.format)."""
    return [t.format(name) for name in names for t in templates]


def check_names(names: object, templates: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Class names and templates as the manifest rules them: non-empty, unique names; templates
    that str.format(name) fills once (manifest.is_template). Raises ValueError naming the offender."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"classes: expected a non-empty list of names, got {names!r}")
    if isinstance(templates, str) or not isinstance(templates, Sequence) or not templates:
        raise ValueError(f"templates: expected a non-empty list of templates, got {templates!r}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"classes[{i}]: expected a non-empty string, got {name!r}")
    dupes = repeated(names)
    if dupes:
        raise ValueError(f"classes: expected unique names, got duplicates {dupes}")
    for i, template in enumerate(templates):
        if not is_template(template):
            raise ValueError(f"templates[{i}]: expected {TEMPLATE_RULE}, got {template!r}")
    return tuple(names), tuple(templates)


class TextEncoder:
    """text.onnx + the export's tokenizer: class names -> class embeddings, without torch."""

    def __init__(self, folder: Path, manifest: Manifest, *, provider: str = "cpu",
                 threads: int | None = None):
        if manifest.text is None:
            raise ModelError(f"{folder}: this export has no text graph ({contract.TEXT_MODEL_FILE}); "
                             "re-export with classes to name classes at run time")
        self.tokenizer = ClipTokenizer.from_export(folder, manifest.text.tokenizer_spec())
        model = Path(folder) / manifest.text.model
        check_regular(model, "the text graph", error=ModelError)  # ORT would block on a FIFO
        self.session = create_session(model, provider, threads=threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if list(inputs) != [contract.INPUT_IDS] or outputs != [contract.TEXT_EMBEDDING]:
            raise ModelError(f"{folder / manifest.text.model}: expected {contract.INPUT_IDS} -> "
                             f"{contract.TEXT_EMBEDDING}, got {list(inputs)} -> {outputs}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """texts -> float32 [N, E], L2-normalised by the graph."""
        chunks = [self.session.run([contract.TEXT_EMBEDDING],
                                   {contract.INPUT_IDS: self.tokenizer(list(texts[s:s + TEXT_BATCH]))})[0]
                  for s in range(0, len(texts), TEXT_BATCH)]
        return np.concatenate(chunks).astype(np.float32)

    def class_embeddings(self, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """names x templates -> [C, E] unit rows (class_means of the prompts' embeddings)."""
        names, templates = check_names(names, templates)
        return class_means(self.embed(prompts(names, templates)), len(names), len(templates))
