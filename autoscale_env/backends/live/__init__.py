"""The live backend's parts: real inference here and on loopback servers (the [live] extra).

Modules, each with one job (torch is imported only inside this package):

* :mod:`.models` - the catalog's networks in plain PyTorch, INT8 quantization, layer counts;
* :mod:`.executor` - model cache, unit placement (``gpu/fp16`` -> CUDA or CPU fallback), timing;
* :mod:`.wire` - the binary request/response format (numpy only, no pickle);
* :mod:`.server` - the edge/cloud inference server and :class:`~.server.ServerProcess`;
* :mod:`.client` - :class:`~.client.RemoteClient` with application-level link shaping;
* :mod:`.energy` - RAPL/NVML energy meters and process CPU time;
* :mod:`.load` - background CPU and memory load generators (the dynamic setting).

May import: torch, psutil, :mod:`autoscale_env.world`, :mod:`autoscale_env.backends.sim` (the
profile a live run is compared with); never the faces, the tools or :mod:`agents`.
"""

from autoscale_env.world.errors import DependencyMissing

# Every module here needs the [live] extra (torch, psutil); say so instead of a bare
# ModuleNotFoundError when it is missing (gym.make(backend="live"), `autoscale serve`, ...).
try:
    import torch  # noqa: F401
    import psutil  # noqa: F401
except ImportError as _e:
    raise DependencyMissing(_e.name or "torch", "live",
                            "the live backend and `autoscale serve`") from None
