"""Data parallelism on torch.distributed, launched by torchrun (gloo on CPUs, NCCL on GPUs).

One process per device; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous. Without
torchrun (WORLD_SIZE unset or 1) everything here is a no-op, so the single-process path and the
data-parallel path are the same code.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import Vs2Error


@dataclass(frozen=True)
class Comm:
    """This process's place in the job."""

    rank: int = 0
    """Global rank: 0 writes the files."""
    world: int = 1
    """Number of processes."""

    @property
    def main(self) -> bool:
        """True on the one process that writes outputs and logs progress."""
        return self.rank == 0

    def part(self, total: int) -> slice:
        """This rank's contiguous part of `total` items (np.array_split sizes)."""
        base, extra = divmod(total, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list:
        """Every rank's `obj` (small, JSON-like data only), in rank order."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (e.g. a checkpoint file only rank 0 can read)."""
        if self.world == 1:
            return data or b""
        size = torch.tensor([len(data or b"")], dtype=torch.long)
        dist.broadcast(size, 0)
        buf = torch.zeros(int(size), dtype=torch.uint8)
        if self.main:
            buf.copy_(torch.frombuffer(bytearray(data or b""), dtype=torch.uint8))
        dist.broadcast(buf, 0)
        return buf.numpy().tobytes()


def load_bytes(data: bytes) -> dict:
    """torch.load of broadcast bytes, tensors and plain data only (never arbitrary pickles)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@contextlib.contextmanager
def session(device: str) -> Iterator[tuple[Comm, str]]:
    """(Comm, this rank's device): joins the torchrun job when there is one, leaves it after."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Comm(), device
        return
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        try:
            dist.init_process_group("nccl" if cuda else "gloo")
        except (RuntimeError, ValueError) as exc:
            raise Vs2Error(f"torch.distributed: expected a torchrun rendezvous "
                           f"(MASTER_ADDR, MASTER_PORT, RANK), got: {exc}") from None
    try:
        yield Comm(dist.get_rank(), dist.get_world_size()), device
    finally:
        if created:
            dist.destroy_process_group()


def torch_device(name: str):
    """A --device value -> torch.device, or a Vs2Error saying which device exists (no silent
    fallback, and no torch AssertionError 'not compiled with CUDA' deep in a run)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise Vs2Error(f"device: expected cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise Vs2Error(f"device: expected cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise Vs2Error(f"device {name}: expected a CUDA GPU, got none usable by torch "
                       f"{torch.__version__} (built for CUDA {torch.version.cuda}); use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise Vs2Error(f"device {name}: expected an index below {torch.cuda.device_count()} "
                       f"(GPUs present), got {device.index}")
    return device
