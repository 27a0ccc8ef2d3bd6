"""Seconds per epoch of the batch-normalisation experiment: the seed pipeline against bnlib.

The experiment trains two 784-32-32-10 ReLU networks, one with ``torch.nn.BatchNorm1d`` and one
without, on full MNIST with batch size 32 and Adam (lr 0.01), on the CPU.

- seed pipeline: what the original notebook did. A per-example ``Dataset`` that repeats
  torchvision's ``MNIST`` + ``ToTensor`` (uint8 row -> ``PIL.Image`` in mode "L" -> float tensor
  divided by 255), a ``torch.utils.data.DataLoader(batch_size=32, shuffle=True)``, and a plain loop
  with ``zero_grad``, ``backward``, ``step`` and ``loss.item()`` at every step, default Adam; after
  every epoch each model is evaluated on the test set through the same per-example pipeline.
- bnlib autograd and bnlib manual: :func:`bnlib.compare` with ``engine="autograd"``
  (forward, ``loss.backward()``, fused Adam's ``step()``) and ``engine="manual"``
  (:class:`bnlib.engine.ManualEngine`), on tensors loaded by :func:`bnlib.load_mnist`; both
  also evaluate the models on the 10,000 test images after every epoch.

All train the same models (built by :func:`bnlib.models.build_mlp`), so the ratios measure the
data pipeline and the training step only. Each pipeline is measured ``--repeats`` times at each
thread count (torch's default, then one); the table gives the range (min-max) of seconds per
epoch, and of the speed-ups of runs measured one after the other. Then:

- the whole command ``python -m bnlib compare --epochs 10`` (a fresh process: imports, data,
  training, table, figure) against the seed pipeline's 10 epochs, extrapolated as 10 times its
  measured one-thread seconds per epoch;
- microseconds per training step of each network alone, manual against autograd, one thread
  (batch 32; the 10th percentile and the median of single steps timed one by one).

Wall-clock time is what a user waits; CPU time of this process is less disturbed by other
programs on a shared machine. Both are noisy: the load average is printed with the results.
Usage::

    BNLIB_DATA=/path/to/datasets python benchmarks/bench_training.py --repeats 3
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bnlib import MNIST, TrainConfig, build_mlp, compare, load_mnist
from bnlib.engine import AutogradEngine, ManualEngine

BATCH_SIZE = 32
LR = 0.01


class SeedMNIST(Dataset):
    """Per-example MNIST exactly as torchvision's ``MNIST`` with ``ToTensor`` serves it."""

    def __init__(self, data: MNIST) -> None:
        self.data = (data.images.squeeze(1) * 255).round().to(torch.uint8)
        self.targets = data.labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.data[index], int(self.targets[index])
        image = Image.fromarray(image.numpy(), mode="L")
        # torchvision.transforms.functional.to_tensor, for a mode "L" image
        tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))
        tensor = tensor.view(image.size[1], image.size[0], 1).permute((2, 0, 1)).contiguous()
        return tensor.to(dtype=torch.get_default_dtype()).div(255), target


def make_models() -> dict[str, nn.Module]:
    return {"BN": build_mlp(norm="torch", seed=0), "no BN": build_mlp(seed=0)}


def seed_pipeline(train_set: MNIST, test_set: MNIST, epochs: int) -> None:
    """Train both models the seed notebook's way, then evaluate each on the test set.

    The seed evaluated (wrongly) on the training loader; here each model is evaluated on the test
    set through the same per-example pipeline, the work that :func:`bnlib_pipeline` also does.
    """
    torch.manual_seed(0)
    loader = DataLoader(SeedMNIST(train_set), batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(SeedMNIST(test_set), batch_size=BATCH_SIZE)
    models = make_models()
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=LR) for name, m in models.items()}
    for _ in range(epochs):
        running_loss = dict.fromkeys(models, 0.0)
        for images, labels in loader:
            for name, model in models.items():
                optimizers[name].zero_grad()
                loss = F.cross_entropy(model(images), labels)
                loss.backward()
                optimizers[name].step()
                running_loss[name] += loss.item()
        for model in models.values():
            model.eval()
            correct = 0
            with torch.no_grad():
                for images, labels in test_loader:
                    correct += (model(images).argmax(dim=1) == labels).sum().item()
            model.train()


def bnlib_pipeline(train_set: MNIST, test_set: MNIST, epochs: int, engine: str) -> None:
    """Train both models with :func:`bnlib.compare`, evaluating after every epoch."""
    config = TrainConfig(epochs=epochs, lr=LR, batch_size=BATCH_SIZE, device="cpu",
                         progress=False, engine=engine)
    compare(make_models(), train_set, test_set, config)


PIPELINES: dict[str, Callable[[MNIST, MNIST, int], None]] = {
    "seed": seed_pipeline,
    "autograd": functools.partial(bnlib_pipeline, engine="autograd"),
    "manual": functools.partial(bnlib_pipeline, engine="manual"),
}


