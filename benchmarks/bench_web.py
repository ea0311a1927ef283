"""Browser (onnxruntime-web, headless Chromium) vs native ONNX Runtime (Python), same machine, same
export, same image: model load, first run, warm runs. Needs `make js-setup` (node_modules, Chromium).

    python benchmarks/bench_web.py EXPORTED [--precision fp32|int8] [--runs 10] [--isolated]

The export must take image_rgb (the page feeds decoded images of any size). Browser: `vs2 web`'s
site served on 127.0.0.1 by tests/js/browser.mjs; load = the page's loadModel (manifest + graph
fetch + session creation), first run = the page's first model.run (decode excluded), warm =
model.run straight through vs2.js. "CPU ms" per warm run (Chromium's processes from /proc; this
process's time.process_time in Python) holds up where other jobs share the CPUs; wall times do not. Python: a fresh
Vs2Session (load), then session.run on the same decoded pixels; once with ORT's default threads,
once with 1 (the page without cross-origin isolation runs 1 wasm thread). "page ready" = from
navigation to the model loaded: the page, onnxruntime-web's module and wasm, the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vs2_export.reference import photo_like
from vs2_export.runtime import Vs2Session, contract
from vs2_export.web.site import build_site, default_ort_dist

ROOT = Path(__file__).resolve().parent.parent


def browser(exported: Path, precision: str, image: Path, runs: int, isolated: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="vs2-web-") as tmp:
        site = build_site(exported, Path(tmp) / "site", default_ort_dist(), precision)
        out = Path(tmp) / "out.json"
        args = ["node", "tests/js/browser.mjs", "--site", str(site), "--out", str(out), "--images",
                str(image), "--warm-runs", str(runs), "--timeout", "600000"]
        subprocess.run(args + (["--isolated"] if isolated else []), cwd=ROOT, check=True, timeout=900)
        result = json.loads(out.read_text())
    if result.get("error") or result["images"][0].get("error"):
        raise SystemExit(f"browser run failed: {result.get('error') or result['images'][0]['error']}")
    t = result["timings"]
    return {"page_ready_ms": t["page_ready_ms"], "load_ms": t["page"]["load_ms"],
            "first_run_ms": t["page"]["first_run_ms"],
            "warm_ms": float(np.median(t["warm_run_ms"])), "warm_min_ms": float(np.min(t["warm_run_ms"])),
            "warm_cpu_ms": t.get("warm_cpu_ms"),
            "threads": result["wasm_threads"],
            "chromium": result["versions"]["chromium"]}


def native(exported: Path, precision: str, pixels: np.ndarray, runs: int, threads: int | None) -> dict:
    t0 = time.perf_counter()
    session = Vs2Session(contract.model_path(exported, precision), threads=threads)
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    session.run(pixels)
    first = time.perf_counter() - t1
    warm = []
    cpu0 = time.process_time()  # every thread of this process: robust to other jobs on the CPUs
    for _ in range(runs):
        t = time.perf_counter()
        session.run(pixels)
        warm.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / runs
    return {"page_ready_ms": None, "load_ms": 1e3 * load, "first_run_ms": 1e3 * first,
            "warm_ms": 1e3 * float(np.median(warm)), "warm_min_ms": 1e3 * float(np.min(warm)),
            "warm_cpu_ms": 1e3 * cpu,
            "threads": threads or "ORT default"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exported", type=Path)
    parser.add_argument("--precision", default="fp32", choices=contract.PRECISIONS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--isolated", action="store_true", help="COOP/COEP: several wasm threads")
    args = parser.parse_args()
    manifest = Vs2Session(args.exported).manifest
    if manifest.pixel_input != contract.IMAGE_RGB:
        raise SystemExit(f"{args.exported}: export with --pixel-input image_rgb for the page")
    rgb = photo_like(480, 640, seed=0)  # a 640 x 480 photo: the page decodes, the graph resizes
    with tempfile.TemporaryDirectory(prefix="vs2-web-img-") as tmp:
        image = Path(tmp) / "photo.png"
        Image.fromarray(rgb).save(image)
        rows = {"browser (onnxruntime-web, wasm)": browser(args.exported, args.precision, image, args.runs,
                                                           args.isolated)}
    rows["python (onnxruntime, native)"] = native(args.exported, args.precision, rgb, args.runs, None)
    rows["python (onnxruntime, native, 1 thread)"] = native(args.exported, args.precision, rgb, args.runs, 1)
    print(f"{manifest.model.id} {args.precision} ({manifest.pixel_input}, 640x480 photo), {args.runs} "
          f"warm runs; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("| runtime | threads | page ready ms | model load ms | first run ms | warm run ms, median (min) "
          "| warm run CPU ms |\n|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ready = "-" if r["page_ready_ms"] is None else f"{r['page_ready_ms']:.0f}"
        print(f"| {name} | {r['threads']} | {ready} | {r['load_ms']:.0f} | {r['first_run_ms']:.1f} | "
              f"{r['warm_ms']:.1f} ({r['warm_min_ms']:.1f}) | {r['warm_cpu_ms']:.1f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
