"""Fixtures shared by bnlib's tests."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import torch

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


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
