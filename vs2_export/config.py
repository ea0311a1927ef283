"""Every default of vs2-export lives here, as frozen dataclasses. The CLI takes its defaults from them.

Each config validates itself in __post_init__ and raises Vs2Error (a ValueError) saying what was
expected and what came. Paths are kept as pathlib.Path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import Vs2Error
from .runtime import contract

DEMO_MODEL = "vs2-demo"
DEFAULT_TEMPLATES = ("a photo of a {}.",)  # docs/method.md section 5 (ours: the paper states none)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise Vs2Error(message)


def _paths(obj: object) -> None:
    """Coerce every field annotated as a Path (str given on the CLI or in JSON) to Path."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and "Path" in str(f.type):
            object.__setattr__(obj, f.name, Path(value))


def to_jsonable(obj: object) -> dict:
    """asdict with Paths as strings: what goes into reports and cfg files."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(obj).items()}


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to load (clip.load_clip)."""

    name: str = DEMO_MODEL
    """open_clip architecture name (ViT-B-32, ViT-B-16, ViT-L-14, ...) or 'vs2-demo'."""
    pretrained: str | None = None
    """open_clip pretrained tag ('openai'), a local checkpoint path, or 'none' for random weights."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "model name: expected an open_clip architecture or 'vs2-demo', got ''")
        if self.name != DEMO_MODEL:
            _check(self.pretrained is not None and self.pretrained != "",
                   f"model {self.name}: expected --pretrained (a tag like 'openai', a checkpoint "
                   "file, or 'none' for random weights), got nothing")

    @property
    def source(self) -> str:
        """'demo', 'none', a checkpoint path or a pretrained tag: recorded in the metadata."""
        return "demo" if self.name == DEMO_MODEL else str(self.pretrained)


@dataclass(frozen=True)
class ExtractConfig:
    """images/ -> acts/: CLS activations at the output of the last block (docs/method.md section 1)."""

    images: Path
    """Folder of images, searched recursively (jpg, jpeg, png, webp, bmp)."""
    out: Path
    """Activation store folder: shard-*.npy + meta.json."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """The CLIP whose activations are extracted."""
    batch_size: int = 64
    """Images per forward pass."""
    shard_size: int = 16384
    """Activations per shard file (16384 x 768 x 4 B = 48 MiB for ViT-B)."""
    device: str = "cpu"
    """torch device for the forward pass."""
    force: bool = False
    """Overwrite an existing store."""
    append: bool = False
    """Keep the store's complete shards and extract only images it does not hold yet (this
    also resumes an interrupted extraction)."""

    def __post_init__(self) -> None:
        _paths(self)
        _check(self.batch_size >= 1, f"batch_size: expected >= 1, got {self.batch_size}")
        _check(self.shard_size >= 1, f"shard_size: expected >= 1, got {self.shard_size}")
        _check(not (self.append and self.force), "extract: expected --append or --force, got both")


@dataclass(frozen=True)
class SAEConfig:
    """Shape of the top-k SAE (docs/method.md section 2); saved as the SAE's cfg.json."""

    d: int
    """Input width: the CLS residual width of the model (768 for ViT-B/*)."""
    expansion: int = 4
    """n = expansion * d latents (paper: 4)."""
    k: int = 64
    """Active latents per input (paper: 64 for ViT-B/32, 256 for ViT-B/16)."""

    def __post_init__(self) -> None:
        _check(self.d >= 1, f"d: expected >= 1, got {self.d}")
        _check(self.expansion >= 1, f"expansion: expected >= 1, got {self.expansion}")
        _check(1 <= self.k <= self.n, f"k: expected 1..n={self.n}, got {self.k}")

    @property
    def n(self) -> int:
        """Number of latents."""
        return self.expansion * self.d


