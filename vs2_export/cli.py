"""`vs2`: a thin typer layer over the pipeline functions. The only module that prints.

Exit codes: 0 ok, 1 a check failed (parity), 2 bad input or usage. Never a traceback for
bad input: boundary errors become one line on stderr.
"""

# ruff: noqa: E402 - the SIGINT handler goes in before the heavy imports, on purpose
from __future__ import annotations

import os
import signal
import sys


class _CtrlC:
    """Where a SIGINT lands (_on_ctrl_c): in a command's body or not, and whether one came."""

    in_command = False
    received = False


def _on_ctrl_c(signum: int, frame: object) -> None:
    """SIGINT, from the first import to the process's end. In a command's body it raises
    KeyboardInterrupt, so that the command's cleanup runs (atomic writes delete their
    temporaries), and is remembered in case a library swallows it (_command_body). Anywhere else
    nothing is half-written, so exit at once: Python's own handler would raise inside the imports
    below (~0.5 s: a traceback, or 'ImportError: initialization failed'), give a traceback while
    typer builds the commands, and after the command, in interpreter shutdown, be reported as
    'Exception ignored' and exit 0."""
    _CtrlC.received = True
    if _CtrlC.in_command:
        raise KeyboardInterrupt
    os.write(2, b"vs2: interrupted\n")
    os._exit(130)


def _take_ctrl_c() -> None:
    """Route SIGINT to _on_ctrl_c unless it is ignored. A shell starts background jobs with SIGINT
    ignored and Python keeps that (no KeyboardInterrupt, ever); so do we, from the first moment:
    taking it over after the interpreter started made `vs2 doctor & kill -INT $!` exit 0 in the
    first 0.05 s and 130 after, by timing."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_ctrl_c)


if os.path.basename(sys.argv[0]) in ("vs2", "vs2.exe") or __name__ == "__main__":
    _take_ctrl_c()  # first, before the heavy imports; main() does it for any other caller

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

try:  # typer >= 0.2x vendors its own click; older typer raises click's exceptions
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the typer release
    from click import exceptions as click_errors

from .artifacts import check_output
from .config import (
    DEFAULT_TEMPLATES,
    BenchConfig,
    CalibrateConfig,
    EvalConfig,
    ExportConfig,
    ExtractConfig,
    GalleryConfig,
    ModelSpec,
    QuickstartConfig,
    TrainConfig,
    VerifyConfig,
    default,
)
from .errors import CheckFailed


class OneLineGroup(typer.core.TyperGroup):
    """The `vs2` group: usage errors are ONE line on stderr (exit 2), in a terminal or not,
    never click's usage block or typer's rich box; help is plain text with placeholders named
    for what they hold (DIR, FILE, N, X, TEXT), not Python types."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _name_placeholders(self)
        try:
            code = super().main(args, prog_name or "vs2", complete_var, standalone_mode=False, **extra)
        except getattr(click_errors, "NoArgsIsHelpError", ()) as exc:
            typer.echo(exc.ctx.get_help())
            code = 2
        except click_errors.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "vs2"
            line = " ".join(exc.format_message().split())
            typer.echo(f"vs2: error: {line} (usage: {command} --help)", err=True)
            code = exc.exit_code
        except click_errors.ClickException as exc:
            typer.echo(f"vs2: error: {' '.join(exc.format_message().split())}", err=True)
            code = exc.exit_code
        except click_errors.Abort:
            typer.echo("vs2: interrupted", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code or 0)


PLACEHOLDERS = {"int": "N", "float": "X", "str": "TEXT", "Path": "PATH", "PosixPath": "PATH",
                "WindowsPath": "PATH"}


