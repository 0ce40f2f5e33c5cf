"""The live backend's models on this host: layer counts, FP32 and INT8 latency, INT8 agreement.

    python scripts/live_report.py [--networks mnv1,rn50,...] [--inputs 32] [--runs 5]

For each catalog network: the CONV/FC/RC layer counts of the PyTorch model against the catalog's,
the median forward-pass time of FP32 and INT8 on this host's CPU (``--runs`` timed runs after a
warm-up), and the share of top-1 decisions on which INT8 agrees with FP32 over ``--inputs`` fixed
synthetic requests (see ``models.int8_agreement`` for why that is a check of the INT8 path, not a
task-accuracy figure). With CUDA, GPU FP32 and FP16 latencies are added. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from autoscale_env.world import config
from autoscale_env.backends.live import models
from autoscale_env.backends.live.executor import InferenceEngine, cuda_available

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--networks", default=",".join(models.model_names()))
parser.add_argument("--inputs", type=int, default=32, help="requests for the INT8 agreement")
parser.add_argument("--runs", type=int, default=5, help="timed runs per precision")
args = parser.parse_args()

catalog = config.load_workloads()
engine = InferenceEngine(seed=0, allow_fallback=False)
units = ["cpu/fp32", "cpu/int8"] + (["gpu/fp32", "gpu/fp16"] if cuda_available() else [])
gpu_head = " gpu fp32 ms | gpu fp16 ms |" if len(units) > 2 else ""
print(f"host: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
      f"threads, torch {torch.__version__}\n")
print(f"| network | conv/fc/rc model | catalog | fp32 ms | int8 ms |{gpu_head} int8 top-1 agreement |")
print("|---|---|---|---:|---:|" + "---:|" * (len(units) - 2) + "---:|")
for name in args.networks.split(","):
    w = catalog[name]
    layers = models.count_layers(models.SPECS[name].builder(),  # structure only
                                 embeddings_as_fc=name in models.EMBEDDINGS_AS_FC)
    x = models.request_input(name)
    ms = {}
    for unit in units:
        engine.load(name, unit)
        ms[unit] = statistics.median(engine.run(name, unit, x).compute_ms
                                     for _ in range(args.runs))
    agreement = models.int8_agreement(name, n_inputs=args.inputs)
    print(f"| {name} | {'/'.join(map(str, layers))} | {w.conv}/{w.fc}/{w.rc} | "
          + "".join(f"{ms[u]:.1f} | " for u in units) + f"{100 * agreement:.1f} % |", flush=True)