@dataclass(frozen=True)
class TrainConfig:
    """acts/ -> sae/: top-k SAE training (docs/method.md section 2; batch and epochs are ours)."""

    acts: Path
    """Activation store written by extract."""
    out: Path
    """SAE folder: cfg.json + sae.safetensors + train_report.json."""
    expansion: int = 4
    """n = expansion * d."""
    k: int = 64
    """Active latents per input."""
    batch_size: int = 1024
    """Activations per step (ours)."""
    epochs: int = 50
    """Passes over the store (ours: ~2.5k steps on a 50k-image train split)."""
    lr: float | None = None
    """Adam learning rate; None = 2e-4 / sqrt(n / 2^14) (Gao et al. 2024)."""
    warmup_frac: float = 0.05
    """Fraction of steps of linear warm-up; then linear decay to 0."""
    aux_k: int | None = None
    """Latents in the AuxK loss; None = min(n, d // 2)."""
    aux_coef: float = 1 / 32
    """AuxK loss weight (Gao et al. 2024)."""
    dead_after: int = 100_000
    """A latent that fired for none of the last this-many samples is dead (AuxK revives it)."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 = no clipping."""
    seed: int = 0
    """Seed of the init and the shuffling: the same seed gives the same weights."""
    device: str = "cpu"
    """torch device."""
    force: bool = False
    """Overwrite an existing SAE folder."""
    b_pre_init: str = "median"
    """b_pre (and the AuxK / FVU centre's start) from the 'median' (geometric) or 'mean' of a sample."""
    init_sample: int = 16384
    """Rows sampled for the geometric median (ours: bounded so init memory is bounded)."""
    tied_init: bool = True
    """W_dec starts as W_enc transposed (Gao et al. 2024); False = independent random rows."""
    unit_decoder: bool = True
    """Keep decoder rows unit-norm, removing the gradient component parallel to each row."""
    decay_frac: float = 1.0
    """Fraction of all steps, at the end, over which lr decays linearly to 0 (1 = from warm-up end)."""
    shuffle_buffer: int = 65536
    """Rows permuted together after shuffling shard order (ours; bounds I/O locality, not RAM)."""
    log_every: int = 50
    """Steps between metric records (metrics.jsonl, progress bar)."""
    checkpoint_every: int = 500
    """Steps between checkpoints in out/checkpoint/ (0 = none)."""
    resume: bool = False
    """Continue from out/checkpoint/ (same config required); start fresh when there is none."""
    labels: bool = False
    """PASS: class = first folder of each image path recorded in the store (docs/method.md section 6)."""
    pass_coef: float = 0.8
    """Weight of the PASS prototype-alignment loss (used only with labels)."""

    def __post_init__(self) -> None:
        _paths(self)
        for name in ("expansion", "k", "batch_size", "epochs", "dead_after", "init_sample",
                     "shuffle_buffer", "log_every"):
            _check(getattr(self, name) >= 1, f"{name}: expected >= 1, got {getattr(self, name)}")
        _check(self.lr is None or self.lr > 0, f"lr: expected > 0, got {self.lr}")
        _check(0 <= self.warmup_frac < 1, f"warmup_frac: expected in [0, 1), got {self.warmup_frac}")
        _check(0 <= self.decay_frac <= 1, f"decay_frac: expected in [0, 1], got {self.decay_frac}")
        _check(self.aux_coef >= 0, f"aux_coef: expected >= 0, got {self.aux_coef}")
        _check(self.grad_clip >= 0, f"grad_clip: expected >= 0, got {self.grad_clip}")
        _check(self.pass_coef >= 0, f"pass_coef: expected >= 0, got {self.pass_coef}")
        _check(self.checkpoint_every >= 0,
               f"checkpoint_every: expected >= 0, got {self.checkpoint_every}")
        _check(self.b_pre_init in ("median", "mean"),
               f"b_pre_init: expected 'median' or 'mean', got {self.b_pre_init!r}")
        _check(not (self.resume and self.force), "train: expected --resume or --force, got both")

    def learning_rate(self, n: int) -> float:
        """The given lr, or the 2e-4 / sqrt(n / 2^14) scaling rule (docs/method.md section 2)."""
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(n / 2**14)


@dataclass(frozen=True)
class CalibrateConfig:
    """acts/ + sae/ -> steering.json (docs/method.md sections 3 and 4)."""

    acts: Path
    """Activation store the SAE was trained on (in-domain, unlabeled)."""
    sae: Path
    """SAE folder."""
    out: Path
    """steering.json to write."""
    gamma: float = 1.5
    """Latent amplification: v = (gamma - 1) W_dec c."""
    lambda_: float = 2.1
    """Steering strength lambda."""
    quantile: float = 0.99
    """Gate: tau = this quantile of the per-sample gate score on the training activations (ours:
    0.99)."""
    force: bool = False
    """Overwrite an existing steering.json."""
    gate: str = contract.GATE_REL_ERR
    """Gate criterion (docs/method.md section 4): 'rel_err' ||h_tilde - h||^2 / ||h||^2 (ours,
    the default: it passed fewer out-of-domain images than FVU on every measured set at the same
    in-domain pass rate, benchmarks/README.md), 'fvu' (the paper's) or 'err' (raw error)."""

    def __post_init__(self) -> None:
        _paths(self)
        _check(self.gate in contract.GATE_CRITERIA,
               f"gate: expected one of {list(contract.GATE_CRITERIA)}, got {self.gate!r}")
        _check(math.isfinite(self.gamma), f"gamma: expected a finite number, got {self.gamma}")
        _check(math.isfinite(self.lambda_), f"lambda: expected a finite number, got {self.lambda_}")
        _check(0 < self.quantile <= 1, f"quantile: expected in (0, 1], got {self.quantile}")


