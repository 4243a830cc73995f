"""DistributedDataParallel under ``torchrun`` (gloo on CPU, NCCL on CUDA)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .sync_batchnorm import convert_batchnorm


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap_ddp(model: torch.nn.Module, info: DistInfo, device: torch.device, **kwargs):
    """Global batch norm + DistributedDataParallel, so N ranks match one process on the global batch."""
    if not info.enabled:
        return model
    model = convert_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


def sync_grads_without_ddp_forward(model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo):
    """Average gradients over ranks before every ``optimizer.step()`` that no forward through the
    DDP wrapper ``model`` preceded.

    DDP all-reduces gradients only for graphs built by its own forward; the equilibrium methods
    (ide, mpis, spide) run the bare module, so without this each rank would train its own copy.
    Steps after a DDP forward (already averaged by DDP) are left alone. Returns the hook handles,
    or None in one process."""
    if not info.enabled:
        return None
    seen = {"forward": False}

    def on_forward(module, args):
        seen["forward"] = True

    def average(opt, args, kwargs):
        if seen["forward"]:
            seen["forward"] = False
            return
        params = [p for g in opt.param_groups for p in g["params"]]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)      # a gradient on any rank: every rank joins in
        live = [p for p, h in zip(params, has.tolist()) if h]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if live:
            flat = torch.cat([p.grad.reshape(-1) for p in live])
            dist.all_reduce(flat)
            flat /= info.world_size
            i = 0
            for p in live:
                n = p.grad.numel()
                p.grad.copy_(flat[i:i + n].view_as(p.grad))
                i += n

    return model.register_forward_pre_hook(on_forward), optimizer.register_step_pre_hook(average)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather(info: DistInfo, obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (any picklable object); ``[obj]`` in one process."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(dicts: list[dict]) -> dict:
    """Mean over ranks of every numeric entry (nested dicts too) of per-rank step statistics.

    An entry some ranks lack is averaged over the ranks that have it; non-numeric entries are
    rank 0's. With one rank the dict is returned unchanged."""
    if len(dicts) == 1:
        return dicts[0]
    out = {}
    for k, v in dicts[0].items():
        vals = [d[k] for d in dicts if k in d]
        if isinstance(v, dict):
            out[k] = mean_over_ranks([x for x in vals if isinstance(x, dict)])
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            nums = [float(x) for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]
            out[k] = sum(nums) / len(nums)
        else:
            out[k] = v
    for d in dicts[1:]:
        for k, v in d.items():
            if k not in out:
                out[k] = mean_over_ranks([x[k] for x in dicts if k in x]) if isinstance(v, dict) else v
    return out


def global_step(info: DistInfo, loss_sum: float, correct: int, count: int, stats: dict):
    """One training step's record over the global batch: (loss summed over samples, correct, count,
    step statistics averaged over ranks). ``loss_sum`` is the rank's mean loss times its batch size."""
    if not info.enabled:
        return loss_sum, correct, count, stats
    parts = gather(info, (float(loss_sum), int(correct), int(count), stats))
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts),
            mean_over_ranks([p[3] for p in parts]))
