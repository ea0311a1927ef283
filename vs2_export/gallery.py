"""`vs2 gallery`: the latents VS2 steers with, made visible (a static page; gallery_page.py).

Torch side, like verify: it rebuilds the export's PyTorch reference (verify.reference_for: the
same SteeredClip, proven equal to the graph by `vs2 verify`) from the folder's sae/,
steering.json and manifest, because what it shows needs more than the graph's outputs:

- the most used latents (how often each is among an image's k active ones), each with its
  top-activating images;
- each latent's nearest class prompts: its decoder direction W_dec[j] added at the training
  mean mu, through ln_post and the projection (head(mu + a W_dec[j]) - head(mu), a = the
  latent's mean value when active), cosine against the class text embeddings. ln_post is not
  linear, so the direction is taken at mu (docs/method.md section 1);
- per image, the latents whose steering moved its logits most: the logits with every active
  latent against the logits with one latent left out of W_dec c (steering.shift, the graph's
  own formula), for each of the k active latents. Exact, not a linearisation: the head is two
  small ops, so k extra head passes per image cost nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .artifacts import atomic_path, check_output, claim_output, write_json
from .config import GalleryConfig
from .errors import Vs2Error
from .fused import FusedParts
from .gallery_page import render_page
from .runtime import contract
from .runtime.preprocess import list_images, load_image, preprocess_paths, resize_crop
from .runtime.session import Vs2Session
from .steering import shift, steer
from .verify import reference_for

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Per image (N of them): the reference's outputs the page is built from."""

    paths: list[Path]
    values: torch.Tensor        # [N, k] active latent values
    indices: torch.Tensor       # [N, k] latent ids
    steered: torch.Tensor       # [N] bool
    score: torch.Tensor         # [N] gate score
    plain: torch.Tensor | None  # [N, C] zero-shot logits (None without classes)
    vs2: torch.Tensor | None    # [N, C] steered logits
    h: torch.Tensor             # [N, d]


def _logits(parts: FusedParts, h: torch.Tensor) -> torch.Tensor | None:
    m = parts.module
    if m.text is None:
        return None
    return m.logit_scale * F.normalize(m.head(h), dim=-1) @ m.text.T


