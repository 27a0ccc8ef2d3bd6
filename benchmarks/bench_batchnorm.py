"""Time forward + backward of torch's BatchNorm against bnlib's two backward modes on CPU.

Usage::

    python benchmarks/bench_batchnorm.py --repeats 3 --threads 1

Each cell is the best (over ``--repeats``) median time of ``layer(x).backward(dy)`` measured with
:class:`torch.utils.benchmark.Timer`; the ratio columns are bnlib / torch, so below 1 is faster.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.benchmark import Timer

from bnlib import BatchNorm1d, BatchNorm2d

SHAPES = [(32, 32), (256, 1024), (64, 64, 28, 28)]
IMPLEMENTATIONS = ("torch", "manual", "autograd")


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run."""

    repeats: int = 3
    threads: int = 1
    min_run_time: float = 0.2
    seed: int = 0


def make_layer(shape: tuple[int, ...], implementation: str) -> nn.Module:
    """The BatchNorm module matching ``shape``'s rank: torch's, or bnlib's with a backward mode."""
    two_d = len(shape) == 4
    if implementation == "torch":
        return (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(shape[1])
    return (BatchNorm2d if two_d else BatchNorm1d)(shape[1], backward=implementation)


def measure(shape: tuple[int, ...], implementation: str, config: BenchConfig) -> float:
    """Seconds per training-mode forward + backward, best median over ``config.repeats``.

    Args:
        shape (tuple[int, ...]): input shape, ``(N, C)`` or ``(N, C, H, W)``.
        implementation (str): ``"torch"``, ``"manual"`` or ``"autograd"``.
        config (BenchConfig): repeats, threads and minimum run time per measurement.
    """
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(shape, generator=generator).requires_grad_()
    dy = torch.randn(shape, generator=generator)
    timer = Timer(
        stmt="layer(x).backward(dy)",
        globals={"layer": make_layer(shape, implementation), "x": x, "dy": dy},
        num_threads=config.threads,
        label="batch norm forward + backward",
        sub_label=str(shape),
        description=implementation,
    )
    timer.timeit(number=3)  # warm-up: allocator and first-call overheads
    medians = [timer.blocked_autorange(min_run_time=config.min_run_time).median
               for _ in range(config.repeats)]
    return min(medians)


def format_table(times: dict[tuple[int, ...], dict[str, float]]) -> str:
    """Render times in microseconds and the ratios bnlib / torch as a fixed-width table."""
    header = (f"{'shape':<18}{'torch us':>11}{'manual us':>11}{'autograd us':>13}"
              f"{'manual/torch':>14}{'autograd/torch':>16}")
    rows = [header, "-" * len(header)]
    for shape, row in times.items():
        us = {name: seconds * 1e6 for name, seconds in row.items()}
        rows.append(
            f"{str(shape):<18}{us['torch']:>11.1f}{us['manual']:>11.1f}{us['autograd']:>13.1f}"
            f"{row['manual'] / row['torch']:>14.2f}{row['autograd'] / row['torch']:>16.2f}"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--min-run-time", type=float, default=0.2,
                        help="seconds per blocked_autorange measurement")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.min_run_time <= 0:
        parser.error("--repeats and --threads must be >= 1 and --min-run-time > 0")
    return BenchConfig(args.repeats, args.threads, args.min_run_time)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    times = {shape: {name: measure(shape, name, config) for name in IMPLEMENTATIONS}
             for shape in SHAPES}
    print(f"torch {torch.__version__}, CPU, {config.threads} thread(s), "
          f"best of {config.repeats} medians")
    print(format_table(times))


if __name__ == "__main__":
    main()