def _name_placeholders(group: typer.core.TyperGroup) -> None:
    """typer 0.2x shows <int>, <path>, <list[str]>: give every option a plain metavar instead,
    from its type (a path whose help says 'folder' is a DIR, 'file' a FILE)."""
    for command in group.commands.values():
        for param in command.params:
            if param.metavar is not None or getattr(param, "is_flag", False):
                continue
            kind = param.bare_type() if hasattr(param, "bare_type") else \
                getattr(getattr(param, "type", None), "name", "str")
            kind = kind.removeprefix("list[").removesuffix("]").removesuffix(" | None")
            if kind in ("bool", "boolean"):
                continue
            name = PLACEHOLDERS.get(kind, PLACEHOLDERS.get(kind.capitalize(), "TEXT"))
            words = (getattr(param, "help", "") or "").lower()
            if name == "PATH":
                name = "DIR" if "folder" in words else "FILE" if "file" in words else name
            param.metavar = name


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, cls=OneLineGroup,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Export CLIP with VS2 steering to one ONNX graph; run and verify it.")

EXTRAS = {"torch": "export", "open_clip": "export", "onnx": "export", "onnxscript": "export",
          "safetensors": "export", "onnxruntime": "cpu] or [gpu"}
"""A module missing in this install -> the extra that brings it (pyproject.toml)."""


