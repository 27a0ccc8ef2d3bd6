"""Tests for the MNIST container and the Batches iterator, on small synthetic data."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch

from bnlib.data import MNIST, Batches


def numbered(n: int) -> MNIST:
    """``n`` examples whose label is their index and whose pixels all equal index / 1000."""
    index = torch.arange(n)
    images = (index.float() / 1000).view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    return MNIST(images=images, labels=index)


def epoch(batches: Batches) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches]


# MNIST

def test_mnist_len_repr_and_frozen():
    data = numbered(5)
    assert len(data) == 5 and repr(data) == "MNIST(n=5, device=cpu)"
    with pytest.raises(FrozenInstanceError):
        data.images = torch.zeros(5, 1, 28, 28)


@pytest.mark.parametrize("images, labels, error, match", [
    (torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.int64), ValueError, r"\(N, 1, 28, 28\)"),
    (torch.zeros(4, 1, 28, 28), torch.zeros(3, dtype=torch.int64), ValueError, r"shape \(4,\)"),
    (torch.zeros(4, 1, 28, 28), torch.zeros(4, 1, dtype=torch.int64), ValueError, r"shape \(4,\)"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), TypeError,
     "float32"),
    (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int32), TypeError, "int64"),
    (torch.zeros(4, 1, 28, 28).numpy(), torch.zeros(4, dtype=torch.int64), TypeError, "tensors"),
    (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64, device="meta"), ValueError,
     "one device"),
])
def test_mnist_rejects_bad_fields(images, labels, error, match):
    with pytest.raises(error, match=match):
        MNIST(images=images, labels=labels)


def test_subset_takes_the_first_examples():
    data = numbered(6)
    part = data.subset(4)
    assert len(part) == 4 and part.labels.tolist() == [0, 1, 2, 3]
    assert torch.equal(part.images, data.images[:4])
    assert len(data.subset(6)) == 6


@pytest.mark.parametrize("n, error", [(0, ValueError), (7, ValueError), (-1, ValueError),
                                      (2.0, TypeError), (True, TypeError)])
def test_subset_rejects_bad_sizes(n, error):
    with pytest.raises(error, match="n must be"):
        numbered(6).subset(n)


def test_to_moves_both_tensors():
    moved = numbered(3).to("meta")
    assert moved.images.device.type == "meta" and moved.labels.device.type == "meta"
    assert numbered(3).to(torch.device("cpu")).labels.tolist() == [0, 1, 2]


# Batches

@pytest.mark.parametrize("drop_last, sizes", [(False, [3, 3, 3, 1]), (True, [3, 3, 3])])
def test_batch_shapes_and_len(drop_last, sizes):
    batches = Batches(numbered(10), 3, drop_last=drop_last, generator=torch.Generator())
    assert len(batches) == len(sizes)
    seen = list(batches)
    assert [len(labels) for _, labels in seen] == sizes
    for images, labels in seen:
        assert images.shape == (len(labels), 1, 28, 28) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert torch.equal(images[:, 0, 0, 0], labels.float() / 1000)  # pairs stay together


@pytest.mark.parametrize("n, batch_size", [(10, 3), (10, 5), (10, 10), (10, 64), (1, 1)])
def test_every_index_once_per_epoch(n, batch_size):
    batches = Batches(numbered(n), batch_size, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        assert sorted(sum(epoch(batches), [])) == list(range(n))


def test_drop_last_drops_only_the_short_batch():
    batches = Batches(numbered(10), 4, drop_last=True, generator=torch.Generator().manual_seed(0))
    labels = sum(epoch(batches), [])
    assert len(labels) == 8 and len(set(labels)) == 8
    assert len(Batches(numbered(10), 11, drop_last=True)) == 0
    assert list(Batches(numbered(10), 11, drop_last=True)) == []


def test_without_shuffle_the_order_is_stored_order():
    assert epoch(Batches(numbered(7), 3, shuffle=False)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_seeded_generators_repeat_and_epochs_differ():
    first = Batches(numbered(50), 8, generator=torch.Generator().manual_seed(3))
    second = Batches(numbered(50), 8, generator=torch.Generator().manual_seed(3))
    epochs = [epoch(first) for _ in range(3)]
    assert epochs == [epoch(second) for _ in range(3)]
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_order_is_drawn_when_iteration_starts():
    generator = torch.Generator().manual_seed(5)
    batches = Batches(numbered(20), 4, generator=generator)
    iterator = iter(batches)
    state = generator.get_state()
    first_epoch = [labels.tolist() for _, labels in iterator]
    assert torch.equal(generator.get_state(), state) and len(first_epoch) == 5


def test_batches_follow_the_data_device():
    images, labels = next(iter(Batches(numbered(6).to("meta"), 4)))
    assert images.device.type == "meta" and labels.device.type == "meta"
    assert images.shape == (4, 1, 28, 28)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "at least 1"),
    ({"batch_size": -2}, ValueError, "at least 1"),
    ({"batch_size": 2.5}, TypeError, "int"),
])
def test_batches_reject_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Batches(numbered(4), **kwargs)


def test_batches_reject_other_data():
    with pytest.raises(TypeError, match="MNIST"):
        Batches(torch.zeros(4, 1, 28, 28), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_data_with_a_cpu_generator():
    data = numbered(10).to("cuda")
    batches = Batches(data, 4, generator=torch.Generator().manual_seed(0))
    cpu_epoch = epoch(Batches(numbered(10), 4, generator=torch.Generator().manual_seed(0)))
    assert all(images.is_cuda and labels.is_cuda for images, labels in batches)
    assert epoch(Batches(data, 4, generator=torch.Generator().manual_seed(0))) == cpu_epoch
    with pytest.raises(ValueError, match="CPU generator"):
        Batches(data, 4, generator=torch.Generator(device="cuda"))
