"""Everything a lent GPU machine should check, in one run (issue 11 item 5):

    python benchmarks/gpu_check.py OUT [--work DIR] [--seconds 480]

A GPU is lent to some sessions only, for minutes, so this is one prepared script that records
what ran and what did not rather than stopping at the first failure:
1. the machine: GPU, torch and its CUDA, the CPU's model and flags;
2. `vs2 doctor` (versions, ONNX Runtime's providers, OpenVINO's precisions);
3. extract (ViT-B-32, random weights) on cuda and on cpu, and how far the two stores differ;
4. train the SAE on cuda and on cpu, on the same store;
5. calibrate, then export fp32 + fp16 + int8;
6. verify with --provider cuda (fp32 and fp16): the GPU path when ORT offers CUDA, its one-line
   refusal when it does not; `vs2 classify --provider cuda` (torch-free); `vs2 bench` on cuda;
   ORT on CUDA with IO binding against plain run() (ort_levers);
7. the PyTorch VS2 forward on CUDA in fp32 and fp16 (autocast), ms per image, against CPU;
8. verify on this CPU (fp32, int8; OpenVINO fp32 and bf16), and `vs2 bench` with 2 threads
   (ORT and OpenVINO rows).
Each step is the real CLI in its own process (bench_archs.timed); OUT/gpu.json is rewritten
after every step, so a run cut short still reports what ran (images, stores and graphs go to
--work, not OUT). Steps that would overrun --seconds are skipped and listed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_archs import timed

from vs2_export.bench.run import default_inputs
from vs2_export.config import ModelSpec
from vs2_export.demo.data import generate_unlabeled, write_classes
from vs2_export.doctor import cpu_flags
from vs2_export.runtime import contract
from vs2_export.runtime.providers import create_session
from vs2_export.runtime.timing import time_runs
from vs2_export.store import ActivationStore, store_array

MODEL = ModelSpec("ViT-B-32", "none")
REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What `vs2 doctor` (the next step) does not say: the GPU, torch's CUDA, the CPU model."""
    info: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available(), "cores": os.cpu_count(),
                  "cpu_flags": cpu_flags()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, check=False,
                             timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable: {type(exc).__name__}"
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(line.split(":", 1)[1].strip()
                           for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    return info


def store_diff(a: Path, b: Path) -> dict:
    """Two stores of the same images, in the same order -> min row cosine and max abs
    difference."""
    stores = ActivationStore(a), ActivationStore(b)
    x, y = (np.concatenate(list(s.iter_batches(4096))) for s in stores)
    if x.shape != y.shape or stores[0].images != stores[1].images:
        raise ValueError(f"stores of other images: {a} ({x.shape}) vs {b} ({y.shape})")
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    return {"rows": len(x), "cos_min": float(cos.min()), "max_abs": float(np.abs(x - y).max())}


def big_store(acts: Path, out: Path, rows: int) -> Path:
    """`rows` activations for timing training: the extracted rows tiled, with 1% noise so no
    two rows are the same."""
    store = ActivationStore(acts)
    h = np.concatenate(list(store.iter_batches(4096)))
    rng = np.random.default_rng(0)
    tiled = np.resize(h, (rows, h.shape[1]))
    tiled += 0.01 * h.std() * rng.standard_normal(tiled.shape, dtype=np.float32)
    meta = store.origin
    return store_array(out, tiled, meta["id"], meta["source"], weights_sha256=meta["weights_sha256"])


def torch_forward(work: Path, sae: Path, batches: tuple[int, ...] = (1, 16, 128)) -> dict:
    """The fused PyTorch module (the graph's source) on CUDA in fp32 and fp16 autocast, and on
    the CPU: ms per image (CUDA: median of 20 after 5 warm-ups, timed with events; CPU: median
    of 5 after 3) and the steered embedding's min cosine against CPU fp32."""
    from vs2_export.fused import build_steered_clip
    parts = build_steered_clip(MODEL, sae, work / "steering.json", (), ())
    module, inputs = parts.module, parts.inputs()
    pixels = torch.randn(max(batches), 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cpu = module(pixels[:16], **inputs)[0]
    rows = {"cpu_fp32_b16": _ms_cpu(module, pixels[:16], inputs)}
    if not torch.cuda.is_available():
        return rows
    module = module.cuda()
    gpu_inputs = {k: v.cuda() for k, v in inputs.items()}
    for dtype in (None, torch.float16):
        name = "fp32" if dtype is None else "fp16_autocast"
        for b in batches:
            x = pixels[:b].cuda()
            rows[f"cuda_{name}_b{b}"] = _ms_cuda(module, x, gpu_inputs, dtype)
        with torch.inference_mode(), torch.autocast("cuda", dtype or torch.float32, enabled=dtype is not None):
            got = module(pixels[:16].cuda(), **gpu_inputs)[0].float().cpu()
        rows[f"cuda_{name}_cos_min_vs_cpu"] = float(torch.nn.functional.cosine_similarity(got, cpu).min())
    return rows


def _ms_cpu(module, x, inputs) -> float:
    with torch.inference_mode():
        return round(_median_ms(lambda: module(x, **inputs), 5) / len(x), 3)


def _ms_cuda(module, x, inputs, dtype) -> float:
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype or torch.float32, enabled=dtype is not None):
        for i in range(25):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(x, **inputs)
            end.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(start.elapsed_time(end))
    return round(float(np.median(times)) / len(x), 4)


def ort_levers(exported: Path, batches: tuple[int, ...] = (1, 16, 128), rounds: int = 20,
               device: str = "cuda") -> dict:
    """What the first H100 run left untried: each precision's file on ORT's `device` provider,
    ms per image (median of `rounds` after 3 warm-ups) with plain run() (numpy in and out, what
    Vs2Session does) and with IO binding (the batch already on the device, outputs left
    there). IO binding shows what the host copies cost. device 'cpu' runs the same code on the
    CPU provider (tests)."""
    extra = default_inputs(exported)
    rows = {}
    for precision in ("fp32", "fp16"):
        path = contract.model_path(exported, precision)
        if not path.is_file() or (precision == "fp16" and device == "cpu"):
            continue
        session = create_session(path, device)
        for b in batches:
            shape = (b, *session.get_inputs()[0].shape[1:])
            x = np.random.default_rng(b).standard_normal(shape, np.float32)
            rows[f"{precision}_b{b}"] = _plain_and_bound(session, {contract.PIXEL_VALUES: x, **extra},
                                                         device, rounds)
    return rows


def _plain_and_bound(session, feeds: dict[str, np.ndarray], device: str, rounds: int) -> dict:
    """ms per image of session.run(feeds), and of the same run with every input copied to
    `device` once beforehand and every output left there (IO binding)."""
    import onnxruntime as ort
    names = [o.name for o in session.get_outputs()]
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    for name in names:
        binding.bind_output(name, device)
    b = len(feeds[contract.PIXEL_VALUES])
    return {"run_ms_per_image": _median_ms(lambda: session.run(names, feeds), rounds) / b,
            "iobinding_ms_per_image": _median_ms(lambda: session.run_with_iobinding(binding),
                                                 rounds) / b}


def _median_ms(call, rounds: int) -> float:
    """Median ms of `rounds` calls after 3 warm-ups (bench's time_runs)."""
    return round(1e3 * float(np.median(time_runs(call, rounds, 3))), 4)


class Steps:
    """Runs named steps under a deadline; each result (or error) lands in OUT/gpu.json at once."""

    def __init__(self, out: Path, seconds: float):
        self.out, self.deadline, self.results = out, time.monotonic() + seconds, {}

    def run(self, name: str, budget: float, fn, *args, **kwargs):
        """fn(*args, **kwargs) unless under `budget` seconds are left; a `timeout` argument
        (cli's) is cut to the time left, so no step outlives the deadline."""
        left = self.deadline - time.monotonic()
        if "timeout" in kwargs:
            kwargs["timeout"] = min(kwargs["timeout"], left)
        if left < budget:
            self.results[name] = {"skipped": f"{left:.0f} s left, step needs ~{budget:.0f} s"}
        else:
            started = time.monotonic()
            try:
                self.results[name] = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one failed step must not hide the others
                self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: {time.monotonic() - started:.1f} s", flush=True)
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=1, default=str))
        return self.results[name]


