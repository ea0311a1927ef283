"""`vs2`: a thin typer layer over the pipeline functions. The only module that prints.

Exit codes: 0 ok, 1 a check failed (parity), 2 bad input or usage. Never a traceback for
bad input: boundary errors become one line on stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Callable, List, Optional

import typer

from .config import (CalibrateConfig, EvalConfig, ExportConfig, ExtractConfig, ModelSpec,
                     QuickstartConfig, TrainConfig, VerifyConfig, DEFAULT_TEMPLATES, DEMO_MODEL)
from .errors import CheckFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export CLIP with VS2 steering to one ONNX graph; run and verify it.")


def default(cls: type, name: str):
    """The dataclass default of cls.name: config.py is the only home of defaults."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()


def cli_command(name: str | None = None) -> Callable:
    """Register a command; map boundary errors to one stderr line and exit codes 2 / 1."""
    return lambda fn: app.command(name)(_guarded(fn))


def _guarded(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except CheckFailed as exc:
            typer.echo(f"vs2: {exc}", err=True)
            raise typer.Exit(1)
        except (ValueError, FileNotFoundError) as exc:
            typer.echo(f"vs2: error: {exc}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("vs2: interrupted", err=True)
            raise typer.Exit(130)
    return wrapper


def _emit(data: dict, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


MODEL_HELP = "open_clip architecture (ViT-B-32, ViT-B-16, ViT-L-14) or vs2-demo"
PRETRAINED_HELP = "pretrained tag (openai, laion2b_s34b_b79k), a checkpoint file, or 'none'"
JSON_HELP = "print the result as JSON (for CI)"


@cli_command()
def extract(images: Path = typer.Option(..., help="folder of images (recursive)"),
            out: Path = typer.Option(..., help="activation store folder to write"),
            model: str = typer.Option(DEMO_MODEL, help=MODEL_HELP),
            pretrained: Optional[str] = typer.Option(None, help=PRETRAINED_HELP),
            batch_size: int = typer.Option(default(ExtractConfig, "batch_size")),
            shard_size: int = typer.Option(default(ExtractConfig, "shard_size")),
            device: str = typer.Option(default(ExtractConfig, "device")),
            force: bool = typer.Option(False, help="overwrite an existing store"),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """images -> CLS activations of the last block (before ln_post), sharded on disk."""
    from .activations import extract as run
    report = run(ExtractConfig(images, out, ModelSpec(model, pretrained), batch_size, shard_size,
                               device, force))
    _emit({"out": report.out, "count": report.count, "skipped": report.skipped}, as_json,
          f"extracted {report.count} activations into {report.out}"
          + "".join(f"\nskipped {p}: {r}" for p, r in report.skipped))


@cli_command()
def train(acts: Path = typer.Option(..., help="activation store from `vs2 extract`"),
          out: Path = typer.Option(..., help="SAE folder to write"),
          k: int = typer.Option(default(TrainConfig, "k"), help="active latents per input"),
          expansion: int = typer.Option(default(TrainConfig, "expansion"), help="n = expansion*d"),
          epochs: int = typer.Option(default(TrainConfig, "epochs")),
          batch_size: int = typer.Option(default(TrainConfig, "batch_size")),
          lr: Optional[float] = typer.Option(None, help="default: 2e-4 / sqrt(n / 2^14)"),
          seed: int = typer.Option(default(TrainConfig, "seed")),
          device: str = typer.Option(default(TrainConfig, "device")),
          force: bool = typer.Option(False, help="overwrite an existing SAE"),
          as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """activations -> top-k SAE (cfg.json + sae.safetensors + train_report.json)."""
    from .train import train_sae
    report = train_sae(TrainConfig(acts, out, expansion, k, batch_size, epochs, lr, seed=seed,
                                   device=device, force=force))
    report.pop("curve")
    _emit(report, as_json, f"SAE in {out}: FVU {report['fvu']:.4f}, L0 {report['l0']:.1f}, "
          f"dead latents {100 * report['dead_frac']:.1f}%")


@cli_command()
def calibrate(acts: Path = typer.Option(..., help="the SAE's training activations"),
              sae: Path = typer.Option(..., help="SAE folder"),
              out: Path = typer.Option(..., help="steering.json to write"),
              gamma: float = typer.Option(default(CalibrateConfig, "gamma")),
              lam: float = typer.Option(default(CalibrateConfig, "lam"), "--lambda"),
              quantile: float = typer.Option(default(CalibrateConfig, "quantile"),
                                             help="gate: tau = this quantile of training FVU"),
              force: bool = typer.Option(False, help="overwrite an existing steering.json"),
              as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """SAE + activations -> steering.json (gamma, lambda, q, tau)."""
    from .steering import calibrate as run
    params = run(CalibrateConfig(acts, sae, out, gamma, lam, quantile, force))
    _emit(params.to_dict(), as_json, f"steering in {out}: gamma {params.gamma}, lambda "
          f"{params.lam}, tau {params.tau:.4f} (q={params.quantile})")


@cli_command()
def export(sae: Path = typer.Option(..., help="SAE folder"),
           steering: Path = typer.Option(..., help="steering.json"),
           out: Path = typer.Option(..., help="export folder (exported/NAME)"),
           model: str = typer.Option(DEMO_MODEL, help=MODEL_HELP),
           pretrained: Optional[str] = typer.Option(None, help=PRETRAINED_HELP),
           classes: Optional[Path] = typer.Option(None, help="class names, one per line"),
           template: List[str] = typer.Option(list(DEFAULT_TEMPLATES),
                                              help="prompt template with one {} (repeatable)"),
           opset: int = typer.Option(default(ExportConfig, "opset")),
           force: bool = typer.Option(False, help="overwrite an existing export"),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """CLIP + SAE + steering (+ zero-shot head) -> ONE ONNX graph with metadata."""
    from .export import MODEL_FILE, export as run
    manifest = run(ExportConfig(sae, steering, out, ModelSpec(model, pretrained), classes,
                                tuple(template), opset, force))
    _emit(json.loads(manifest.to_json()), as_json, f"exported {out / MODEL_FILE}")


@cli_command()
def verify(exported: Path = typer.Argument(..., help="export folder"),
           images: Path = typer.Option(Path("calibration"), help="images to compare on"),
           batch_size: int = typer.Option(default(VerifyConfig, "batch_size")),
           max_images: int = typer.Option(default(VerifyConfig, "max_images")),
           provider: str = typer.Option(default(VerifyConfig, "provider"), help="cpu or cuda"),
           report: Optional[Path] = typer.Option(None, help="JSON report path"),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """PyTorch reference vs ONNX Runtime on the same images; exit 1 on any failed tolerance."""
    from .parity import verify as run
    result = run(VerifyConfig(exported, images, None, batch_size, max_images, provider, report))
    lines = [f"{c['name']:<32} {c['value']:.6g} (limit {c['limit']:.6g})" for c in result["checks"]]
    _emit(result, as_json, "\n".join(lines) + f"\nparity {result['verdict']} on "
          f"{result['n_images']} images")


@cli_command()
def classify(exported: Path = typer.Argument(..., help="export folder"),
             images: List[Path] = typer.Argument(..., help="image files"),
             top: int = typer.Option(3, help="classes shown per image"),
             provider: str = typer.Option("cpu", help="cpu or cuda"),
             as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Classify images with an exported model (torch-free runtime)."""
    from .evaluate import predictions
    from .runtime.session import Vs2Session
    results = predictions(Vs2Session(exported, provider=provider), images, top)
    _emit(results, as_json, _format_predictions(results))
    if results["skipped"] and not results["predictions"]:
        raise typer.Exit(2)


def _format_predictions(results: dict) -> str:
    lines = []
    for item in results["predictions"]:
        best = ", ".join(f"{label} {100 * p:.1f}%" for label, p in item["top"])
        lines.append(f"{item['path']}: {best}{'' if item['steered'] else '  (gate: plain CLIP)'}")
    lines += [f"skipped {s['path']}: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines)


@cli_command("eval")
def eval_command(exported: Path = typer.Argument(..., help="export folder with classes"),
                 images: Path = typer.Option(..., help="labeled folder: one subfolder per class"),
                 batch_size: int = typer.Option(default(EvalConfig, "batch_size")),
                 provider: str = typer.Option("cpu", help="cpu or cuda"),
                 report: Optional[Path] = typer.Option(None, help="JSON report path"),
                 as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Top-1 accuracy with and without steering, from the same exported graph."""
    from .evaluate import evaluate, format_table
    result = evaluate(EvalConfig(exported, images, batch_size, provider, report))
    _emit(result, as_json, format_table(result))


@cli_command()
def quickstart(workdir: Optional[Path] = typer.Option(None, help="default: a temporary folder"),
               n_unlabeled: int = typer.Option(default(QuickstartConfig, "n_unlabeled")),
               epochs: int = typer.Option(default(QuickstartConfig, "epochs")),
               as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """The whole flow on the embedded demo model, offline: data, extract, train, calibrate,
    export, verify, eval, classify."""
    from .evaluate import format_table
    from .quickstart import run_quickstart
    summary = run_quickstart(QuickstartConfig(workdir, n_unlabeled=n_unlabeled, epochs=epochs))
    _emit(summary, as_json, f"\nparity {summary['parity']['verdict']} "
          f"({summary['parity']['n_images']} images)\n\n{format_table(summary['eval'])}\n\n"
          f"{_format_predictions(summary['classified'])}\n\nall artifacts in {summary['workdir']}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
