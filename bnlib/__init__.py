"""bnlib: batch normalization from scratch in PyTorch, the tested library behind the book."""

__version__ = "0.1.0"