def cli(*args, timeout: float = 300) -> dict:
    """A CLI step; its --json stdout parsed when it printed some."""
    row = timed(*args, timeout=timeout, keep_stdout=True)
    text = row.pop("stdout").strip()
    try:
        row["json"] = json.loads(text) if text else None
    except json.JSONDecodeError:
        row["stdout_tail"] = text[-1500:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="default: OUT/work")
    parser.add_argument("--seconds", type=float, default=480)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--train-rows", type=int, default=131072)
    a = parser.parse_args()
    work = a.work or a.out / "work"
    for folder in (a.out, work):
        folder.mkdir(parents=True, exist_ok=True)
    s = Steps(a.out, a.seconds)
    model = ("--model", MODEL.name, "--pretrained", MODEL.pretrained)
    s.run("machine", 5, machine)
    s.run("doctor", 30, cli, "doctor", "--no-demo", "--json", timeout=60)
    images = work / "images"
    s.run("images", 20, lambda: {"n": len(list(generate_unlabeled(images, a.images, seed=2).glob("*.png")))})
    for dev in ("cuda", "cpu"):
        s.run(f"extract_{dev}", 40, cli, "extract", "--images", images, "--out", work / f"acts-{dev}",
              *model, "--device", dev, "--batch-size", 256 if dev == "cuda" else 64, "--force",
              "--json", timeout=180)
    s.run("extract_cuda_vs_cpu", 10, store_diff, work / "acts-cuda", work / "acts-cpu")
    acts = work / "acts-cuda" if (work / "acts-cuda" / "meta.json").exists() else work / "acts-cpu"
    s.run("train_store", 20, lambda: {"rows": len(ActivationStore(big_store(acts, work / "big", a.train_rows)))})
    for dev in ("cuda", "cpu"):
        s.run(f"train_{dev}", 60, cli, "train", "--acts", work / "big", "--out", work / f"sae-{dev}",
              "--epochs", 2, "--device", dev, "--force", "--json", timeout=240)
    sae = work / "sae-cuda" if (work / "sae-cuda" / "cfg.json").exists() else work / "sae-cpu"
    s.run("calibrate", 30, cli, "calibrate", "--acts", acts, "--sae", sae, "--out",
          work / "steering.json", "--force", "--json", timeout=120)
    exported = work / "exported"
    s.run("export", 90, cli, "export", "--sae", sae, "--steering", work / "steering.json",
          "--out", exported, *model, "--classes", write_classes(work / "classes.txt"),
          "--precision", "fp32", "--precision", "fp16", "--precision", "int8",
          "--calibration", REPO / "calibration", "--run", work, "--force", "--json", timeout=300)
    verify = ("verify", exported, "--run", work, "--max-images", 64, "--json")
    checks = (("cuda", "fp32"), ("cuda", "fp16"), ("cpu", "fp32"), ("cpu", "int8"),
              ("openvino", "fp32"), ("openvino", "bf16"))
    for provider, precision in checks[:2]:
        s.run(f"verify_{provider}_{precision}", 30, cli, *verify, "--provider", provider,
              "--precision", precision, "--report", work / f"verify-{provider}-{precision}.json",
              timeout=180)
    # The torch-free runtime: no torch in the process to have loaded CUDA and cuDNN already.
    s.run("classify_cuda", 20, cli, "classify", exported, images, "--provider", "cuda", "--json",
          timeout=120)
    s.run("bench_cuda", 60, cli, "bench", exported, "--run", work, "--provider", "cuda",
          "--batch", 1, "--batch", 16, "--batch", 128, "--runs", 10,
          "--report", work / "bench-cuda.json", "--json", timeout=180)
    s.run("ort_levers", 60, ort_levers, exported)
    s.run("torch_forward", 40, torch_forward, work, sae)
    for provider, precision in checks[2:]:
        s.run(f"verify_{provider}_{precision}", 30, cli, *verify, "--provider", provider,
              "--precision", precision, "--report", work / f"verify-{provider}-{precision}.json",
              timeout=180)
    s.run("bench_cpu_2threads", 100, cli, "bench", exported, "--run", work, "--threads", 2,
          "--runs", 6, "--warmup", 1, "--openvino", "--report", work / "bench-cpu.json", "--json",
          timeout=240)
    print(json.dumps({k: v.get("rc", "-") if isinstance(v, dict) else "-" for k, v in s.results.items()}))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
