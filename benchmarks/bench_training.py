"""Seconds per epoch of the batch-normalisation experiment: the seed pipeline against bnlib.

The experiment trains two 784-32-32-10 ReLU networks, one with ``torch.nn.BatchNorm1d`` and one
without, on full MNIST with batch size 32 and Adam (lr 0.01), on the CPU.

- seed pipeline: what the original notebook did. A per-example ``Dataset`` that repeats
  torchvision's ``MNIST`` + ``ToTensor`` (uint8 row -> ``PIL.Image`` in mode "L" -> float tensor
  divided by 255), a ``torch.utils.data.DataLoader(batch_size=32, shuffle=True)``, and a plain loop
  with ``zero_grad``, ``backward``, ``step`` and ``loss.item()`` at every step, default Adam; after
  every epoch each model is evaluated on the test set through the same per-example pipeline.
- bnlib: :func:`bnlib.training.compare` on tensors loaded by :func:`bnlib.data.load_mnist`, which
  also evaluates both models on the 10,000 test images after every epoch.

Both pipelines train the same models (built by :func:`bnlib.models.build_mlp`), so the ratio
measures the data pipeline and the training loop only. Wall-clock time is what a user waits; CPU
time of this process is less disturbed by other programs on a shared machine. Both are noisy: run
it a few times. Usage::

    BNLIB_DATA=/path/to/datasets python benchmarks/bench_training.py --epochs 1 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bnlib.data import MNIST, load_mnist
from bnlib.models import build_mlp
from bnlib.training import TrainConfig, compare

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


def bnlib_pipeline(train_set: MNIST, test_set: MNIST, epochs: int) -> None:
    """Train both models with :func:`bnlib.training.compare`, evaluating after every epoch."""
    config = TrainConfig(epochs=epochs, lr=LR, batch_size=BATCH_SIZE, device="cpu",
                         progress=False)
    compare(make_models(), train_set, test_set, config)


def seconds_per_epoch(pipeline: Callable[[MNIST, MNIST, int], None], train_set: MNIST,
                      test_set: MNIST, epochs: int) -> tuple[float, float]:
    """Wall-clock and CPU (this process) seconds per epoch of one pipeline run."""
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline(train_set, test_set, epochs)
    return (time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per pipeline (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for both pipelines (default: torch's choice)")
    parser.add_argument("--data-dir", default=None,
                        help="dataset root holding MNIST/raw/ (default: $BNLIB_DATA)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train_set = load_mnist("train", root=args.data_dir, download=False)
    test_set = load_mnist("test", root=args.data_dir, download=False)
    # The first optimizer built in a process imports torch's compiler stack (about a second);
    # pay that here so that neither pipeline is charged for it.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.epochs} "
          f"epoch(s), batch {BATCH_SIZE}, Adam lr {LR}, CPU; seconds per epoch:")
    seed = seconds_per_epoch(seed_pipeline, train_set, test_set, args.epochs)
    ours = seconds_per_epoch(bnlib_pipeline, train_set, test_set, args.epochs)
    print(f"{'':>6}  {'seed':>7}  {'bnlib':>7}  {'speed-up':>8}")
    for label, seed_s, ours_s in (("wall", seed[0], ours[0]), ("CPU", seed[1], ours[1])):
        print(f"{label:>6}  {seed_s:7.2f}  {ours_s:7.2f}  {seed_s / ours_s:7.1f}x")


if __name__ == "__main__":
    main()
