"""Fixtures shared by bnlib's tests."""

from __future__ import annotations

import importlib.util
import socket
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def load_module(name: str, path: Path):
    """Import a file that is not on ``sys.path`` (the book's conftest and Sphinx extension)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def book_conftest():
    """The root ``conftest.py``, which knows the book's chapters."""
    return load_module("book_conftest", ROOT / "conftest.py")


@pytest.fixture(scope="session")
def book_extras():
    """The book's Sphinx extension."""
    return load_module("book_extras", ROOT / "book" / "_ext" / "book_extras.py")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection beyond this machine fails the test loudly (loopback stays open for the
    browser tests, which serve the built book locally)."""
    connect = socket.socket.connect

    def connect_locally(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in LOOPBACK:
            raise AssertionError(f"a test tried to use the network ({address!r})")
        return connect(sock, address)

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network (urlopen)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", connect_locally)


@pytest.fixture
def one_thread():
    """Run on one thread: tiny models are fastest so, and a busy machine slows OpenMP teams."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