@dataclass(frozen=True)
class ExportConfig:
    """model + sae/ + steering.json (+ classes) -> exported/NAME/model.onnx + manifest.json."""

    sae: Path
    """SAE folder."""
    steering: Path
    """steering.json from calibrate."""
    out: Path
    """Output folder (model.onnx, manifest.json, and a copy of the SAE and steering for verify)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """The CLIP to fuse."""
    classes: Path | None = None
    """Class names, one per line: adds the zero-shot head and the `logits` output."""
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    """Prompt templates with one '{}', averaged then renormalised (docs/method.md section 5)."""
    opset: int = 18
    """ONNX opset."""
    force: bool = False
    """Overwrite an existing export."""
    precisions: tuple[str, ...] = ("fp32",)
    """Variants to write: model.onnx (fp32, always: the base), model.fp16.onnx, model.int8.onnx."""
    int8_mode: str = "static"
    """int8: 'static' (QDQ, activations calibrated on `calibration`) or 'dynamic' (weights only)."""
    calibration: Path = Path("calibration")
    """Images the static int8 activation ranges are calibrated on (in-domain, unlabeled)."""
    calibration_max: int = 128
    """Calibrate on at most this many images (MinMax ranges widen with more: 32 -> 128 images took
    the demo's worst-image cosine from 0.97 to 0.995, measured)."""
    cls_only: bool = True
    """The last block computes only the CLS query (same math, ~6.6% fewer FLOPs on ViT-B-32)."""
    uint8_input: bool = False
    """Graph input pixels_uint8 uint8 [B, S, S, 3]: decoded, resized, cropped RGB; the graph
    casts, scales and normalises (instead of pixel_values float32 [B, 3, S, S])."""

    def __post_init__(self) -> None:
        _paths(self)
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(("fp32", *self.precisions))))
        for p in self.precisions:
            _check(p in contract.PRECISIONS, f"precision: expected some of {list(contract.PRECISIONS)}, got {p!r}")
        _check(self.int8_mode in contract.INT8_MODES,
               f"int8_mode: expected one of {list(contract.INT8_MODES)}, got {self.int8_mode!r}")
        _check(self.calibration_max >= 1,
               f"calibration_max: expected >= 1, got {self.calibration_max}")
        object.__setattr__(self, "templates", tuple(self.templates))
        _check(len(self.templates) >= 1, "templates: expected at least one, got none")
        for t in self.templates:
            _check(t.count("{}") == 1, f"template: expected exactly one '{{}}', got {t!r}")
        _check(17 <= self.opset <= 21, f"opset: expected 17..21, got {self.opset}")


