"""Every default of vs2-export lives here, as frozen dataclasses. The CLI takes its defaults from them.

Each config validates itself in __post_init__ and raises Vs2Error (a ValueError) saying what was
expected and what came. Paths are kept as pathlib.Path.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from .errors import Vs2Error
from .runtime import contract
from .runtime.manifest import TEMPLATE_RULE, is_finite32, is_template

DEMO_MODEL = "vs2-demo"
DEFAULT_TEMPLATES = ("a photo of a {}.",)  # docs/method.md section 5 (ours: the paper states none)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise Vs2Error(message)


finite32 = is_finite32
"""A real number that stays finite in float32 (the runtime's rule: manifests are held to it too)."""


def _number(obj: object, name: str, low: float, high: float, *, low_open: bool = False) -> None:
    """Field `name` is a finite number in [low, high] (or (low, high] when low_open)."""
    value = getattr(obj, name)
    ok = finite32(value) and (value > low if low_open else value >= low) and value <= high
    _check(ok, f"{name}: expected a finite number in {'(' if low_open else '['}{low:g}, {high:g}], "
               f"got {value!r}")


def _count(obj: object, name: str, low: int, high: int) -> None:
    """Field `name` is an int in [low, high] (bounds keep hostile numbers from sizing memory)."""
    value = getattr(obj, name)
    _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
           f"{name}: expected an int in [{low}, {high}], got {value!r}")


def _counts(obj: object, highs: dict[str, int]) -> None:
    """_count for each field named in `highs`, from 1, or from 0 for the seed (0 is a seed)."""
    for name, high in highs.items():
        _count(obj, name, 0 if name == "seed" else 1, high)


SAE_SHAPE_HIGHS = {"expansion": 256, "k": 1 << 14, "batch_size": 1 << 20}
"""Upper bounds of the SAE options that TrainConfig and QuickstartConfig both take: one home, so
that quickstart refuses up front exactly what train would refuse after minutes of work."""


def _paths(obj: object) -> None:
    """Coerce every field annotated as a Path (str given on the CLI or in JSON) to Path."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and "Path" in str(f.type):
            object.__setattr__(obj, f.name, Path(value))


def default(cls: type, name: str):
    """The dataclass default of cls.name: this module is the only home of defaults."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()


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
    """Folder of images, searched recursively (runtime.preprocess.IMAGE_EXTENSIONS)."""
    out: Path
    """Activation store folder: shard-*.npy + meta.json."""
    model: ModelSpec
    """The CLIP whose activations are extracted: required, never a silent default (the demo
    model on real photos gives a store that looks fine and steers nothing)."""
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
        _check(isinstance(self.model, ModelSpec), f"model: expected a ModelSpec, got {self.model!r}")
        _count(self, "batch_size", 1, 4096)
        _count(self, "shard_size", 1, 1 << 22)
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
        _counts(self, {**SAE_SHAPE_HIGHS, "epochs": 1_000_000, "dead_after": 1 << 40,
                       "init_sample": 1 << 22, "shuffle_buffer": 1 << 26, "log_every": 1 << 30,
                       "seed": 2**32 - 1})
        _count(self, "checkpoint_every", 0, 1 << 30)
        if self.aux_k is not None:
            _count(self, "aux_k", 1, 1 << 20)
        if self.lr is not None:
            _number(self, "lr", 0, 10, low_open=True)
        _number(self, "warmup_frac", 0, 0.999)
        _number(self, "decay_frac", 0, 1)
        _number(self, "aux_coef", 0, 1e6)
        _number(self, "grad_clip", 0, 1e12)
        _number(self, "pass_coef", 0, 1e6)
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
        # The graph computes in float32: values finite there, and what the manifest accepts.
        _number(self, "gamma", 0, 1e6, low_open=True)
        _number(self, "lambda_", 0, 1e6)
        _number(self, "quantile", 0, 1, low_open=True)


