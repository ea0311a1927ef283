"""Export, verify and classify open_clip architectures with random weights, one after another;
print each one's files, wall time and peak memory (issue 13, the README's architecture table).

    python benchmarks/bench_archs.py OUT ViT-B-32 ViT-B-16 ViT-L-14 ViT-H-14
    python benchmarks/bench_archs.py OUT ViT-H-14 --int8      # fp32 + static int8 (calibrated)

Each step is the real CLI (`python -m vs2_export.cli ...`) in its own process, timed from start
to exit; its peak is that process's ru_maxrss (os.wait4), so one step's memory never hides
another's. The SAE and steering are lean_parts (random, the model's checksum): export and parity
depend on their shapes, not their values. Verify compares 4 demo images (any image is valid input
for parity). Writes OUT/archs.json; times are this machine's under its load at that moment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vs2_export.config import ModelSpec
from vs2_export.demo.data import generate_unlabeled, write_classes
from vs2_export.demo.lean import lean_parts, probe
from vs2_export.runtime import contract

REPO = Path(__file__).resolve().parents[1]


def timed(*args: str | Path, timeout: float | None = None, keep_stdout: bool = False) -> dict:
    """`vs2 ARGS` in a child -> {seconds, peak_gib, rc} (+ stdout when keep_stdout); a failure
    prints its stderr tail and adds it as `error`; past `timeout` seconds the child is killed
    and the row says `timed_out`."""
    argv = [sys.executable, "-m", "vs2_export.cli", *map(str, args)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err)
        expired = threading.Event()

        def expire() -> None:
            # os.kill, not child.kill: Popen's poll() could reap the child before wait4 does.
            expired.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)

        killer = threading.Timer(timeout or 0, expire)
        if timeout:
            killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        rc = child.returncode = os.waitstatus_to_exitcode(status)
        row = {"seconds": round(time.monotonic() - started, 1),
               "peak_gib": round(usage.ru_maxrss / 2**20, 2), "rc": rc}
        if expired.is_set():
            row["timed_out"] = True
        if keep_stdout:
            out.seek(0)
            row["stdout"] = out.read().decode(errors="replace")
        if rc:
            err.seek(0)
            row["error"] = err.read().decode(errors="replace")[-4000:]
            print(row["error"], file=sys.stderr)
    return row


def files_mb(folder: Path) -> dict[str, float]:
    """Every graph (model files, text.onnx) and its sidecar in the export folder -> MB."""
    def graph(name: str) -> bool:
        return contract.precision_of(name) is not None or name == contract.TEXT_MODEL_FILE
    return {p.name: round(p.stat().st_size / 1e6, 1) for p in sorted(folder.iterdir())
            if graph(p.name) or graph(contract.sidecar_of(p.name) or "")}


def bench_arch(name: str, work: Path, int8: bool) -> dict:
    """One architecture: lean parts -> export -> verify (each precision) -> classify."""
    model = ModelSpec(name, "none")
    work.mkdir(parents=True, exist_ok=True)
    width, checksum = probe(model)
    sae, steering = lean_parts(work, model, width, checksum)
    images = generate_unlabeled(work / "images", 4, seed=3)
    out = work / "exported"
    precisions = ["fp32", "int8"] if int8 else ["fp32"]
    options = [a for p in precisions for a in ("--precision", p)]
    options += ["--calibration", str(images)] if int8 else []
    row = {"model": name, "width": width,
           "export": timed("export", "--model", name, "--pretrained", "none", "--sae", sae,
                           "--steering", steering, "--classes", write_classes(work / "classes.txt"),
                           "--out", out, "--force", *options)}
    if row["export"]["rc"]:
        return row
    row["files_mb"] = files_mb(out)
    for precision in precisions:
        row[f"verify_{precision}"] = timed("verify", out, "--run", work, "--images", images,
                                           "--precision", precision, "--batch-size", 4)
        report = contract.report_path(work, out.name, "verify")
        row[f"verify_{precision}"]["verdict"] = json.loads(report.read_text())["verdict"]
    row["classify"] = timed("classify", out, images, "--top", 3)
    return row


def markdown(rows: list[dict]) -> str:
    """The README's table: one line per architecture."""
    lines = ["| model (random weights) | d | model.onnx | model.int8.onnx | text.onnx | export: time, peak "
             "| verify fp32: time, peak, verdict | verify int8 | classify 4 images |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mb, ex = r.get("files_mb", {}), r["export"]
        cells = [r["model"], str(r["width"]), _mb(mb, contract.MODEL_FILE),
                 _mb(mb, contract.model_file("int8")), _mb(mb, contract.TEXT_MODEL_FILE),
                 f"{ex['seconds']:.0f} s, {ex['peak_gib']:.1f} GiB" + ("" if not ex["rc"] else " FAILED")]
        for step in ("verify_fp32", "verify_int8", "classify"):
            got = r.get(step)
            cells.append("-" if got is None else f"{got['seconds']:.0f} s, {got['peak_gib']:.1f} GiB"
                         + (f", {got['verdict']}" if "verdict" in got else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mb(sizes: dict[str, float], name: str) -> str:
    """A graph's size with its sidecar's, marked when it has one."""
    sidecar = contract.sidecar_name(name)
    total = sizes.get(name, 0) + sizes.get(sidecar, 0)
    if not total:
        return "-"
    return f"{total:,.0f} MB" + (" (sidecar)" if sidecar in sizes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("models", nargs="*", help="open_clip architectures, run in this order")
    parser.add_argument("--int8", action="store_true", help="also export and verify static int8")
    parser.add_argument("--table", action="store_true", help="print OUT/archs.json as markdown")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads((args.out / "archs.json").read_text())))
        return
    rows = []
    for name in args.models:
        rows.append(bench_arch(name, args.out / name, args.int8))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "archs.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
