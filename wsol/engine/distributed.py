"""torch.distributed helpers; every function is a no-op in a single process.

Launch with ``torchrun --nproc_per_node=N -m wsol train ...``: torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT; :func:`init_distributed` reads them.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks (identity in a single process) and return it."""
    if is_distributed():
        if dist.get_backend() == "nccl" and not tensor.is_cuda:
            on_gpu = tensor.cuda()
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            tensor.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_distributed(device: str = "auto") -> torch.device:
    """Initialize the process group from torchrun's environment, if present.

    Backend: nccl when CUDA is used, gloo otherwise. Returns the device this rank should use.
    """
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        backend = "nccl" if want_cuda else "gloo"
        dist.init_process_group(backend=backend)
    if want_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu" if device == "auto" else device)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer of ``module`` from rank ``src`` to all ranks.

    DistributedDataParallel broadcasts buffers at the start of each forward, so after the last
    training step each rank holds BatchNorm statistics of its own last batch. Evaluation (and
    the checkpoint, written by rank 0) must see one model: call this at the end of an epoch.
    """
    if not is_distributed():
        return
    for buf in module.buffers():
        if dist.get_backend() == "nccl" and not buf.is_cuda:
            tmp = buf.cuda()
            dist.broadcast(tmp, src)
            buf.copy_(tmp.cpu())
        else:
            dist.broadcast(buf, src)
