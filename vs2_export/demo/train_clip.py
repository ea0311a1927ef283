r"""Train the embedded demo CLIP ("vs2-demo") on generated source-domain images and captions.

The shipped checkpoint was trained in two cosine cycles (a single longer cycle did not fit the
time budget of one run on a shared 1-thread CPU; the second cycle uses a fresh data seed):

    python -m vs2_export.demo.train_clip --out /tmp/vs2demo_stage1
    python -m vs2_export.demo.train_clip --out vs2_export/demo --init /tmp/vs2demo_stage1 \
        --seed 1 --steps 1000 --lr 5e-4

A tiny open_clip CLIP (ViT image tower: 64 px, patch 8, width 128, 4 layers) trained from
scratch with the symmetric contrastive loss, AdamW and a cosine schedule, on images drawn on
the fly by vs2_export.demo.data (infinite data: no epochs, no overfitting to a pool). Writes
vs2-demo.safetensors (fp16), vs2-demo.json and classes.txt atomically, then reports zero-shot
top-1 on fresh labeled source and target sets.

    python -m vs2_export.demo.train_clip --out vs2_export/demo --verify-only

reloads the written files exactly as a consumer would and re-measures zero-shot.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import load_file, save_file

from vs2_export.demo import DEMO_NAME, data

log = logging.getLogger("vs2_export.demo.train_clip")

MEAN = list(open_clip.OPENAI_DATASET_MEAN)
STD = list(open_clip.OPENAI_DATASET_STD)

MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": data.IMAGE_SIZE, "patch_size": 8, "width": 128, "layers": 4,
                   "head_width": 32, "mlp_ratio": 4.0},
    # vocab stays SimpleTokenizer's 49408: its 49408 x 128 token embedding (12.6 MB in fp16)
    # is most of the checkpoint; 3 layers of width 128 are ample for these captions.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4,
                 "layers": 3},
    "quick_gelu": False,
}


def build_model(cfg: dict) -> open_clip.model.CLIP:
    """The demo CLIP from its config (the same call consumers use to rebuild it)."""
    return open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
                                text_cfg=cfg["text_cfg"], quick_gelu=cfg["quick_gelu"])


def to_pixels(images: list) -> torch.Tensor:
    """PIL RGB images already at image_size -> float32 [B, 3, S, S], OpenAI-normalised.

    open_clip's eval transform (resize shortest side + centre crop + ToTensor + Normalize) is
    the identity resize on images drawn at image_size, so this is ToTensor + Normalize.
    """
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])  # [B, S, S, 3]
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@lru_cache(maxsize=1)
def _tokenizer(context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(context_length=context_length)


@cache
def _tokens(caption: str, context_length: int) -> torch.Tensor:
    """Token ids [L] of one caption; cached because the caption set is small and repeats."""
    return _tokenizer(context_length)([caption])[0]


def make_batch(seed: int, step: int, batch: int, context_length: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch `step`: pixels [B, 3, S, S] and caption tokens [B, L] (long)."""
    rng = data.train_rng(seed, step)
    examples = [data.render_example(rng, "source") for _ in range(batch)]
    pixels = to_pixels([im for im, _, _ in examples])
    tokens = torch.stack([_tokens(cap, context_length) for _, cap, _ in examples])
    return pixels, tokens


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's convention: no weight decay on gains, biases, embeddings and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised embeddings img, txt [B, E] (as open_clip's ClipLoss).

    scale: the temperature already exponentiated (what CLIP.forward returns).
    """
    logits = scale * img @ txt.T  # [B, B]
    labels = torch.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train(model: open_clip.model.CLIP, args: argparse.Namespace) -> list[float]:
    """Train in place for args.steps steps; returns the per-step loss curve."""
    ctx = MODEL_CFG["text_cfg"]["context_length"]
    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(0.9, 0.98),
                            eps=1e-6)
    warmup = max(1, int(0.05 * args.steps))
    losses: list[float] = []
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        pixels, tokens = make_batch(args.seed, step, args.batch, ctx)
        img, txt, scale = model(pixels, tokens)
        loss = contrastive_loss(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % args.log_every == 0 or step == args.steps - 1:
            recent = float(np.mean(losses[-args.log_every:]))
            log.info("step %5d/%d  loss %.4f  scale %.1f  lr %.2e  %.0fs", step, args.steps,
                     recent, model.logit_scale.exp().item(), opt.param_groups[0]["lr"],
                     time.time() - t0)
        if (step + 1) % args.probe_every == 0:
            # Progress probe on a small source set from a seed the final evaluation never uses.
            acc = zero_shot_top1(model, ctx, "source", seed=args.eval_seed + 1000, n_per_class=20)
            log.info("step %5d  probe zero-shot source top-1 %.3f", step, acc)
            model.train()
    return losses


@torch.no_grad()
def class_text_embeddings(model: open_clip.model.CLIP, context_length: int) -> torch.Tensor:
    """Zero-shot head T [C, E]: per class, template embeddings averaged then renormalised."""
    tok = _tokenizer(context_length)
    rows = []
    for name in data.CLASSES:
        emb = model.encode_text(tok([t.format(name) for t in data.TEMPLATES]), normalize=True)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def zero_shot_top1(model: open_clip.model.CLIP, context_length: int, domain: str, seed: int,
                   n_per_class: int) -> float:
    """Top-1 accuracy on the labeled stream (the images generate_labeled would write)."""
    model.eval()
    head = class_text_embeddings(model, context_length)
    correct = total = 0
    for c in range(len(data.CLASSES)):
        images = [data.labeled_example(seed, domain, c, i) for i in range(n_per_class)]
        emb = model.encode_image(to_pixels(images), normalize=True)
        correct += int(((emb @ head.T).argmax(-1) == c).sum())
        total += n_per_class
    return correct / total


def _atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename over path: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create 0600 files; these are package data
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(model: open_clip.model.CLIP, out: Path, train_record: dict) -> None:
    """Write vs2-demo.safetensors (fp16), vs2-demo.json and classes.txt under out."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out / f"{DEMO_NAME}.safetensors", lambda p: save_file(state, str(p)))
    meta = {
        "model_cfg": MODEL_CFG,
        "preprocess": {"image_size": MODEL_CFG["vision_cfg"]["image_size"], "mean": MEAN,
                       "std": STD, "interpolation": "bicubic", "resize_mode": "shortest",
                       "fill_color": 0},
        "classes": list(data.CLASSES),
        "templates": list(data.TEMPLATES),
        "train": train_record,
    }
    _atomic_write(out / f"{DEMO_NAME}.json",
                  lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    _atomic_write(out / "classes.txt", data.write_classes)


def load(out: Path) -> tuple[open_clip.model.CLIP, dict]:
    """Rebuild the demo model from the written files exactly as a consumer does (fp32, eval)."""
    meta = json.loads((out / f"{DEMO_NAME}.json").read_text())
    model = build_model(meta["model_cfg"])
    state = load_file(str(out / f"{DEMO_NAME}.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval(), meta


def evaluate(model: open_clip.model.CLIP, args: argparse.Namespace) -> dict:
    """Zero-shot top-1 on fresh labeled source and target sets (seed args.eval_seed)."""
    ctx = MODEL_CFG["text_cfg"]["context_length"]
    return {f"zero_shot_{d}_top1": zero_shot_top1(model, ctx, d, args.eval_seed,
                                                  args.eval_per_class)
            for d in data.DOMAINS}


def verify(args: argparse.Namespace) -> None:
    """Reload the files under args.out, re-measure zero-shot, compare with the record.

    With args.rewrite_eval the re-measured numbers replace the recorded ones (used when the
    generator of the eval data changed after training; the weights are untouched).
    """
    model, meta = load(args.out)
    measured = evaluate(model, args)
    recorded = {k: v for k, v in meta["train"].items() if "top1" in k}
    log.info("reloaded: %s", measured)
    log.info("recorded: %s", recorded)
    if args.rewrite_eval:
        meta["train"].update(measured, eval_seed=args.eval_seed,
                             eval_per_class=args.eval_per_class)
        _atomic_write(args.out / f"{DEMO_NAME}.json",
                      lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
        log.info("record rewritten")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", type=Path, default=None,
                   help="directory holding a vs2-demo.safetensors to start from (else random)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--probe-every", type=int, default=250)
    p.add_argument("--eval-seed", type=int, default=0,
                   help="labeled stream seed of the eval sets (0 = generate_labeled's default)")
    p.add_argument("--eval-per-class", type=int, default=100)
    p.add_argument("--verify-only", action="store_true",
                   help="reload the files under --out and re-measure zero-shot; no training")
    p.add_argument("--rewrite-eval", action="store_true",
                   help="with --verify-only: store the re-measured zero-shot in vs2-demo.json")
    return p.parse_args(argv)


def _train_record(args: argparse.Namespace, losses: list[float], seconds: float) -> dict:
    """The "train" section of vs2-demo.json (zero-shot numbers are added by the caller).

    With --init, the earlier run's own record is nested under "init_train" (the full history).
    """
    record = {
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "weight_decay": args.wd,
        "seed": args.seed, "threads": args.threads,
        "init": None if args.init is None else str(args.init), "seconds": round(seconds, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "loss_curve_every_50": [round(float(np.mean(losses[i:i + 50])), 4)
                                for i in range(0, len(losses), 50)],
        "eval_seed": args.eval_seed, "eval_per_class": args.eval_per_class,
    }
    init_meta = None if args.init is None else args.init / f"{DEMO_NAME}.json"
    if init_meta is not None and init_meta.exists():
        record["init_train"] = json.loads(init_meta.read_text())["train"]
    return record


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.verify_only:
        verify(args)
        return
    torch.manual_seed(args.seed)
    model = build_model(MODEL_CFG)
    if args.init is not None:  # continue from an earlier run (a second cosine cycle)
        init = load_file(str(args.init / f"{DEMO_NAME}.safetensors"))
        model.load_state_dict({k: v.float() for k, v in init.items()})
    log.info("params: %.2fM", sum(p.numel() for p in model.parameters()) / 1e6)
    t0 = time.time()
    losses = train(model, args)
    seconds = time.time() - t0
    # Evaluate the weights as shipped (rounded to fp16), not the fp32 ones that are discarded.
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    record = _train_record(args, losses, seconds)
    record.update(evaluate(model, args))
    save(model, args.out, record)
    log.info("done in %.0fs: %s", seconds, {k: v for k, v in record.items() if "top1" in k})


if __name__ == "__main__":
    main()
