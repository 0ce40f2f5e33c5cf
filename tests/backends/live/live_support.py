"""Fixtures shared by the live tests (imported by name: a second conftest.py would shadow the
one tests/ imports as ``conftest``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run torch single-threaded in the importing test module.

    On a small shared host, two intra-op threads mostly spin waiting for each other whenever
    another process holds a core, which made these tests twice as slow.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