@torch.no_grad()
def analyse(parts: FusedParts, folder: Path, limit: int, batch: int = 64) -> tuple[Analysis, list]:
    """Images -> Analysis (the eager SteeredClip, float pixels) and the skipped files."""
    spec, m = parts.clip.preprocess, parts.module
    gamma, lam, tau = parts.scalars().values()
    paths = list_images(folder)
    step = -(-len(paths) // limit) if paths else 1  # evenly spaced: every class folder appears
    got = preprocess_paths(paths[::step][:limit], spec)
    if not len(got.paths):
        raise Vs2Error(f"gallery: expected readable images under {folder}, found none")
    chunks = []
    for start in tqdm(range(0, len(got.paths), batch), desc="gallery", unit="batch", disable=None):
        h = m.trunk(torch.from_numpy(got.pixels[start:start + batch]))
        out = steer(h, m.sae, gamma, lam, tau, m.gate)
        chunks.append((out.values, out.indices, out.steered, out.score, h, out.h))
    cat = [torch.cat(c) for c in zip(*chunks, strict=True)]
    values, indices, steered, score, h, h_hat = cat
    return Analysis(list(got.paths), values, indices, steered, score, _logits(parts, h),
                    _logits(parts, h_hat), h), list(got.skipped)


@torch.no_grad()
def latent_rows(parts: FusedParts, a: Analysis, count: int, per_latent: int) -> list[dict]:
    """The `count` most used latents: usage, mean value, top images, nearest class prompts."""
    n = parts.module.sae.cfg.n
    active = a.values > 0
    usage = torch.bincount(a.indices[active], minlength=n)
    total = torch.zeros(n).index_add_(0, a.indices[active], a.values[active])
    rows = []
    for j in [int(i) for i in torch.argsort(usage, descending=True)[:count] if usage[i] > 0]:
        strength = torch.where(a.indices == j, a.values, torch.zeros(())).sum(-1)  # [N]
        top = torch.argsort(strength, descending=True)[:per_latent]
        mean = float(total[j] / usage[j])
        rows.append({"id": j, "usage": float(usage[j]) / len(a.paths), "mean_value": mean,
                     "prompts": _prompts(parts, j, mean),
                     "top": [{"image": int(i), "value": float(strength[i])} for i in top
                             if strength[i] > 0]})
    return rows


def _prompts(parts: FusedParts, j: int, amount: float, top: int = 3) -> list[tuple[str, float]]:
    """Classes whose text embedding is nearest to latent j's direction at mu (module docstring)."""
    m = parts.module
    if m.text is None:
        return []
    mu = m.sae.mu
    moved = m.head((mu + amount * m.sae.W_dec[j])[None]) - m.head(mu[None])
    cos = (F.normalize(moved, dim=-1) @ m.text.T)[0]
    order = torch.argsort(cos, descending=True)[:top]
    return [(parts.classes[int(c)], float(cos[c])) for c in order]


@torch.no_grad()
def moved_by(parts: FusedParts, a: Analysis, i: int, top: int = 3) -> list[dict]:
    """Image i's active latents ranked by how far leaving each out moves its steered logits."""
    if a.vs2 is None or not bool(a.steered[i]):
        return []
    m, (gamma, lam, _) = parts.module, parts.scalars().values()
    vals, idx, h = a.values[i], a.indices[i], a.h[i]
    wc = m.sae.decode_delta(vals[None], idx[None])[0]
    without = wc[None] - vals[:, None] * m.sae.W_dec[idx]          # [k, d]: one latent left out
    delta = a.vs2[i][None] - _logits(parts, shift(h.expand_as(without), without, gamma, lam))
    pred = int(a.vs2[i].argmax())
    rows = []
    for r in torch.argsort(delta.norm(dim=-1), descending=True)[:top]:
        if vals[r] <= 0:
            continue
        pushed = int(delta[r].argmax())
        rows.append({"latent": int(idx[r]), "value": float(vals[r]),
                     "change": float(delta[r].norm()), "pushed": parts.classes[pushed],
                     "pushed_by": float(delta[r, pushed]), "on_prediction": float(delta[r, pred])})
    return rows


def _top(logits: torch.Tensor | None, classes: tuple[str, ...]) -> tuple[str, float] | None:
    if logits is None:
        return None
    probs = torch.softmax(logits.double(), dim=-1)
    c = int(probs.argmax())
    return classes[c], float(probs[c])


def image_rows(parts: FusedParts, a: Analysis, root: Path, shown: int) -> list[dict]:
    """The images shown one by one: changed predictions first, then the rest in order."""
    changed = [False] * len(a.paths) if a.vs2 is None else \
        (a.plain.argmax(-1) != a.vs2.argmax(-1)).tolist()
    first = [i for i, c in enumerate(changed) if c]
    rest = [i for i, c in enumerate(changed) if not c]
    order = _spread(first, shown)
    order += _spread(rest, shown - len(order))
    rows = []
    for i in order:
        rel = a.paths[i].relative_to(root) if a.paths[i].is_relative_to(root) else a.paths[i]
        label = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in parts.classes else None
        rows.append({"image": i, "path": shown_name(rel), "label": label,
                     "zero_shot": _top(None if a.plain is None else a.plain[i], parts.classes),
                     "vs2": _top(None if a.vs2 is None else a.vs2[i], parts.classes),
                     "steered": bool(a.steered[i]), "score": float(a.score[i]),
                     "moved_by": moved_by(parts, a, i)})
    return rows


def _spread(items: list[int], count: int) -> list[int]:
    """Up to `count` items evenly spaced (files are sorted by class folder: every class shows)."""
    if count <= 0 or not items:
        return []
    step = max(1, len(items) // count)
    return items[::step][:count]


def write_thumbs(a: Analysis, used: set[int], out: Path, spec, size: int) -> dict[int, str]:
    """The model's centre crop of each used image -> out/images/NNNNN.png; image -> file."""
    files = {}
    for i in sorted(used):
        name = f"{contract.GALLERY_IMAGES}/{i:05d}.png"
        crop = resize_crop(load_image(a.paths[i]), spec)                 # [S, S, 3] uint8
        img = Image.fromarray(crop).resize((size, size), Image.LANCZOS)
        with atomic_path(out / name) as tmp:
            img.save(tmp, format="PNG")
        files[i] = name
    return files


def shown_name(path: Path | str) -> str:
    """A file name as the page and gallery.json show it: bytes that are not UTF-8 (they arrive
    as lone surrogates, which UTF-8 cannot encode) as \\xNN. The images themselves are copied
    under safe names (images/NNNNN.png)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def gallery(cfg: GalleryConfig) -> dict:
    """exported/NAME + images -> out/index.html (+ gallery.json, images/); returns the data.
    Built in a temporary folder beside out and moved in at the end: a failure leaves nothing
    under out, and index.html, moved last, marks a finished page."""
    out = check_output(cfg.out, "--out", (cfg.exported, cfg.images, _record(cfg)), file=False)
    claim_output(out / contract.GALLERY_PAGE, cfg.force)
    manifest = Vs2Session(cfg.exported).manifest
    parts = reference_for(Path(cfg.exported), cfg.run)  # the user's sources (record.py)
    a, skipped = analyse(parts, cfg.images, cfg.max_images)
    latents = latent_rows(parts, a, cfg.latents, cfg.per_latent)
    images = image_rows(parts, a, Path(cfg.images), cfg.images_shown)
    used = {t["image"] for row in latents for t in row["top"]} | {r["image"] for r in images}
    data = {"model": manifest.model.id, "exported": shown_name(cfg.exported),
            "images": shown_name(cfg.images), "n_images": len(a.paths),
            "steered_fraction": float(a.steered.float().mean()),
            "gate": {"criterion": manifest.steering.gate, "tau": manifest.steering.tau},
            "sae": {"n": manifest.sae.n, "k": manifest.sae.k}, "classes": list(parts.classes),
            "latents": latents, "shown": images,
            "skipped": [{"path": shown_name(p), "reason": r} for p, r in skipped]}
    final = Path(os.path.abspath(out))  # '--out .' has a name to put a temporary beside
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        files = write_thumbs(a, used, tmp, manifest.preprocess, cfg.thumb)
        data["files"] = {str(k): v for k, v in files.items()}
        write_json(tmp / contract.GALLERY_DATA, data)
        (tmp / contract.GALLERY_PAGE).write_text(render_page(data), encoding="utf-8")
        _move_in(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("gallery: %d latents, %d images in %s", len(latents), len(images), out)
    return data


def _record(cfg: GalleryConfig) -> Path | None:
    """The export record the reference is built from (an input: never under out)."""
    if cfg.run is None:
        return None
    run = Path(cfg.run)
    return run if run.is_file() else contract.record_path(run, Path(cfg.exported).name)


def _move_in(tmp: Path, out: Path) -> None:
    """A new out: tmp renamed onto it. An existing one (--force, or a folder without a page):
    the new images/ and gallery.json replace the old, index.html last; other files stay."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out / f".{contract.GALLERY_IMAGES}.{os.getpid()}.old"
    if (out / contract.GALLERY_IMAGES).exists():
        os.replace(out / contract.GALLERY_IMAGES, old)
    if (tmp / contract.GALLERY_IMAGES).exists():
        os.replace(tmp / contract.GALLERY_IMAGES, out / contract.GALLERY_IMAGES)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp / contract.GALLERY_DATA, out / contract.GALLERY_DATA)
    os.replace(tmp / contract.GALLERY_PAGE, out / contract.GALLERY_PAGE)
    tmp.rmdir()
