"""Multi-process training on PyTorch's own engine: ``torchrun --nproc_per_node N -m dynprune.train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; this module turns them into a process group (NCCL on CUDA, gloo on
CPU) and offers the few collective helpers the training spine needs. Outside torchrun everything here is a no-op
(world size 1), so the single-process path is the same code.

Data: every rank builds the same global batch from the same seeded generator and keeps its own ``rank::world``
slice, so N ranks at ``--batch-size B`` see exactly the batches of one process at ``B`` (DDP averages the
gradients of the slices = the gradient of the global batch when the loss is a mean).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .base import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, results, plots and wandb."""
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another torchrun process is gone (killed, crashed):
    a network error of the process group, or the backend saying its peer closed the connection. Other errors of
    this process (an NCCL or CUDA fault of its own, a timeout) are not: they keep their traceback."""
    if not launched_by_torchrun() or not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return isinstance(exc, dist.DistNetworkError) or any(p in text for p in ("closed by peer", "reset by peer"))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes; ``SINGLE`` when not launched by torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    if dist.is_initialized():
        return current()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return current()


def current() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend()
    )


def device_for_rank(device: torch.device) -> torch.device:
    """Each rank on its own GPU (cuda:LOCAL_RANK); CPU ranks share the CPU."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class _SumAcrossRanks(torch.autograd.Function):
    """All-reduce (sum) with autograd: the gradient of a sum over ranks is the sum of the ranks' gradients.
    (torch.distributed.nn.functional.all_reduce does the same but is deprecated.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 of the global batch (every rank holds an equal slice), differentiable.

    The autograd all-reduce sums the incoming gradients across ranks in backward; DDP then averages parameter
    gradients over the N ranks, so a loss built on this mean gets exactly the single-process gradient.
    """
    ctx = current()
    if not ctx.enabled:
        return values.mean(dim=0)
    return _SumAcrossRanks.apply(values.sum(dim=0)) / (values.shape[0] * ctx.world_size)


def sum_across_ranks(value: float, device: torch.device) -> float:
    """A Python number summed over ranks (epoch statistics: every rank's share of the global batch)."""
    if not current().enabled:
        return value
    t = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def max_weight_difference(model: torch.nn.Module) -> float:
    """Largest absolute difference between this rank's weights and rank 0's (0 when DDP kept them in sync)."""
    ctx = current()
    if not ctx.enabled:
        return 0.0
    # parameters only: BN running statistics are each rank's own until DDP broadcasts rank 0's at the next step
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    if sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU kernel (drop --sync-bn on CPU)")
