"""Backends: the world behind the environment (see :class:`autoscale_env.world.types.Backend`).

``sim`` is the analytical model (the default, fast, deterministic), ``replay`` reads recorded
traces, ``drift`` is the sim with one shift at a known request, ``live`` (a package) really runs
inference on this host and on loopback servers. Backends are imported lazily so that
``import autoscale_env`` never pulls in torch. A new backend: a class with the protocol's
attributes and methods, one entry in :data:`BACKENDS` (docs/architecture.md).

May import: :mod:`autoscale_env.world` and :mod:`autoscale_env.traces` (a backend may wrap another
backend of this room, as ``drift`` wraps ``sim``); never the faces (``env``, ``vector``,
``fleet``), the tools or :mod:`agents`.
"""

from __future__ import annotations

import importlib
from typing import Any

from autoscale_env.world.errors import UnknownNameError

BACKENDS = {
    "sim": "autoscale_env.backends.sim:SimBackend",
    "replay": "autoscale_env.backends.replay:ReplayBackend",
    "live": "autoscale_env.backends.live.backend:LiveBackend",
    "drift": "autoscale_env.backends.drift:DriftBackend",
}


def make_backend(name: str, **kwargs: Any):
    """Construct the backend called ``name`` with ``kwargs``; unknown names list the valid ones."""
    if name not in BACKENDS:
        raise UnknownNameError("backend", name, BACKENDS)
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