@dataclass(frozen=True)
class ExportConfig:
    """model + sae/ + steering.json (+ classes) -> exported/NAME/model.onnx + manifest.json."""

    sae: Path
    """SAE folder."""
    steering: Path
    """steering.json from calibrate."""
    out: Path
    """The export folder: what ships (model files, their manifests, what the runtime reads)."""
    model: ModelSpec | None = None
    """The CLIP to fuse; None = the one the SAE's activations came from (its cfg.json records
    model, source and weights checksum). Other weights than the SAE's are refused."""
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
    int8_recheck: float | str = "auto"
    """int8: re-run in fp32, inside model.int8.onnx, the images whose int8 top-2 logit margin is
    below this (recheck.py): 'auto' = the margin chosen on the calibration images (needs classes
    and calibration images, else off), 'off' = the plain int8 file (smaller), or a margin in
    logits (a number >= 0, given as such or as its text)."""
    int8_recheck_gate: float = 0.0
    """int8: also re-run the images whose gate score is within this of tau (0 = not used): keeps
    `steered` and the embedding of images at the gate, with or without classes (not with 'off')."""
    calibration: Path | None = None
    """Images the static int8 activation ranges are calibrated on (in-domain, unlabeled); None =
    the images the SAE's activation store was extracted from (its meta.json lists them)."""
    calibration_max: int = 128
    """Calibrate on at most this many images (MinMax ranges widen with more: 32 -> 128 images took
    the demo's worst-image cosine from 0.97 to 0.995, measured)."""
    cls_only: bool = True
    """The last block computes only the CLS query (same math, ~6.6% fewer FLOPs on ViT-B-32)."""
    pixel_input: str = contract.PIXEL_VALUES
    """The graph's pixel input (contract.PIXEL_INPUTS): 'pixel_values' float32 [B, 3, S, S]
    normalised by the app; 'pixels_uint8' uint8 [B, S, S, 3] resized, cropped RGB, normalised in
    the graph; 'image_rgb' uint8 [H, W, 3], one decoded image of any size up to
    contract.MAX_SIDE, resized, cropped and normalised in the graph (the portable choice: JS
    and other runtimes need no resampler)."""
    run: Path | None = None
    """The run folder, where the export record (what verify rebuilds the reference from) and
    the export-time variant checks go; None = the folder holding `steering`. Never `out`."""

    def __post_init__(self) -> None:
        _paths(self)
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(("fp32", *self.precisions))))
        for p in self.precisions:
            _check(p in contract.PRECISIONS, f"precision: expected some of {list(contract.PRECISIONS)}, got {p!r}")
        _check(self.int8_mode in contract.INT8_MODES,
               f"int8_mode: expected one of {list(contract.INT8_MODES)}, got {self.int8_mode!r}")
        _count(self, "calibration_max", 1, 100_000)
        object.__setattr__(self, "int8_recheck", _recheck_setting(self.int8_recheck))
        _check(finite32(self.int8_recheck_gate) and self.int8_recheck_gate >= 0,
               f"int8_recheck_gate: expected a finite number >= 0, got {self.int8_recheck_gate!r}")
        _check(self.int8_recheck != "off" or self.int8_recheck_gate == 0,
               "int8_recheck 'off' writes the plain int8 file: expected no int8_recheck_gate with "
               f"it, got {self.int8_recheck_gate!r} (a gate band alone: leave int8_recheck auto)")
        object.__setattr__(self, "templates", tuple(self.templates))
        _check(len(self.templates) >= 1, "templates: expected at least one, got none")
        for t in self.templates:
            _check(is_template(t), f"template: expected {TEMPLATE_RULE}, got {t!r}")
        _check(17 <= self.opset <= 21, f"opset: expected 17..21, got {self.opset}")
        _check(self.pixel_input in contract.PIXEL_INPUTS,
               f"pixel_input: expected one of {list(contract.PIXEL_INPUTS)}, got {self.pixel_input!r}")
        _check(self.pixel_input != contract.IMAGE_RGB or self.opset >= 18,
               f"pixel_input image_rgb: expected opset >= 18 (Resize antialias), got {self.opset}")


