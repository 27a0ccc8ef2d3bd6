"""Shifted MNIST: each shift's pixel formula, clipping, copied labels, untouched inputs, errors."""

from __future__ import annotations

import math

import pytest
import torch

from bnlib import MNIST
from bnlib.data.shifts import brightness, contrast, invert, map_pixels


@pytest.fixture
def digits() -> MNIST:
    """Random pixels with exact 0s and 1s, like MNIST's background and ink."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 28, 28, generator=generator)
    images[:, :, :5] = 0.0
    images[:, :, -5:] = 1.0
    return MNIST(images=images, labels=torch.randint(0, 10, (6,), generator=generator))


def check_new_copy(shifted: MNIST, data: MNIST, original_images: torch.Tensor) -> None:
    assert isinstance(shifted, MNIST) and shifted.images.shape == data.images.shape
    assert torch.equal(shifted.labels, data.labels)
    assert shifted.labels.data_ptr() != data.labels.data_ptr()
    assert shifted.images.data_ptr() != data.images.data_ptr()
    assert torch.equal(data.images, original_images)  # the input is untouched
    assert shifted.images.min() >= 0 and shifted.images.max() <= 1


def test_invert_is_one_minus_x(digits):
    original = digits.images.clone()
    inverted = invert(digits)
    check_new_copy(inverted, digits, original)
    assert torch.equal(inverted.images, 1 - original)
    assert torch.allclose(invert(inverted).images, original, atol=1e-7)


@pytest.mark.parametrize("offset", [-0.4, 0.0, 0.3, 1.0])
def test_brightness_adds_and_clips(digits, offset):
    original = digits.images.clone()
    shifted = brightness(digits, offset)
    check_new_copy(shifted, digits, original)
    assert torch.equal(shifted.images, (original + offset).clamp(0, 1))
    if offset > 0:
        assert torch.all(shifted.images[:, :, :5] == offset)  # black background turns grey
        assert torch.all(shifted.images[original >= 1 - offset] == 1)  # bright ink saturates
    if offset == 0:
        assert torch.equal(shifted.images, original)


@pytest.mark.parametrize("factor", [0.25, 0.5, 1.0])
def test_contrast_below_one_is_affine_without_clipping(digits, factor):
    original = digits.images.clone()
    shifted = contrast(digits, factor)
    check_new_copy(shifted, digits, original)
    expected = 0.5 + factor * (original - 0.5)
    assert torch.allclose(shifted.images, expected, atol=1e-7)
    assert math.isclose(shifted.images.min().item(), 0.5 - factor / 2, abs_tol=1e-7)
    assert math.isclose(shifted.images.max().item(), 0.5 + factor / 2, abs_tol=1e-7)


def test_contrast_above_one_clips(digits):
    shifted = contrast(digits, 3.0)
    expected = (0.5 + 3.0 * (digits.images - 0.5)).clamp(0, 1)
    assert torch.allclose(shifted.images, expected, atol=1e-6)
    assert (shifted.images == 0).sum() > (digits.images == 0).sum()  # dark greys went black


def test_map_pixels_clips_any_map(digits):
    shifted = map_pixels(digits, lambda images: 2 * images - 0.5)
    assert torch.equal(shifted.images, (2 * digits.images - 0.5).clamp(0, 1))
    assert shifted.images.is_contiguous()


@pytest.mark.parametrize("shift", [invert, lambda data: brightness(data, 0.1),
                                   lambda data: contrast(data, 0.5)])
def test_shifts_refuse_non_mnist(shift, digits):
    with pytest.raises(TypeError, match="bnlib.MNIST"):
        shift(digits.images)


@pytest.mark.parametrize("offset", [1.5, -1.01, math.nan, math.inf])
def test_brightness_refuses_bad_offset(digits, offset):
    with pytest.raises(ValueError, match=r"offset must be a finite number in \[-1, 1\]"):
        brightness(digits, offset)


@pytest.mark.parametrize("factor", [0.0, -0.5, 11.0, math.nan])
def test_contrast_refuses_bad_factor(digits, factor):
    with pytest.raises(ValueError, match=r"factor must be a finite number in \(0, 10\]"):
        contrast(digits, factor)


@pytest.mark.parametrize("value", [True, "0.5", None])
def test_shift_sizes_must_be_numbers(digits, value):
    with pytest.raises(TypeError, match="must be a number"):
        brightness(digits, value)
    with pytest.raises(TypeError, match="must be a number"):
        contrast(digits, value)
