"""Small synthetic stand-ins for MNIST that a model learns in a few steps."""

from __future__ import annotations

import torch

from bnlib.data import MNIST


def synthetic_mnist(n: int, seed: int = 0) -> MNIST:
    """Noise images with a bright row whose position gives the label."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = 0.3 * torch.rand(n, 1, 28, 28, generator=generator)
    images[torch.arange(n), 0, 2 * labels + 4, :] = 1.0
    return MNIST(images=images, labels=labels)
