"""MNIST without torchvision: the files found, fetched and checked, the in-memory set with its
batch iterator, and shifted copies of it.

* :mod:`bnlib.data.mnist`: :class:`MNIST`, :class:`Batches`, :func:`load_mnist`;
* :mod:`bnlib.data.files`, :mod:`bnlib.data.idx`, :mod:`bnlib.data.download`: where the files
  are, their IDX format, and a verified download;
* :mod:`bnlib.data.shifts`: brightness, contrast and inversion of the images.
"""

from bnlib.data.files import MNIST_FILES, DataError, IdxFile, SplitFiles, data_root
from bnlib.data.mnist import MNIST, Batches, load_mnist
from bnlib.data.shifts import brightness, contrast, invert

__all__ = ["MNIST", "MNIST_FILES", "Batches", "DataError", "IdxFile", "SplitFiles", "brightness",
           "contrast", "data_root", "invert", "load_mnist"]
