"""Class names + prompt templates -> class text embeddings T [C, E] (docs/method.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .clip import LoadedClip
from .errors import Vs2Error


def read_classes(path: Path) -> tuple[str, ...]:
    """One class name per line; an empty line inside the list or a duplicate is an error."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Vs2Error(f"classes: cannot read {path} ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline or blank tail is not a class
    names = [line.strip() for line in lines]
    if not names:
        raise Vs2Error(f"classes: expected one class name per line in {path}, found none")
    for number, name in enumerate(names, start=1):
        if not name:
            raise Vs2Error(f"classes: {path} line {number} is empty; expected a class name")
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name in seen:
            raise Vs2Error(f"classes: {path} line {number} repeats {name!r} (line {seen[name]})")
        seen[name] = number
    return tuple(names)


@torch.no_grad()
def class_embeddings(clip: LoadedClip, classes: Sequence[str], templates: Sequence[str]
                     ) -> torch.Tensor:
    """T [C, E]: per class, the templates' text embeddings normalised, averaged, renormalised."""
    prompts = [t.format(name) for name in classes for t in templates]
    tokens = clip.tokenizer(prompts)
    text = F.normalize(clip.model.encode_text(tokens).float(), dim=-1)
    text = text.reshape(len(classes), len(templates), -1).mean(dim=1)
    return F.normalize(text, dim=-1)
