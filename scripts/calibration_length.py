"""How the fitted host parameters' 95 % intervals narrow with the recording's length.

    python scripts/calibration_length.py [--lengths 130 260 520] [--out runs/calibration_length]

Takes the first ``k`` requests of each bundled live host trace (what a recording of ``k``
requests per setting would have produced), fits them with ``autoscale calibrate``'s bootstrap
and prints the median interval width, relative to the value, of each group of parameters.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path

import numpy as np

from autoscale_env.tools.calibrate import calibrate
from autoscale_env.traces.format import resolve_trace

TRACES = ("live-host-non_streaming-dynamic", "live-host-non_streaming-static")


def prefix(trace: str, k: int, out: Path) -> Path:
    """The trace's first ``k`` requests, as a trace file."""
    lines = gzip.decompress(Path(resolve_trace(trace)).read_bytes()).decode().splitlines()
    head = [x for x in lines if x.startswith("#")]
    body = [x for x in lines if not x.startswith("#")]
    columns, rows = body[0], body[1:]
    keep = [r for r in rows if int(r.split(",", 1)[0]) < k]
    path = out / f"{trace}-{k}.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(head + [columns] + keep) + "\n").encode()))
    return path


def rel_width(e) -> float:
    return (e.high - e.low) / e.value if e.fitted and e.value > 0 else math.nan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[130, 260, 520])
    ap.add_argument("--out", default="runs/calibration_length")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for k in args.lengths:
        paths = [prefix(t, k, out) for t in TRACES]
        cal = calibrate([str(p) for p in paths], name="host", min_requests=50,
                        min_per_network=5)
        base = [rel_width(e) for d in cal.base_latency_ms.values() for e in d.values()]
        server = [rel_width(e) for d in cal.server_latency_ms.values() for e in d.values()]
        kc = cal.interference["cpu"]["cpu_interference"]
        rows[k] = {
            "requests_per_trace": k,
            "base_latency_rel_width_median": float(np.nanmedian(base)),
            "base_latency_rel_width_max": float(np.nanmax(base)),
            "server_latency_rel_width_median": float(np.nanmedian(server)),
            "cpu_interference": [kc.value, kc.low, kc.high],
            "noise_sigma": {t: [e.value, e.low, e.high] for t, e in cal.noise_sigma.items()},
            "goodput_scale": {l: [e.value, e.low, e.high] for l, e in
                              cal.link_goodput_scale.items()},
        }
        print(json.dumps(rows[k]), flush=True)
    (out / "widths.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