@dataclass(frozen=True)
class VerifyConfig:
    """exported/NAME + images -> parity report: PyTorch reference vs ONNX Runtime."""

    exported: Path
    """Export folder."""
    images: Path
    """Folder of images to compare on."""
    model: ModelSpec | None = None
    """Override of the model recorded in the manifest (e.g. a moved checkpoint)."""
    batch_size: int = 16
    """Images per run."""
    max_images: int = 256
    """Compare on at most this many images."""
    provider: str = "cpu"
    """ONNX Runtime provider: cpu or cuda."""
    report: Path | None = None
    """Where to write the JSON report; None = exported/NAME/parity_report[.PRECISION].json."""
    precision: str = "fp32"
    """Which variant to verify (model.onnx, model.fp16.onnx, model.int8.onnx) against fp32 torch."""

    def __post_init__(self) -> None:
        _paths(self)
        _check(self.batch_size >= 1, f"batch_size: expected >= 1, got {self.batch_size}")
        _check(self.max_images >= 1, f"max_images: expected >= 1, got {self.max_images}")
        _check(self.precision in contract.PRECISIONS,
               f"precision: expected one of {list(contract.PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class EvalConfig:
    """exported/NAME + labeled images (one subfolder per class) -> accuracy with / without steering."""

    exported: Path
    """Export folder (must have classes)."""
    images: Path
    """Labeled folder: images/<class name>/*.png."""
    batch_size: int = 32
    """Images per run."""
    provider: str = "cpu"
    """ONNX Runtime provider: cpu or cuda."""
    report: Path | None = None
    """Where to write the JSON report; None = exported/NAME/eval_report.json."""
    bootstrap: int = 2000
    """Paired bootstrap resamples behind the interval of the accuracy change (stats.py)."""
    seed: int = 0
    """Seed of the bootstrap: the same images give the same interval."""

    def __post_init__(self) -> None:
        _paths(self)
        _check(self.batch_size >= 1, f"batch_size: expected >= 1, got {self.batch_size}")
        _check(self.bootstrap >= 1, f"bootstrap: expected >= 1, got {self.bootstrap}")


@dataclass(frozen=True)
class GalleryConfig:
    """exported/NAME + images -> a static HTML page of the latents VS2 steers with (gallery.py)."""

    exported: Path
    """Export folder (its sae/, steering.json and manifest rebuild the PyTorch reference)."""
    images: Path
    """Folder of images, searched recursively; a first-level folder named like a class is shown
    as the image's label."""
    out: Path
    """Folder to write index.html, gallery.json and images/ into."""
    latents: int = 12
    """Most used latents shown, each with its top-activating images and nearest class prompts."""
    per_latent: int = 10
    """Top-activating images per latent."""
    max_images: int = 600
    """Analyse at most this many images (evenly spaced over the sorted file list)."""
    images_shown: int = 24
    """Images shown with the latents that moved their logits most (changed predictions first)."""
    thumb: int = 96
    """Thumbnail side in pixels (the model's centre crop, resized)."""
    force: bool = False
    """Overwrite an existing page."""

    def __post_init__(self) -> None:
        _paths(self)
        for name in ("latents", "per_latent", "max_images", "images_shown", "thumb"):
            _check(getattr(self, name) >= 1, f"{name}: expected >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class BenchConfig:
    """exported/NAME -> bench.json + bench.png: every variant and the baselines in ONE run."""

    exported: Path
    """Export folder (model.onnx and any model.fp16.onnx / model.int8.onnx)."""
    batches: tuple[int, ...] = (1, 16)
    """Batch sizes timed."""
    runs: int = 10
    """Timed runs per variant and batch (median and spread are taken over them)."""
    warmup: int = 2
    """Untimed runs first (allocations, kernel choice)."""
    threads: int | None = None
    """Intra-op threads for torch and ORT alike; None = every core (os.cpu_count())."""
    provider: str = "cpu"
    """ONNX Runtime provider: cpu or cuda (fp16 is timed only where it is meant to run fast)."""
    ablations: bool = False
    """Also time the fused fp32 graph: full last block, + BiasGelu fusion, ORT levels, 1 thread,
    started from the saved optimised file (what the graph and session defaults were chosen by)."""
    seed: int = 0
    """Seed of the random pixels every variant sees."""
    out: Path | None = None
    """JSON report; None = exported/NAME/bench.json (the chart goes beside it as .png)."""

    def __post_init__(self) -> None:
        _paths(self)
        object.__setattr__(self, "batches", tuple(self.batches))
        _check(len(self.batches) >= 1 and all(b >= 1 for b in self.batches),
               f"batches: expected sizes >= 1, got {list(self.batches)}")
        _check(self.runs >= 1, f"runs: expected >= 1, got {self.runs}")
        _check(self.warmup >= 0, f"warmup: expected >= 0, got {self.warmup}")
        _check(self.threads is None or self.threads >= 1,
               f"threads: expected None or >= 1, got {self.threads}")
        _check(self.provider in ("cpu", "cuda"), f"provider: expected cpu or cuda, got {self.provider!r}")


@dataclass(frozen=True)
class QuickstartConfig:
    """`vs2 quickstart`: the whole flow on the embedded demo model, offline."""

    workdir: Path | None = None
    """Where data, activations, SAE and export go; None = a fresh temporary folder."""
    n_unlabeled: int = 3000
    """Unlabeled target-domain images the SAE is trained on."""
    n_val_per_class: int = 300
    """Labeled target-domain images per class for verify and eval. 3,000 in all: on 600 the
    demo's +2 points could not be told from noise (McNemar p >= 0.3, issue 12)."""
    expansion: int = 4
    """SAE expansion (paper: 4)."""
    k: int = 16
    """Active latents (ours for d=128: k/d = 1/8, as 64/768 ~ 1/12 in the paper's ViT-B/32)."""
    epochs: int = 60
    """SAE epochs over the unlabeled activations."""
    batch_size: int = 256
    """SAE batch size."""
    seed: int = 0
    """Seed of the generated data and the SAE."""
    gate: str = contract.GATE_REL_ERR
    """Gate criterion (CalibrateConfig.gate)."""

    def __post_init__(self) -> None:
        _paths(self)
        _check(self.gate in contract.GATE_CRITERIA,
               f"gate: expected one of {list(contract.GATE_CRITERIA)}, got {self.gate!r}")
        for name in ("n_unlabeled", "n_val_per_class", "expansion", "k", "epochs", "batch_size"):
            _check(getattr(self, name) >= 1, f"{name}: expected >= 1, got {getattr(self, name)}")
