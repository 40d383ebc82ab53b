"""torch.distributed plumbing: process group set-up from ``torchrun``'s environment, and the few collectives the
engine needs (gradient averaging, gathering per-rank arrays, broadcasting rank 0's decisions).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) every helper is a no-op on one process. Only tensors
cross process boundaries: nothing here pickles.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

if TYPE_CHECKING:
    import torch


@attrs.frozen
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_choice: str) -> Dist:
    """Pick the device and, under ``torchrun``, join the process group (gloo on CPU, NCCL on CUDA)."""
    import torch

    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not torch.distributed.is_initialized():
        # a bounded timeout: a rank that died makes the others fail instead of hanging forever
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                             timeout=datetime.timedelta(minutes=30))
    return Dist(rank=rank, world_size=world, local_rank=local, device=device)


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch

        torch.distributed.barrier()


class DataParallel:
    """The model as the training step calls it under torchrun: ``DistributedDataParallel`` over the model's
    ``forward_batch``, so that gradients are averaged in buckets while the backward pass still runs (frozen
    parameters take no part). ``no_sync()`` wraps the accumulation batches before a step's last one."""

    def __init__(self, model: torch.nn.Module, dist: Dist) -> None:
        import torch

        from norton_core.engine.loop import forward_batch

        class _Batch(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
                return forward_batch(self.inner, batch)

        cuda = dist.device.startswith("cuda")
        # every rank built and loaded the same weights: buffers need no re-broadcast at each forward
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            _Batch(model), device_ids=[dist.local_rank] if cuda else None, broadcast_buffers=False)

    def forward_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        outputs: dict[str, Any] = self.ddp(batch)
        return outputs

    def no_sync(self) -> Any:
        return self.ddp.no_sync()


def all_reduce_mean_grads(params: list[torch.nn.Parameter], dist: Dist) -> None:
    """Average gradients over ranks in one flat buffer: for parameters outside the model (a loss's learnable
    temperature), which :class:`DataParallel` does not see."""
    if not dist.enabled:
        return
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_tensor(values: torch.Tensor, dist: Dist, op: str = "sum") -> torch.Tensor:
    if dist.enabled:
        import torch

        ops = {"sum": torch.distributed.ReduceOp.SUM, "min": torch.distributed.ReduceOp.MIN,
               "max": torch.distributed.ReduceOp.MAX}
        torch.distributed.all_reduce(values, op=ops[op])
    return values


def all_gather_rows(array: np.ndarray, dist: Dist) -> list[np.ndarray]:
    """Gather a (n_r, ...) array from every rank (n_r may differ); returns the per-rank arrays in rank order."""
    if not dist.enabled:
        return [array]
    import torch

    backend_device = "cuda" if dist.device.startswith("cuda") else "cpu"
    local = torch.from_numpy(np.ascontiguousarray(array)).to(backend_device)
    sizes = torch.tensor([local.shape[0]], device=backend_device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(dist.world_size)]
    torch.distributed.all_gather(all_sizes, sizes)
    longest = int(max(int(s) for s in all_sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: local.shape[0]] = local
    out = [torch.zeros_like(padded) for _ in range(dist.world_size)]
    torch.distributed.all_gather(out, padded)
    return [o[: int(n)].cpu().numpy() for o, n in zip(out, all_sizes, strict=True)]


def broadcast_array(array: np.ndarray | None, dist: Dist, dtype: np.dtype = np.dtype(np.int64)) -> np.ndarray:
    """Rank 0's array on every rank (shape is broadcast first, then the data)."""
    if not dist.enabled:
        assert array is not None  # noqa: S101 - internal invariant: rank 0 always passes its array
        return array
    import torch

    backend_device = "cuda" if dist.device.startswith("cuda") else "cpu"
    shape = torch.zeros(8, dtype=torch.int64, device=backend_device)
    if dist.is_main:
        assert array is not None  # noqa: S101
        shape[0] = array.ndim
        shape[1:1 + array.ndim] = torch.tensor(array.shape)
    torch.distributed.broadcast(shape, 0)
    dims = tuple(int(x) for x in shape[1:1 + int(shape[0])])
    if dist.is_main:
        data = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(backend_device)
    else:
        data = torch.zeros(dims, dtype=torch.from_numpy(np.zeros(0, dtype=dtype)).dtype, device=backend_device)
    torch.distributed.broadcast(data, 0)
    return data.cpu().numpy()


def gather_bytes(blob: bytes, dist: Dist) -> list[bytes]:
    """Every rank's bytes (e.g. its RNG state), in rank order, on every rank."""
    if not dist.enabled:
        return [blob]
    parts = all_gather_rows(np.frombuffer(blob, dtype=np.uint8).copy(), dist)
    return [p.tobytes() for p in parts]


def broadcast_bytes(blob: bytes | None, dist: Dist) -> bytes:
    array = np.frombuffer(blob, dtype=np.uint8).copy() if blob is not None else None
    return broadcast_array(array, dist, np.dtype(np.uint8)).tobytes()


def shutdown(dist: Dist) -> None:
    if dist.enabled:
        import torch

        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
