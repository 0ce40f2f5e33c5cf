"""The live backend's models on this host: layer counts, FP32 and INT8 latency, INT8 agreement.

``autoscale live-report`` prints it (the ``[live]`` extra). For each catalog network: the
CONV/FC/RC layer counts of the PyTorch model against the catalog's, the median forward-pass time of
FP32 and INT8 on this host's CPU (``runs`` timed runs after a warm-up), and the share of top-1
decisions on which INT8 agrees with FP32 over ``inputs`` fixed synthetic requests (see
``models.int8_agreement`` for why that is a check of the INT8 path, not a task-accuracy figure).
With CUDA, GPU FP32 and FP16 latencies are added. A measurement: run it on a quiet machine.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Callable, Sequence

import torch

from autoscale_env.backends.live import models
from autoscale_env.backends.live.executor import InferenceEngine, cuda_available
from autoscale_env.world import config


def live_report(networks: Sequence[str] | None = None, *, inputs: int = 32, runs: int = 5,
                emit: Callable[[str], None] = print) -> None:
    """Measure and ``emit`` the Markdown table line by line (each network as it is measured)."""
    catalog = config.load_workloads()
    names = list(networks or models.model_names())
    unknown = [n for n in names if n not in models.SPECS]
    if unknown:
        from autoscale_env.world.errors import UnknownNameError
        raise UnknownNameError("network", unknown[0], models.model_names())
    engine = InferenceEngine(seed=0, allow_fallback=False)
    units = ["cpu/fp32", "cpu/int8"] + (["gpu/fp32", "gpu/fp16"] if cuda_available() else [])
    gpu_head = " gpu fp32 ms | gpu fp16 ms |" if len(units) > 2 else ""
    emit(f"host: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
         f"threads, torch {torch.__version__}\n")
    emit(f"| network | conv/fc/rc model | catalog | fp32 ms | int8 ms |{gpu_head} "
         "int8 top-1 agreement |")
    emit("|---|---|---|---:|---:|" + "---:|" * (len(units) - 2) + "---:|")
    for name in names:
        w = catalog[name]
        layers = models.count_layers(models.SPECS[name].builder(),  # structure only
                                     embeddings_as_fc=name in models.EMBEDDINGS_AS_FC)
        x = models.request_input(name)
        ms = {}
        for unit in units:
            engine.load(name, unit)
            ms[unit] = statistics.median(engine.run(name, unit, x).compute_ms
                                         for _ in range(runs))
        agreement = models.int8_agreement(name, n_inputs=inputs)
        emit(f"| {name} | {'/'.join(map(str, layers))} | {w.conv}/{w.fc}/{w.rc} | "
             + "".join(f"{ms[u]:.1f} | " for u in units) + f"{100 * agreement:.1f} % |")
