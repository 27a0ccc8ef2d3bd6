"""Cost of a training step per network: K networks stacked by train_sweep against K separate runs.

Every side trains K 784-32-32-10 ReLU networks (with ``torch.nn.BatchNorm1d`` before the
activation, or without BN) with Adam (lr 0.01) on batches of 32 MNIST images, on the CPU:

- sweep: :func:`bnlib.train_sweep`, one batched matrix product per layer for all K, a
  hand-written backward pass and one vectorised Adam step;
- autograd: :func:`bnlib.compare` with ``engine="autograd"``, K autograd runs in lockstep,
  each with ``torch.optim.Adam(fused=True)``;
- manual: :func:`bnlib.compare` with ``engine="manual"``, K runs of the hand-written
  one-network step (:class:`bnlib.engine.ManualEngine`) in lockstep.

Each run takes ``--steps`` steps (one epoch over a subset of the training set; the evaluation
after it is on a single test image, so it costs nothing). The figure is the run's time divided by
steps and by K, in microseconds, the best of ``--repeats`` runs after a warm-up, the sides
alternating so that a busy spell of the machine hits all of them: the wall-clock time and, beside
it, the CPU time of this process, which other programs disturb less (with one thread). The
machine's load average is printed with the results: on a shared machine, run it several times.
Usage::

    BNLIB_DATA=/path/to/datasets python benchmarks/bench_sweep.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bnlib import MNIST, SweepConfig, TrainConfig, build_mlp, compare, load_mnist, train_sweep

BATCH_SIZE = 32
LR = 0.01
SIDES = ("sweep", "autograd", "manual")


def models_of(count: int, norm: str) -> list[torch.nn.Module]:
    return [build_mlp(norm=norm, seed=seed) for seed in range(count)]


def run(side: str, count: int, norm: str, train_set: MNIST, test_set: MNIST) -> None:
    """Train ``count`` fresh networks for one epoch of ``train_set`` on one side."""
    models = models_of(count, norm)
    if side == "sweep":
        config = SweepConfig(epochs=1, batch_size=BATCH_SIZE, device="cpu", progress=False)
        train_sweep(models, [LR] * count, train_set, test_set, config)
        return
    config = TrainConfig(epochs=1, lr=LR, batch_size=BATCH_SIZE, device="cpu", progress=False,
                         engine=side)
    compare({str(index): model for index, model in enumerate(models)}, train_set, test_set,
            config)


def microseconds_per_step(count: int, norm: str, train_set: MNIST, test_set: MNIST,
                          repeats: int) -> dict[str, tuple[float, float]]:
    """Per side, (wall, CPU) microseconds per step and network, each the best of ``repeats``."""
    steps = len(train_set) // BATCH_SIZE
    for side in SIDES:  # warm-up
        run(side, count, norm, train_set.subset(4 * BATCH_SIZE), test_set)
    best = {side: (float("inf"), float("inf")) for side in SIDES}
    for _ in range(repeats):
        for side in SIDES:
            wall, cpu = time.perf_counter(), time.process_time()
            run(side, count, norm, train_set, test_set)
            times = (time.perf_counter() - wall, time.process_time() - cpu)
            best[side] = tuple(min(old, new) for old, new in zip(best[side], times))
    return {side: tuple(seconds / steps / count * 1e6 for seconds in pair)
            for side, pair in best.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4, 16, 64],
                        help="numbers of networks K (default: 1 4 16 64)")
    parser.add_argument("--steps", type=int, default=60, help="steps per run (default: 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None,
                        help="dataset root holding MNIST/raw/ (default: $BNLIB_DATA)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train_set = load_mnist("train", root=args.data_dir, download=False).subset(
        args.steps * BATCH_SIZE)
    test_set = load_mnist("test", root=args.data_dir, download=False).subset(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH_SIZE}, "
          f"Adam, {args.steps} steps, best of {args.repeats}; load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print("microseconds per step and network, wall clock; CPU time of this process")
    print(f"{'network':>8} {'K':>3}  " + "  ".join(f"{side:>11}" for side in SIDES)
          + "  autograd/sweep  manual/sweep")
    for norm, label in (("none", "no BN"), ("torch", "BN")):
        for count in args.counts:
            times = microseconds_per_step(count, norm, train_set, test_set, args.repeats)
            sweep = times["sweep"]
            ratios = ["{:4.1f}x; {:4.1f}x".format(*(other / ours for other, ours in
                                                    zip(times[side], sweep)))
                      for side in SIDES[1:]]
            print(f"{label:>8} {count:3d}  "
                  + "  ".join("{:5.0f}; {:4.0f}".format(*times[side]) for side in SIDES)
                  + f"  {ratios[0]:>14}  {ratios[1]:>12}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
