"""Time inference of the book's MLP and CNN on CPU, with BN as a layer and with BN folded away.

Usage::

    python benchmarks/bench_fusion.py --calls 300 --threads 1

Each cell is the 10th percentile of the times of single eval-mode forward passes under
``torch.inference_mode()``; the unfused and fused models are called alternately, so both meet the
same load, and the low percentile keeps the calls that were not interrupted. The ratio column is
unfused / fused, so above 1 means folding made inference faster. Each network is timed with
torch's ``nn.BatchNorm1d/2d`` (what a deployed model has) and with ``bnlib``'s layers, whose Python
module does more per call; folding removes either.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnlib import build_cnn, build_mlp, fuse_bn


@dataclass(frozen=True)
class BenchConfig:
    """Settings of one benchmark run."""

    calls: int = 300
    threads: int = 1
    mlp_batch: int = 256
    cnn_batch: int = 64
    seed: int = 0


def book_models(seed: int) -> dict[str, nn.Module]:
    """The book's models with torch's and with bnlib's BN, in eval mode, by name."""
    models = {}
    for norm in ("torch", "bnlib"):
        models[f"MLP, {norm} BN"] = build_mlp(norm=norm, seed=seed).eval()
        models[f"CNN, {norm} BN"] = build_cnn(norm=norm, seed=seed).eval()
    return models


def inference_seconds(models: list[nn.Module], images: torch.Tensor, calls: int) -> list[float]:
    """Seconds per forward pass of each model on ``images``: the 10th percentile of ``calls``
    single calls, the models called alternately.

    Args:
        models (list of nn.Module): models in eval mode.
        images (Tensor): a batch of shape :math:`(N, 1, 28, 28)`.
        calls (int): calls of each model.
    """
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model(images)  # warm-up: allocator and first-call overheads
        for _ in range(calls):
            for model, model_times in zip(models, times):
                start = time.perf_counter()
                model(images)
                model_times.append(time.perf_counter() - start)
    return [float(np.quantile(model_times, 0.1)) for model_times in times]


def compare_fold(config: BenchConfig) -> dict[str, tuple[float, float]]:
    """For each book model, ``(unfused, fused)`` seconds per forward pass."""
    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    times = {}
    for name, model in book_models(config.seed).items():
        batch = config.cnn_batch if name.startswith("CNN") else config.mlp_batch
        images = torch.rand(batch, 1, 28, 28, generator=generator)
        unfused, fused = inference_seconds([model, fuse_bn(model)], images, config.calls)
        times[name] = (unfused, fused)
    return times


def format_table(times: dict[str, tuple[float, float]], config: BenchConfig) -> str:
    """Render times in microseconds and the speed-up unfused / fused as a fixed-width table."""
    header = f"{'model':<20}{'batch':>7}{'unfused us':>13}{'fused us':>11}{'speed-up':>10}"
    rows = [header, "-" * len(header)]
    for name, (unfused, fused) in times.items():
        batch = config.cnn_batch if name.startswith("CNN") else config.mlp_batch
        rows.append(f"{name:<20}{batch:>7}{unfused * 1e6:>13.1f}{fused * 1e6:>11.1f}"
                    f"{unfused / fused:>10.2f}")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls of each model")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--mlp-batch", type=int, default=256, help="images per MLP forward pass")
    parser.add_argument("--cnn-batch", type=int, default=64, help="images per CNN forward pass")
    args = parser.parse_args(argv)
    if min(args.calls, args.threads, args.mlp_batch, args.cnn_batch) < 1:
        parser.error("--calls, --threads and the batch sizes must be >= 1")
    return BenchConfig(args.calls, args.threads, args.mlp_batch, args.cnn_batch)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    times = compare_fold(config)
    print(f"torch {torch.__version__}, CPU, {config.threads} thread(s), 10th percentile of "
          f"{config.calls} alternating calls, eval mode")
    print(format_table(times, config))


if __name__ == "__main__":
    main()
