r"""Shifted copies of MNIST: the same digits and labels, with the pixels transformed.

Each function takes a :class:`bnlib.MNIST` and returns a new one whose images are a fixed
function of the old ones, applied to every pixel; labels are copied and the input is left
untouched. Pixels stay in :math:`[0, 1]`: where a shift would leave that range it is clipped,
as a saturated camera clips.

* :func:`invert`: :math:`x \mapsto 1 - x`, white digits on black become black digits on white;
* :func:`brightness`: :math:`x \mapsto \mathrm{clip}(x + b)`, a lighter or darker image;
* :func:`contrast`: :math:`x \mapsto \mathrm{clip}(\tfrac12 + c\,(x - \tfrac12))`, ink and
  background pulled towards (or pushed away from) mid-grey.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from bnlib._checks import require_number
from bnlib.data.mnist import MNIST

__all__ = ["brightness", "contrast", "invert", "map_pixels"]


def map_pixels(data: MNIST, pixel_map: Callable[[Tensor], Tensor]) -> MNIST:
    r"""A new :class:`~bnlib.MNIST` with images ``pixel_map(data.images)`` clipped to
    :math:`[0, 1]`, and a copy of the labels.

    Args:
        data (MNIST): the examples; not modified.
        pixel_map (callable): maps the image tensor to a tensor of the same shape; it must not
            modify its argument in place.

    Shape:
        - images: :math:`(N, 1, 28, 28)` in and out.
    """
    if not isinstance(data, MNIST):
        raise TypeError(f"data must be a bnlib.MNIST (from bnlib.load_mnist), got "
                        f"{type(data).__name__}")
    images = pixel_map(data.images)
    return MNIST(images=images.clamp(0.0, 1.0).contiguous(), labels=data.labels.clone())


def invert(data: MNIST) -> MNIST:
    r"""MNIST with inverted pixels, :math:`x \mapsto 1 - x`: dark digits on a white background.

    Args:
        data (MNIST): the examples; not modified.
    """
    return map_pixels(data, lambda images: 1.0 - images)


def brightness(data: MNIST, offset: float) -> MNIST:
    r"""MNIST with every pixel moved by ``offset``, :math:`x \mapsto \mathrm{clip}(x + b)`.

    A positive offset lights the black background up to grey :math:`b` and saturates the ink
    pixels above :math:`1 - b` at white, so their differences are lost.

    Args:
        data (MNIST): the examples; not modified.
        offset (float): :math:`b`, in :math:`[-1, 1]`.
    """
    require_number("offset", offset, -1.0, 1.0)
    return map_pixels(data, lambda images: images + offset)


def contrast(data: MNIST, factor: float) -> MNIST:
    r"""MNIST with contrast scaled around mid-grey, :math:`x \mapsto
    \mathrm{clip}(\tfrac12 + c\,(x - \tfrac12))`.

    A factor below one is an affine map of :math:`[0, 1]` into itself (nothing is clipped): black
    becomes :math:`\tfrac12 - \tfrac{c}{2}`, white :math:`\tfrac12 + \tfrac{c}{2}`. A factor
    above one clips the pixels that would leave :math:`[0, 1]`.

    Args:
        data (MNIST): the examples; not modified.
        factor (float): :math:`c`, positive and at most 10 (use :func:`invert` to flip the sign).
    """
    require_number("factor", factor, 0.0, 10.0, low_open=True)
    return map_pixels(data, lambda images: 0.5 + factor * (images - 0.5))
