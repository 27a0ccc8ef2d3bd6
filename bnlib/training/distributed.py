"""Run a function on several local CPU processes joined in a gloo process group.

:func:`run_on_processes` spawns the processes, joins them in a :mod:`torch.distributed` group on
the loopback interface (127.0.0.1, a free port), and returns what each one returned. The function
must be importable (defined in a module, not in a notebook) so the new processes can load it.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["free_port", "loopback_interface", "run_on_processes"]

LOOPBACK_HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return sock.getsockname()[1]


def loopback_interface() -> str:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in names if name in ("lo", "lo0")), "lo")


def _process_main(
    rank: int, fn: Callable[..., Any], world_size: int, port: int, out_dir: str, args: tuple,
    backend: str,
) -> None:
    """Body of each spawned process: join the group, run ``fn``, save its result, leave."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface())
    torch.set_num_threads(1)
    dist.init_process_group(
        backend, init_method=f"tcp://{LOOPBACK_HOST}:{port}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_processes(
    fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo"
) -> list[Any]:
    r"""Call ``fn(rank, world_size, *args)`` on ``world_size`` new processes and return the results.

    The processes are started with the ``spawn`` method, use one thread each, and share a gloo
    process group on 127.0.0.1, so ``torch.distributed`` collectives work inside ``fn``. Results
    travel back through :func:`torch.save` files, so they may hold tensors.

    Args:
        fn (callable): a module-level function (it must pickle), called as
            ``fn(rank, world_size, *args)``.
        world_size (int): number of processes, at least 1.
        *args: further arguments for ``fn``; they must pickle.
        backend (str, keyword-only): ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per process).
            Default: ``"gloo"``.

    Returns:
        list: what ``fn`` returned on rank 0, 1, ..., in order.

    Raises:
        ValueError: when ``world_size`` < 1 or ``fn`` is not importable.
        torch.multiprocessing.ProcessRaisedException: when ``fn`` raised in a process.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}.")
    if "<locals>" in fn.__qualname__ or fn.__module__ == "__main__":
        raise ValueError(
            f"{fn.__qualname__} is not importable by a new process; define it at the top level "
            "of a module (not in a notebook or inside another function)."
        )
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_process_main, args=(fn, world_size, free_port(), out_dir, args, backend),
                 nprocs=world_size, join=True)
        return [torch.load(Path(out_dir) / f"{rank}.pt", weights_only=False)
                for rank in range(world_size)]