def seconds_per_epoch(pipeline: Callable[[MNIST, MNIST, int], None], train_set: MNIST,
                      test_set: MNIST, epochs: int) -> tuple[float, float]:
    """Wall-clock and CPU (this process) seconds per epoch of one pipeline run."""
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline(train_set, test_set, epochs)
    return (time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs


def span(values: list[float], digits: int = 2, unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}{unit}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else \
        f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def epoch_table(train_set: MNIST, test_set: MNIST, epochs: int, repeats: int,
                threads: int) -> dict[str, list[tuple[float, float]]]:
    """Measure every pipeline ``repeats`` times, interleaved; print and return the results."""
    torch.set_num_threads(threads)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PIPELINES}
    for _ in range(repeats):
        for name, pipeline in PIPELINES.items():
            runs[name].append(seconds_per_epoch(pipeline, train_set, test_set, epochs))
    print(f"\n{threads} thread(s), {repeats} run(s) of {epochs} epoch(s) each, load average "
          f"{os.getloadavg()[0]:.1f}; seconds per epoch (min-max) and speed-ups over the seed:")
    print(f"{'':>5}  {'seed':>11}  {'autograd':>11}  {'manual':>11}  {'seed/autograd':>13}  "
          f"{'seed/manual':>11}  {'autograd/manual':>15}")
    for column, label in enumerate(("wall", "CPU")):
        seconds = {name: [run[column] for run in values] for name, values in runs.items()}
        ratios = [[a / b for a, b in zip(seconds[top], seconds[bottom])]
                  for top, bottom in (("seed", "autograd"), ("seed", "manual"),
                                      ("autograd", "manual"))]
        print(f"{label:>5}  {span(seconds['seed']):>11}  {span(seconds['autograd']):>11}  "
              f"{span(seconds['manual']):>11}  {span(ratios[0], 1, 'x'):>13}  "
              f"{span(ratios[1], 1, 'x'):>11}  {span(ratios[2], 1, 'x'):>15}", flush=True)
    return runs


def whole_command(repeats: int, data_dir: str | None, train_subset: int | None,
                  seed_epoch_seconds: list[float]) -> None:
    """Time ``python -m bnlib compare --epochs 10`` in a fresh process, against the seed's 10
    epochs extrapolated from its measured one-thread epochs."""
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if data_dir is not None:
        environment["BNLIB_DATA"] = data_dir
    seconds = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats):
            start = time.perf_counter()
            subset = [] if train_subset is None else ["--train-subset", str(train_subset)]
            subprocess.run([sys.executable, "-m", "bnlib", "compare", "--epochs", "10",
                            "--no-download", "--no-progress", "--out", out, *subset], check=True,
                           env=environment, stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - start)
    seed = [10 * value for value in seed_epoch_seconds]
    print(f"\nwhole command, load average {os.getloadavg()[0]:.1f}: python -m bnlib compare "
          f"--epochs 10 took {span(seconds, 1, ' s')} ({repeats} run(s)); the seed pipeline's 10 "
          f"epochs, extrapolated from its one-thread epochs: {span(seed, 1, ' s')}; "
          f"speed-up {span([s / c for s in seed for c in seconds], 1, 'x')}", flush=True)


def microseconds_per_step(engine, images, labels, steps: int) -> tuple[float, float]:
    """10th percentile and median of ``steps`` single steps, timed one by one, in microseconds.

    On a busy machine most steps are interrupted; the 10th percentile is close to what a step
    costs when it is not."""
    for _ in range(steps // 10):  # warm up: buffers, optimizer state
        engine.step(images, labels)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step(images, labels)
        seconds.append(time.perf_counter() - start)
    return 1e6 * statistics.quantiles(seconds, n=10)[0], 1e6 * statistics.median(seconds)


def step_table(train_set: MNIST, steps: int) -> None:
    torch.set_num_threads(1)
    images, labels = train_set.images[:BATCH_SIZE], train_set.labels[:BATCH_SIZE]
    print(f"\none thread, load average {os.getloadavg()[0]:.1f}: microseconds per training step "
          f"of one network (batch {BATCH_SIZE}, Adam), 10th percentile (median) of {steps} steps")
    print(f"{'network':>8}  {'autograd':>12}  {'manual':>12}  {'speed-up':>8}")
    for name, model in make_models().items():
        autograd = microseconds_per_step(AutogradEngine(model, lr=LR), images, labels, steps)
        manual = microseconds_per_step(ManualEngine(make_models()[name], lr=LR), images, labels,
                                       steps)
        print(f"{name:>8}  {autograd[0]:5.0f} ({autograd[1]:4.0f})  {manual[0]:5.0f} "
              f"({manual[1]:4.0f})  {autograd[0] / manual[0]:7.1f}x", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default: 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of every measurement (default: 3)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="steps per round of the per-step measurement (default: 2000)")
    parser.add_argument("--threads", default="default,1",
                        help="comma-separated thread counts of the epoch tables, 'default' for "
                             "torch's choice (default: default,1)")
    parser.add_argument("--skip-command", action="store_true",
                        help="skip the whole-command measurement")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N images only, for a quick check of the script "
                             "(default: all 60,000)")
    parser.add_argument("--data-dir", default=None,
                        help="dataset root holding MNIST/raw/ (default: $BNLIB_DATA)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    train_set = load_mnist("train", root=args.data_dir, download=False)
    test_set = load_mnist("test", root=args.data_dir, download=False)
    if args.train_subset is not None:
        train_set = train_set.subset(args.train_subset)
    # The first optimizer built in a process imports torch's compiler stack (about a second);
    # pay that here so that no pipeline is charged for it.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU(s), batch {BATCH_SIZE}, Adam lr {LR}, "
          f"CPU, both networks, {len(train_set):,} training images", flush=True)
    default_threads = torch.get_num_threads()
    tables = {}
    for text in args.threads.split(","):
        threads = default_threads if text == "default" else int(text)
        tables[threads] = epoch_table(train_set, test_set, args.epochs, args.repeats, threads)
    one_thread = tables.get(1)
    if not args.skip_command and one_thread is not None:
        whole_command(args.repeats, args.data_dir, args.train_subset,
                      [wall for wall, _ in one_thread["seed"]])
    step_table(train_set, args.steps)


if __name__ == "__main__":
    main()
