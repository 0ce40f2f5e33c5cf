"""How the world's batch loops are compiled: :func:`batch_loop`.

A batch loop runs the per-request rules over many requests. Compiled with numba's defaults, every
array view and every read of an array held in a record (``world.base_ms``) counts a reference, an
atomic operation; in a loop of a few hundred nanoseconds per request those counts cost about a
third of the time. A loop that allocates no array needs no counts: the caller holds every array
for the duration of the call. :func:`batch_loop` compiles such a loop without reference counting
(numba's ``_nrt=False`` option, where numba offers it); a loop that needs scratch space takes it
as an argument, allocated by its caller.
"""

from __future__ import annotations

from numba import njit
from numba.core import cpu

#: numba can compile without its reference-counting runtime (an option of numba's CPU target).
WITHOUT_REFCOUNTS = hasattr(cpu.CPUTargetOptions, "_nrt")


def batch_loop(*, nogil: bool = False):
    """Decorator: ``njit(cache=True, nogil=nogil)`` for a loop that neither allocates nor returns
    an array, compiled without reference counting when numba offers it (the results are the
    same either way; only the bookkeeping goes)."""
    options = {"cache": True, "nogil": nogil}
    if WITHOUT_REFCOUNTS:
        options["_nrt"] = False
    return njit(**options)