def _show_version(value: bool) -> None:
    if value:
        from . import __version__
        typer.echo(f"vs2-export {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Export CLIP with VS2 steering to one ONNX graph; run and verify it."""


def cli_command(name: str | None = None) -> Callable:
    """Register a command; map boundary errors to one stderr line and exit codes 2 / 1."""
    return lambda fn: app.command(name)(_guarded(fn))


EXIT_INTERNAL = 3
"""A bug, not bad input: one line, and the traceback only with VS2_DEBUG=1."""


def _configure_logging() -> None:
    """Our INFO lines; other libraries' warnings and errors only (the ONNX exporter's INFO
    chatter about constant folding is not for users)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vs2_export").setLevel(logging.INFO)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)


@contextlib.contextmanager
def _command_body() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in here (_on_ctrl_c). One that did not end the command,
    because a library swallowed it, still ends it with exit 130, whatever the outcome would have
    been: doctor's `except ImportError` around an openvino import cut short by Ctrl-C reported
    'not installed', then 'healthy', exit 0."""
    try:
        _CtrlC.received, _CtrlC.in_command = False, True
        yield
    except BaseException as exc:
        if _CtrlC.received and not (isinstance(exc, typer.Exit) and exc.exit_code == 130):
            _fail("vs2: interrupted", 130)
        raise
    finally:
        _CtrlC.in_command = False
    if _CtrlC.received:
        _fail("vs2: interrupted", 130)


def _guarded(fn: Callable) -> Callable:
    @functools.wraps(fn)
    @_command_body()  # a fresh one per call
    def wrapper(*args, **kwargs):
        _configure_logging()
        try:
            return fn(*args, **kwargs)
        except CheckFailed as exc:
            _fail(f"vs2: {exc}", 1)
        except (ValueError, OSError) as exc:  # OSError: unreadable, permission, disk full
            _fail(f"vs2: error: {exc}", 2)
        except ModuleNotFoundError as exc:
            _missing_extra(fn.__name__, exc)
        except KeyboardInterrupt:
            _fail("vs2: interrupted", 130)
        except ImportError as exc:  # Ctrl-C inside a C extension's init surfaces as this
            if not isinstance(exc.__context__ or exc.__cause__, KeyboardInterrupt):
                _internal(exc)
            _fail("vs2: interrupted", 130)
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise  # typer's own control flow: exit codes and usage errors
        except Exception as exc:  # noqa: BLE001 - never a traceback, unless asked for
            _internal(exc)
    return wrapper


def _internal(exc: Exception) -> None:
    if os.environ.get("VS2_DEBUG"):
        raise exc
    _fail(f"vs2: internal error ({type(exc).__name__}): {exc} (VS2_DEBUG=1 shows the "
          "traceback; please report it)", EXIT_INTERNAL)


def _missing_extra(command: str, exc: ModuleNotFoundError) -> None:
    """A runtime-only install running a torch-side command: say which extra to install."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        _internal(exc)
    _fail(f"vs2 {command.removesuffix('_command')}: needs the {top} package, which this install "
          f"lacks: pip install 'vs2-export[{EXTRAS[top]}]'", 2)


def _printable(text: str) -> str:
    """File names that are not UTF-8 arrive as lone surrogates, which a strict stdout cannot
    encode: show their bytes as \\xNN instead of crashing."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fail(message: str, code: int) -> None:
    """One line on stderr (messages from libraries may hold newlines), then exit `code`."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.echo(_printable(line), err=True)
    raise typer.Exit(code)


def _emit(data: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else _printable(text))


MODEL_HELP = "open_clip architecture (ViT-B-32, ViT-B-16, ViT-L-14), or vs2-demo (the bundled demo)"
PRETRAINED_HELP = "pretrained tag (openai, laion2b_s34b_b79k), a checkpoint file, or 'none'"
JSON_HELP = "print the result as JSON (for CI)"
RUN_HELP = ("required: the run folder holding exports/NAME.json, the sources `vs2 export` recorded (or that "
            "file); reports go to RUN/reports/")
REPORT_HELP = "JSON report file (default: RUN/reports/NAME.COMMAND[.PRECISION].json)"
PRECISION_HELP = ("variant: fp32 (model.onnx), fp16 or int8, or bf16 (model.onnx computed in bf16 by "
                  "--provider openvino); or name the model file instead")
EVAL_PRECISION_HELP = ("variant: fp32 (model.onnx), fp16 or int8; or name the model file instead "
                       "(bf16: `vs2 verify` and `vs2 bench` measure it)")
PROVIDER_HELP = "cpu, cuda (ONNX Runtime) or openvino"


def _announce(line: str) -> None:
    """The first line of a torch-side command: which model it works with."""
    typer.echo(f"vs2: {line}", err=True)


GATE_HELP = ("gate criterion: rel_err (||h~ - h||^2 / ||h||^2, default), fvu (the paper's) or err "
             "(raw ||h~ - h||^2); tau is calibrated for it and it is built into the graph")


@cli_command()
def extract(images: Path = typer.Option(..., help="folder of images (recursive)"),
            out: Path = typer.Option(..., help="activation store folder to write"),
            model: str = typer.Option(..., help=MODEL_HELP + "; required"),
            pretrained: str | None = typer.Option(None, help=PRETRAINED_HELP),
            batch_size: int = typer.Option(default(ExtractConfig, "batch_size")),
            shard_size: int = typer.Option(default(ExtractConfig, "shard_size")),
            device: str = typer.Option(default(ExtractConfig, "device")),
            force: bool = typer.Option(False, help="overwrite an existing store"),
            append: bool = typer.Option(default(ExtractConfig, "append"),
                                        help="add only images the store lacks (also resumes)"),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """images -> CLS activations of the last block (before ln_post), sharded on disk.
    Data-parallel: torchrun --nproc-per-node N --no-python vs2 extract ..."""
    from .clip import describe
    from .distributed import torch_device
    from .extract import extract as run
    check_output(out, "--out", (images,), file=False)
    spec = ModelSpec(model, pretrained)
    _announce(describe(spec.name, spec.source))
    torch_device(device)  # a GPU asked for where none is: one line now, not a torch assert later
    report = run(ExtractConfig(images=images, out=out, model=spec, batch_size=batch_size,
                               shard_size=shard_size, device=device, force=force, append=append))
    _emit(report.to_json(), as_json, report.format())


def _t(name: str):
    """The TrainConfig default of `name` (config.py is the only home of defaults)."""
    return default(TrainConfig, name)


def _store_model(acts: Path) -> None:
    """Announce the model of an activation store (train, calibrate) before any work."""
    from .clip import describe
    from .store import ActivationStore
    meta = ActivationStore(acts).meta
    _announce(describe(meta.model_id, meta.model_source, meta.weights_sha256)
              + f" (activations {acts})")


@cli_command()
def train(acts: Path = typer.Option(..., help="activation store folder from `vs2 extract`"),
          out: Path = typer.Option(..., help="SAE folder to write"),
          k: int = typer.Option(_t("k"), help="active latents per input"),
          expansion: int = typer.Option(_t("expansion"), help="n = expansion * d"),
          epochs: int = typer.Option(_t("epochs")),
          batch_size: int = typer.Option(_t("batch_size"), help="global batch (all ranks)"),
          lr: float | None = typer.Option(None, help="default: 2e-4 / sqrt(n / 2^14)"),
          warmup_frac: float = typer.Option(_t("warmup_frac"), help="linear warm-up share"),
          decay_frac: float = typer.Option(_t("decay_frac"), help="final linear-decay share"),
          aux_k: int | None = typer.Option(None, help="AuxK latents; default min(n, d/2)"),
          aux_coef: float = typer.Option(_t("aux_coef"), help="AuxK weight (0 = off)"),
          dead_after: int = typer.Option(_t("dead_after"), help="dead after this many samples"),
          grad_clip: float = typer.Option(_t("grad_clip"), help="max grad norm (0 = off)"),
          b_pre_init: str = typer.Option(_t("b_pre_init"), help="median (geometric) or mean"),
          tied_init: bool = typer.Option(_t("tied_init"), help="W_dec starts as W_enc^T"),
          unit_decoder: bool = typer.Option(_t("unit_decoder"), help="unit-norm decoder rows"),
          shuffle_buffer: int = typer.Option(_t("shuffle_buffer"), help="rows shuffled together"),
          labels: bool = typer.Option(_t("labels"), help="PASS: class = image's first folder"),
          pass_coef: float = typer.Option(_t("pass_coef"), help="PASS loss weight"),
          seed: int = typer.Option(_t("seed")),
          device: str = typer.Option(_t("device")),
          log_every: int = typer.Option(_t("log_every"), help="steps between metric records"),
          checkpoint_every: int = typer.Option(_t("checkpoint_every"), help="0 = none"),
          resume: bool = typer.Option(False, help="continue from OUT/checkpoint"),
          import_sae: Path | None = typer.Option(
              None, help="do not train: import this sparsify folder (cfg.json + sae.safetensors)"),
          force: bool = typer.Option(False, help="overwrite an existing SAE"),
          as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """activations -> top-k SAE (cfg.json + sae.safetensors + train_report.json, metrics.jsonl,
    curves.png). Data-parallel: torchrun --nproc-per-node N --no-python vs2 train ..."""
    check_output(out, "--out", (acts, import_sae), file=False)
    _store_model(acts)
    if import_sae is not None:
        from .train.import_sae import import_sae as run_import
        result = run_import(import_sae, acts, out, force)
        _emit(result, as_json, f"imported {import_sae} into {out}: median FVU "
              f"{result['fvu_per_sample']['median']:.4f} on {acts}")
        return
    from .distributed import torch_device
    from .train import train_sae
    torch_device(device)  # a GPU asked for where none is: one line now, not a torch assert later
    result = train_sae(TrainConfig(
        acts, out, expansion=expansion, k=k, batch_size=batch_size, epochs=epochs, lr=lr,
        warmup_frac=warmup_frac, aux_k=aux_k, aux_coef=aux_coef, dead_after=dead_after,
        grad_clip=grad_clip, seed=seed, device=device, force=force, b_pre_init=b_pre_init,
        tied_init=tied_init, unit_decoder=unit_decoder, decay_frac=decay_frac,
        shuffle_buffer=shuffle_buffer, log_every=log_every, checkpoint_every=checkpoint_every,
        resume=resume, labels=labels, pass_coef=pass_coef))
    if result is not None:  # None on the other ranks of torchrun
        typer.echo(result.to_json() if as_json else _printable(result.format()))


@cli_command()
def calibrate(acts: Path = typer.Option(..., help="the SAE's training activations (a folder)"),
              sae: Path = typer.Option(..., help="SAE folder"),
              out: Path = typer.Option(..., help="steering.json file to write"),
              gamma: float = typer.Option(default(CalibrateConfig, "gamma")),
              lambda_: float = typer.Option(default(CalibrateConfig, "lambda_"), "--lambda"),
              quantile: float = typer.Option(default(CalibrateConfig, "quantile"),
                                             help="gate: tau = this quantile of the training "
                                                  "gate scores"),
              gate: str = typer.Option(default(CalibrateConfig, "gate"), help=GATE_HELP),
              force: bool = typer.Option(False, help="overwrite an existing steering.json"),
              as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """SAE + activations -> steering.json (gamma, lambda, gate criterion, q, tau)."""
    from .calibrate import calibrate as run
    check_output(out, "--out", (acts, sae))
    _store_model(acts)
    params = run(CalibrateConfig(acts=acts, sae=sae, out=out, gamma=gamma, lambda_=lambda_,
                                 quantile=quantile, force=force, gate=gate))
    _emit(params.to_dict(), as_json, f"steering in {out}: gamma {params.gamma}, lambda "
          f"{params.lambda_}, gate {params.gate} tau {params.tau:.4g} (q={params.quantile}; "
          f"{100 * params.gate_stats['pass_rate']:.1f}% of the training activations pass)")


@cli_command()
def export(sae: Path = typer.Option(..., help="SAE folder"),
           steering: Path = typer.Option(..., help="steering.json file from `vs2 calibrate`"),
           out: Path = typer.Option(..., help="export folder (exported/NAME): what ships"),
           model: str | None = typer.Option(
               None, help=MODEL_HELP + "; default: the model the SAE's activations came from"),
           pretrained: str | None = typer.Option(None, help=PRETRAINED_HELP),
           classes: Path | None = typer.Option(None, help="class names file, one per line"),
           template: list[str] = typer.Option(list(DEFAULT_TEMPLATES),
                                              help="prompt template with one {} (repeatable)"),
           opset: int = typer.Option(default(ExportConfig, "opset")),
           force: bool = typer.Option(False, help="overwrite an existing export"),
           precision: list[str] = typer.Option(list(default(ExportConfig, "precisions")),
                                               help="fp32, fp16 (CUDA), int8 (CPU); repeatable"),
           int8_mode: str = typer.Option(default(ExportConfig, "int8_mode"),
                                         help="static (calibrated QDQ) or dynamic (fallback)"),
           int8_recheck: str = typer.Option(
               default(ExportConfig, "int8_recheck"),
               help="int8: re-run in fp32, inside the int8 graph, the images whose int8 top-2 logit "
                    "margin is below this: auto (chosen on the calibration images), off (the plain, "
                    "smaller int8 file) or a margin in logits"),
           int8_recheck_gate: float = typer.Option(
               default(ExportConfig, "int8_recheck_gate"),
               help="int8: also re-run the images whose gate score is within this of tau (0: off)"),
           calibration: Path | None = typer.Option(
               None, help="folder of in-domain images for int8 static calibration; default: the "
                          "images the SAE's activation store was made from"),
           calibration_max: int = typer.Option(default(ExportConfig, "calibration_max"),
                                               help="calibrate on at most this many images"),
           cls_only: bool = typer.Option(default(ExportConfig, "cls_only"),
                                         help="last block computes the CLS query only"),
           pixel_input: str = typer.Option(
               default(ExportConfig, "pixel_input"),
               help="graph pixel input: pixel_values (float32 [B,3,S,S], normalised), pixels_uint8 "
                    "(uint8 [B,S,S,3], resized and cropped) or image_rgb (uint8 [H,W,3], any size: "
                    "the graph resizes, crops and normalises; the portable choice)"),
           run_folder: Path | None = typer.Option(
               None, "--run", help="run folder for the export record and checks (folder); "
                                   "default: the folder of --steering"),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """CLIP + SAE + steering (+ zero-shot head) -> ONE ONNX graph per precision, with metadata;
    the sources it used are recorded in the run folder for `vs2 verify`."""
    from .clip import describe
    from .export import export as run
    from .export import resolve
    from .runtime.contract import model_path, record_path
    _pretrained_needs_model(model, pretrained)
    cfg = ExportConfig(sae=sae, steering=steering, out=out,
                       model=model and ModelSpec(model, pretrained), classes=classes,
                       templates=tuple(template), opset=opset, force=force,
                       precisions=tuple(precision), int8_mode=int8_mode, int8_recheck=int8_recheck,
                       int8_recheck_gate=int8_recheck_gate, calibration=calibration,
                       calibration_max=calibration_max, cls_only=cls_only,
                       pixel_input=pixel_input, run=run_folder)
    resolved = resolve(cfg)
    _announce(describe(resolved.model.name, resolved.model.source))
    manifest = run(cfg)
    _emit(json.loads(manifest.to_json()), as_json, "\n".join(
        [f"exported {model_path(out, p)}" for p in cfg.precisions]
        + [f"sources recorded in {record_path(resolved.run, Path(out).name)}: "
           f"vs2 verify {out} --run {resolved.run}"]))


def _pretrained_needs_model(model: str | None, pretrained: str | None) -> None:
    """--pretrained without --model would be dropped silently (the recorded model is used)."""
    if pretrained is not None and model is None:
        raise typer.BadParameter("applies with --model only (without it, the recorded or the "
                                 "SAE's model and weights are used); pass --model too",
                                 param_hint="'--pretrained'")


@cli_command()
def verify(exported: Path = typer.Argument(..., help="export folder, or one model file in it"),
           run_folder: Path | None = typer.Option(None, "--run", help=RUN_HELP),
           images: Path | None = typer.Option(
               None, help="folder of images to compare on; default: the images the SAE's "
                          "activation store was made from"),
           sae: Path | None = typer.Option(None, help="SAE folder, if moved since the export"),
           steering: Path | None = typer.Option(None, help="steering.json file, if moved"),
           model: str | None = typer.Option(None, help=MODEL_HELP + "; default: recorded"),
           pretrained: str | None = typer.Option(None, help=PRETRAINED_HELP),
           batch_size: int = typer.Option(default(VerifyConfig, "batch_size")),
           max_images: int = typer.Option(default(VerifyConfig, "max_images")),
           provider: str = typer.Option(default(VerifyConfig, "provider"), help=PROVIDER_HELP),
           report: Path | None = typer.Option(None, help=REPORT_HELP),
           precision: str | None = typer.Option(None, help=PRECISION_HELP),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """PyTorch reference (rebuilt from the recorded sources) vs ONNX Runtime on the same
    images; exit 1 on any failed check, naming the checks and the images."""
    from .verify import verify as run
    _pretrained_needs_model(model, pretrained)
    cfg = VerifyConfig(exported, run_folder, images, model and ModelSpec(model, pretrained), sae,
                       steering, batch_size, max_images, provider, report, precision)
    try:
        result = run(cfg)
    except CheckFailed as exc:  # the report first (stdout, JSON or lines), then the verdict
        if exc.report is not None:
            typer.echo(exc.report.to_json() if as_json else _printable(exc.report.format()))
        raise
    typer.echo(result.to_json() if as_json else _printable(result.format()))


@cli_command()
def bench(exported: Path = typer.Argument(..., help="export folder (read only)"),
          run_folder: Path | None = typer.Option(None, "--run", help=RUN_HELP),
          batch: list[int] = typer.Option(list(default(BenchConfig, "batches")),
                                          help="batch size, 1 to 4096 (repeatable)"),
          runs: int = typer.Option(default(BenchConfig, "runs"), help="timed rounds"),
          warmup: int = typer.Option(default(BenchConfig, "warmup"), help="untimed rounds"),
          threads: int | None = typer.Option(None, help="threads for every backend; default all cores"),
          provider: str = typer.Option(default(BenchConfig, "provider"), help="cpu or cuda (ORT)"),
          openvino: bool = typer.Option(default(BenchConfig, "openvino"),
                                        help="OpenVINO rows too, when installed (cpu)"),
          ablations: bool = typer.Option(False, help="also time the graph-saving and tuning ablations"),
          images: Path | None = typer.Option(None, help="pixels from these images, not random"),
          report: Path | None = typer.Option(None, help=REPORT_HELP + "; the chart goes beside it"),
          as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Every backend and precision plus the baselines, timed interleaved in one run."""
    from .bench import bench as run
    result = run(BenchConfig(exported=exported, batches=tuple(batch), runs=runs, warmup=warmup,
                             threads=threads, provider=provider, openvino=openvino,
                             ablations=ablations, report=report, run=run_folder, images=images))
    typer.echo(result.to_json() if as_json else _printable(result.format()))


@cli_command()
def classify(exported: Path = typer.Argument(..., help="export folder, or one model file in it"),
             images: list[Path] = typer.Argument(..., help="image files or folders of images"),
             top: int = typer.Option(3, help="classes shown per image"),
             precision: str | None = typer.Option(None, help=PRECISION_HELP),
             classes: str | None = typer.Option(
                 None, help="classify into these names instead (comma-separated; text.onnx, no "
                            "re-export)"),
             template: list[str] | None = typer.Option(
                 None, help="prompt template with one {} for --classes (repeatable; default: the "
                            "export's)"),
             provider: str = typer.Option("cpu", help=PROVIDER_HELP),
             as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Classify images with an exported model (torch-free runtime)."""
    from .classify import classify as run
    names = None if classes is None else [c.strip() for c in classes.split(",")]
    result = run(exported, images, top, provider, precision, names, template or None)
    _emit(result.to_json(), as_json, result.format())


@cli_command("eval")
def eval_command(exported: Path = typer.Argument(..., help="export folder with classes, or a model file in it"),
                 images: Path = typer.Option(..., help="labeled folder: one subfolder per class"),
                 batch_size: int = typer.Option(default(EvalConfig, "batch_size")),
                 precision: str | None = typer.Option(None, help=EVAL_PRECISION_HELP),
                 provider: str = typer.Option("cpu", help=PROVIDER_HELP),
                 report: Path | None = typer.Option(
                     None, help="JSON report file (default: RUN/reports/NAME.eval.json with "
                                "--run, else none)"),
                 run_folder: Path | None = typer.Option(None, "--run", help="run folder for the "
                                                        "default report path"),
                 bootstrap: int = typer.Option(default(EvalConfig, "bootstrap"),
                                               help="paired bootstrap resamples"),
                 seed: int = typer.Option(default(EvalConfig, "seed"), min=0,
                                          help="bootstrap seed (>= 0)"),
                 as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Top-1 with and without steering from the same graph, with the evidence for the change
    (wins, losses, exact McNemar p, paired bootstrap interval), per class and overall."""
    from .evaluate import evaluate
    result = evaluate(EvalConfig(exported=exported, images=images, batch_size=batch_size,
                                 provider=provider, report=report, run=run_folder,
                                 precision=precision, bootstrap=bootstrap, seed=seed))
    _emit(result.to_dict(), as_json, result.format())


@cli_command()
def web(exported: Path = typer.Argument(..., help="export folder"),
        out: Path = typer.Option(..., help="site folder to write (any static server can serve it)"),
        ort_dist: Path | None = typer.Option(
            None, help="onnxruntime-web's dist folder; default: node_modules/onnxruntime-web/dist "
                       "of this checkout"),
        precision: str = typer.Option("fp32", help="variant the page runs: fp32 or int8 (~3x smaller if exported "
                                             "with --int8-recheck off)"),
        force: bool = typer.Option(False, help="refresh an existing, non-empty --out folder"),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Export folder -> a static web page that runs the model in the browser (onnxruntime-web)."""
    from .web.site import build_site, default_ort_dist
    site = build_site(exported, out, ort_dist or default_ort_dist(), precision, force)
    _emit({"site": str(site)}, as_json, f"site in {site}: serve it (python -m http.server -d "
          f"{site}) and open http://localhost:8000/")


@cli_command()
def quickstart(workdir: Path | None = typer.Option(None, help="default: a temporary folder"),
               n_unlabeled: int = typer.Option(default(QuickstartConfig, "n_unlabeled")),
               epochs: int = typer.Option(default(QuickstartConfig, "epochs")),
               n_val_per_class: int = typer.Option(default(QuickstartConfig, "n_val_per_class"),
                                                   help="labeled target images per class (eval)"),
               gate: str = typer.Option(default(QuickstartConfig, "gate"), help=GATE_HELP),
               as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """The whole flow on the embedded demo model, offline: data, extract, train, calibrate,
    export, verify, eval, classify."""
    from .quickstart import run_quickstart
    result = run_quickstart(QuickstartConfig(workdir=workdir, n_unlabeled=n_unlabeled,
                                             epochs=epochs, n_val_per_class=n_val_per_class,
                                             gate=gate))
    _emit(result.to_json(), as_json, result.format())


@cli_command()
def gallery(exported: Path = typer.Argument(..., help="export folder"),
            images: Path = typer.Option(..., help="images to analyse (class subfolders = labels)"),
            out: Path = typer.Option(..., help="folder for the page, its data and images"),
            latents: int = typer.Option(default(GalleryConfig, "latents"),
                                        help="most used latents shown"),
            per_latent: int = typer.Option(default(GalleryConfig, "per_latent"),
                                           help="top-activating images per latent"),
            max_images: int = typer.Option(default(GalleryConfig, "max_images")),
            images_shown: int = typer.Option(default(GalleryConfig, "images_shown"),
                                             help="images shown with the latents that moved them"),
            force: bool = typer.Option(False, help="overwrite an existing page"),
            run_folder: Path | None = typer.Option(None, "--run", help=RUN_HELP),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """A static HTML page of the latents VS2 steers with: top images, nearest class prompts, and
    per image the latents that moved its logits (PyTorch reference, like verify)."""
    from .gallery import gallery as run
    from .runtime import contract
    data = run(GalleryConfig(exported=exported, images=images, out=out, latents=latents,
                             per_latent=per_latent, max_images=max_images,
                             images_shown=images_shown, force=force, run=run_folder))
    _emit(data, as_json, f"gallery of {len(data['latents'])} latents over {data['n_images']} "
          f"images: {out / contract.GALLERY_PAGE}")


@cli_command()
def doctor(require_gpu: bool = typer.Option(False, help="an unusable CUDA provider is a failure"),
           demo: bool = typer.Option(True, help="check that the demo model loads and runs"),
           model: Path | None = typer.Option(None, help="an export folder: time every backend "
                                             "and precision that runs it here, name the fastest"),
           rounds: int = typer.Option(10, min=1, help="timed rounds with --model (interleaved)"),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Versions, usable ONNX Runtime providers, threads, the demo model; with --model, the
    fastest backend for that export on this machine; exit 1 if unhealthy."""
    from .doctor import diagnose, format_report
    report = diagnose(require_gpu=require_gpu, demo=demo, model=model, rounds=rounds)
    _emit(report, as_json, format_report(report))
    if not report["healthy"]:
        raise typer.Exit(1)


def main() -> None:
    # Ctrl-C stays with _on_ctrl_c: a command's body gets KeyboardInterrupt (_command_body), and
    # the rest of the run, typer's parsing and the shutdown included, exits 130 at once.
    _take_ctrl_c()
    app()


if __name__ == "__main__":
    sys.exit(main())