def _recheck_setting(value: object) -> float | str:
    """'auto', 'off', or a margin >= 0 (a number, or its text from the CLI) -> 'auto', 'off' or float."""
    if value in ("auto", "off"):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    _check(finite32(value) and value >= 0,
           f"int8_recheck: expected 'auto', 'off' or a margin >= 0 in logits, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class VerifyConfig:
    """An exported model + the user's sources -> parity report: PyTorch reference vs ONNX Runtime.

    The reference is rebuilt from what the export was made from (the export record in the run
    folder: model and weights checksum, SAE, steering, classes), never from the metadata of the
    file under test, which is checked against those sources instead."""

    exported: Path
    """Export folder, or one model file in it (model.int8.onnx: the precision follows)."""
    run: Path | None = None
    """Run folder holding exports/NAME.json (what `vs2 export` recorded), or that record file."""
    images: Path | None = None
    """Images to compare on; None = the images the SAE's activation store was made from."""
    model: ModelSpec | None = None
    """Override of the recorded model (e.g. a checkpoint moved); its weights must still match."""
    sae: Path | None = None
    """Override of the recorded SAE folder (moved); its checksum must still match."""
    steering: Path | None = None
    """Override of the recorded steering.json (moved); its content must still match."""
    batch_size: int = 16
    """Images per run."""
    max_images: int = 256
    """Compare on at most this many images (spread evenly over the folder or store)."""
    provider: str = "cpu"
    """cpu or cuda (ONNX Runtime), or openvino (runtime/openvino_session.py)."""
    report: Path | None = None
    """JSON report; None = RUN/reports/NAME.verify[.PRECISION].json (never the export folder)."""
    precision: str | None = None
    """Variant to verify against fp32 torch; None = model.onnx, or the file `exported` names;
    bf16 (provider openvino) computes model.onnx in bf16 (contract.COMPUTE_PRECISIONS)."""

    def __post_init__(self) -> None:
        _paths(self)
        _count(self, "batch_size", 1, 4096)
        _count(self, "max_images", 1, 1 << 20)
        _check(self.precision is None or self.precision in contract.RUN_PRECISIONS,
               f"precision: expected one of {list(contract.RUN_PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class EvalConfig:
    """exported model + labeled images (one subfolder per class) -> accuracy with / without steering."""

    exported: Path
    """Export folder (must have classes), or one model file in it."""
    images: Path
    """Labeled folder: images/<class name>/*.png."""
    batch_size: int = 32
    """Images per run."""
    provider: str = "cpu"
    """cpu or cuda (ONNX Runtime), or openvino (runtime/openvino_session.py)."""
    report: Path | None = None
    """JSON report; None = RUN/reports/NAME.eval[.PRECISION].json with `run`, else none
    (the export folder ships: reports never go there)."""
    run: Path | None = None
    """Run folder for the default report path."""
    precision: str | None = None
    """Variant to evaluate; None = model.onnx, or the file `exported` names."""

    bootstrap: int = 2000
    """Paired bootstrap resamples behind the interval of the accuracy change (stats.py)."""
    seed: int = 0
    """Seed of the bootstrap: the same images give the same interval."""

    def __post_init__(self) -> None:
        _paths(self)
        _count(self, "batch_size", 1, 4096)
        _count(self, "bootstrap", 1, 1_000_000)
        _check(self.precision is None or self.precision in contract.PRECISIONS,
               f"precision: expected one of {list(contract.PRECISIONS)}, got {self.precision!r}")


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
    run: Path | None = None
    """Run folder holding the export record: the sources the PyTorch reference is rebuilt from,
    as verify does (required: `vs2 gallery ... --run RUN`)."""

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
    openvino: bool = True
    """With provider cpu, also time OpenVINO rows (fp32, int8, bf16 where the CPU has it) when
    the openvino package is installed."""
    ablations: bool = False
    """Also time the fused fp32 graph: full last block, + BiasGelu fusion, ORT levels, 1 thread,
    started from the saved optimised file (what the graph and session defaults were chosen by)."""
    seed: int = 0
    """Seed of the random pixels every variant sees (when images is None)."""
    report: Path | None = None
    """JSON report; None = RUN/reports/NAME.bench.json (the chart goes beside it as .png);
    the graphs bench derives are cached in RUN/cache/NAME/ (never in the export folder)."""
    run: Path | None = None
    """Run folder holding the export record: the PyTorch baseline is built from its sources."""
    images: Path | None = None
    """Take the pixels from these images (cycled to the largest batch) instead of random ones:
    the embedding cosines between rows then mean something for int8."""

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
        # The data step writes one PNG (~10 kB) per image: an unbounded count fills the disk
        # (10^10 wrote 87,605 files before it was killed). The train options are bounded here,
        # not only by TrainConfig, so a bad one is refused before minutes of data and extraction.
        # The seed stops one short of TrainConfig's: the labeled set is generated with seed + 1.
        _counts(self, {"n_unlabeled": 100_000, "n_val_per_class": 10_000, "epochs": 10_000,
                       **SAE_SHAPE_HIGHS, "seed": 2**32 - 2})
