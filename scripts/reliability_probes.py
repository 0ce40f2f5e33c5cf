"""Run the reliability probes, each under ``/usr/bin/time -v``, and write their table.

    python scripts/reliability_probes.py [--out runs/probes] [--only NAME,...] [--skip-slow]

Each probe is one command that must be *refused* (or, for ``calibrate-80k`` and the server
crowd, complete) with a given exit code and message. For every probe the table gives the
command, the expected result, the observed exit code, whether the expected message was printed,
the peak resident memory (``Maximum resident set size``) and the wall time. A refused oversize
input must peak under 300 MB.

Measure on a quiet machine: the figures are only as good as the machine is idle. Inputs the
probes need (a FIFO, a sparse 1 GB file, a 100,000-deep JSON, a features file of 7 x 1,500
edges, an 80,000-request trace) are made in ``--out/inputs`` first; none is committed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RSS_LIMIT_MB = 300.0


@dataclass
class Probe:
    name: str
    command: list[str]
    expect_code: int | tuple[int, ...]
    expect_text: str
    what: str
    rss_bound: bool = True  # a refused input: peak RSS must stay under RSS_LIMIT_MB
    slow: bool = False
    timeout_s: float = 300.0


def cli(*args: str) -> list[str]:
    return [PY, "-m", "agents.cli", *args]


def make_inputs(d: Path) -> dict[str, Path]:
    """The hostile files the probes feed in (made afresh)."""
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    fifo = d / "fifo.json"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    paths["fifo"] = fifo
    fifo_csv = d / "fifo.csv"
    fifo_csv.unlink(missing_ok=True)
    os.mkfifo(fifo_csv)
    paths["fifo_csv"] = fifo_csv
    zero = d / "zero.json"
    zero.unlink(missing_ok=True)
    zero.symlink_to("/dev/zero")
    paths["zero"] = zero
    deep = d / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    paths["deep"] = deep
    big = d / "big.csv"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GB that costs no disk
    paths["big_csv"] = big
    header = (ROOT / "autoscale_env/data/measurements/slim_pretrained.csv").read_text()
    empty = d / "header_only.csv"
    empty.write_text("\n".join(header.splitlines()[:4]) + "\n")
    paths["header_only"] = empty
    sys.path.insert(0, str(ROOT))
    from autoscale_env.tools.fit_bins import features_toml
    huge = d / "huge_features.toml"
    huge.write_text(features_toml([[float(i) for i in range(1500)]] * 7, "# 7 x 1,500 edges"))
    paths["huge_features"] = huge
    profile = d / "profile.toml"
    profile.write_text("")
    paths["profile"] = profile
    return paths


def probes(p: dict[str, Path], out: Path) -> list[Probe]:
    trace80k = out / "inputs" / "sim-80k.csv.gz"
    return [
        Probe("sensitivity-trajectories", cli("sensitivity", "--trajectories", "1000000000",
                                              "--out", str(out / "s1")),
              2, "--trajectories 1000000000 means", "a Morris design of 10^9 trajectories"),
        Probe("sensitivity-episodes", cli("sensitivity", "--episodes", "1000000000",
                                          "--out", str(out / "s2")),
              2, "--episodes 1000000000 is over the limit", "10^9 episodes per cell"),
        Probe("sensitivity-samples", cli("sensitivity", "--samples", str(2**40),
                                         "--out", str(out / "s3")),
              2, "--samples 1099511627776 means", "2^40 Sobol samples"),
        Probe("sensitivity-workers", cli("sensitivity", "--quick", "--workers", "1000",
                                         "--out", str(out / "s4")),
              2, "--workers 1000 is over the limit", "1,000 worker processes"),
        Probe("sensitivity-seed", cli("sensitivity", "--quick", "--seed", "-1",
                                      "--out", str(out / "s5")),
              2, "--seed must be an integer in 0..2**32-1", "a negative seed"),
        Probe("fleet-phones", [PY, "-c", "from autoscale_env.fleet import parallel_env; "
                                         "parallel_env(num_phones=10**5)"],
              1, "num_phones 100000 is over the limit", "a fleet of 10^5 phones"),
        Probe("features-states", [PY, "-c", "import gymnasium as gym, autoscale_env; "
                                            f"gym.make('AutoScale-v0', features={str(p['huge_features'])!r})"],
              1, "over the limit of 1048576", "features of 7 x 1,500 edges (1501^7 states)"),
        Probe("fit-bins-start", cli("fit-bins", "--start", str(p["huge_features"]),
                                    "--out", str(out / "f.toml")),
              2, "over the limit of 1048576", "fit-bins from 7 x 1,500 edges"),
        Probe("fit-bins-max-states", cli("fit-bins", "--max-states", "0",
                                         "--out", str(out / "f.toml")),
              2, "--max-states must be in 1..1048576", "--max-states 0"),
        Probe("fit-bins-requests", cli("fit-bins", "--requests", "0", "--out", str(out / "f.toml")),
              2, "--requests must be an integer >= 1", "--requests 0"),
        Probe("fit-bins-seeds", cli("fit-bins", "--seeds", "0", "--out", str(out / "f.toml")),
              2, "--seeds must be an integer >= 1", "--seeds 0"),
        Probe("gap-seeds", cli("gap", "--trace", "sim-mi8pro-non_streaming-dynamic",
                               "--profile", "mi8pro", "--seeds", "0"),
              2, "--seeds must be >= 1", "gap --seeds 0"),
        Probe("baseline-fifo", cli("evaluate", "--model", str(p["fifo"])),
              (1, 2), "not a regular file", "a baseline .json that is a FIFO", timeout_s=60),
        Probe("baseline-dev-zero", cli("evaluate", "--model", str(p["zero"])),
              (1, 2), "not a regular file", "a baseline .json that is /dev/zero", timeout_s=60),
        Probe("baseline-deep-json", cli("evaluate", "--model", str(p["deep"])),
              (1, 2), "nested 100000 levels deep", "a baseline .json nested 100,000 deep"),
        Probe("validate-fifo", cli("validate", "--measurements", str(p["fifo_csv"])),
              2, "not a regular file", "validate --measurements FIFO", timeout_s=60),
        Probe("validate-1gb", cli("validate", "--measurements", str(p["big_csv"])),
              2, "exceeds the limit of", "validate --measurements of 1 GB"),
        Probe("validate-empty", cli("validate", "--measurements", str(p["header_only"])),
              2, "no measurement compared", "validate of a header-only file"),
        Probe("validate-profile", cli("validate", "--profile", f"nosuch={p['profile']}"),
              2, "no measurement row names device 'nosuch'", "validate --profile nosuch=..."),
        Probe("serve-no-token", cli("serve", "--role", "edge", "--host", "0.0.0.0",
                                    "--log-level", "ERROR"),
              2, "--insecure", "serve on all interfaces without a token", rss_bound=False),
        Probe("serve-long-token", cli("serve", "--role", "edge", "--token", "x" * 257),
              2, "1 to 256 utf-8 bytes, got 257", "serve --token of 257 bytes",
              rss_bound=False),
        Probe("server-crowd", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                               "addopts=", "tests/reliability/test_server_admission.py", "-k",
                               "crowd"],
              0, "1 passed", "token holder vs 64 slow connections (127.0.0.1, 127.0.0.2, ::1): "
                             ">= 23 of 24 served", rss_bound=False, slow=True),
        Probe("symlink-race", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                               "addopts=", "tests/reliability/test_symlink_lock.py"],
              0, "2 passed", "record through a symlink into a running recording: refused",
              rss_bound=False),
        Probe("calibrate-80k", cli("calibrate", "--trace", str(trace80k), "--out",
                                   str(out / "cal80k" / "fitted.toml"), "--force"),
              0, "", "calibrate an 80,000-request trace (default settings): completes",
              rss_bound=False, slow=True, timeout_s=1800),
    ]


def record_80k(out: Path) -> Path:
    path = out / "inputs" / "sim-80k.csv.gz"
    if not path.exists():
        subprocess.run([PY, "-m", "autoscale_env", "record", "--requests", "80000",
                        "--out", str(path), "--quiet"], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return path


def run_probe(pr: Probe) -> dict:
    cmd = ["/usr/bin/time", "-v", *pr.command]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=pr.timeout_s,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", str(e.stdout or ""), str(e.stderr or "")
    wall = time.monotonic() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    rss_mb = int(rss.group(1)) / 1024 if rss else float("nan")
    want = pr.expect_code if isinstance(pr.expect_code, tuple) else (pr.expect_code,)
    text_ok = pr.expect_text in (out + err)
    ok = code in want and text_ok and (not pr.rss_bound or rss_mb < RSS_LIMIT_MB)
    message = next((line for line in (err + out).splitlines()
                    if "error" in line.lower() or "passed" in line or "failed" in line), "")
    return {"probe": pr.name, "what": pr.what, "command": shlex.join(pr.command[2:] if
                                                                    pr.command[:2] == [PY, "-m"]
                                                                    else pr.command[1:]),
            "expected": f"exit {'/'.join(map(str, want))}"
                        + (f", '{pr.expect_text}'" if pr.expect_text else "")
                        + (f", RSS < {RSS_LIMIT_MB:.0f} MB" if pr.rss_bound else ""),
            "code": code, "text_ok": text_ok, "rss_mb": rss_mb, "wall_s": wall, "ok": ok,
            "message": message.strip()[:160]}


def table(rows: list[dict]) -> str:
    lines = ["| probe | input | command | expected | observed | peak RSS (MB) | wall (s) | |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        observed = f"exit {r['code']}" + ("" if r["text_ok"] else ", message missing")
        lines.append(f"| {r['probe']} | {r['what']} | `{r['command'][:90]}` | {r['expected']} | "
                     f"{observed} | {r['rss_mb']:.0f} | {r['wall_s']:.1f} | "
                     f"{'ok' if r['ok'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/probes", help="inputs and the table go here")
    p.add_argument("--only", default="", help="comma list of probe names")
    p.add_argument("--skip-slow", action="store_true", help="skip calibrate-80k and the crowd")
    args = p.parse_args(argv)
    if not shutil.which("/usr/bin/time"):
        print("reliability_probes: /usr/bin/time is needed (apt-get install time)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    paths = make_inputs(out / "inputs")
    chosen = [pr for pr in probes(paths, out)
              if (not args.only or pr.name in args.only.split(","))
              and not (args.skip_slow and pr.slow)]
    if any(pr.name == "calibrate-80k" for pr in chosen):
        record_80k(out)
    rows = []
    for pr in chosen:
        r = run_probe(pr)
        rows.append(r)
        print(f"{r['probe']:26s} exit {r['code']!s:8s} rss {r['rss_mb']:7.0f} MB "
              f"{r['wall_s']:7.1f} s  {'ok' if r['ok'] else 'FAIL'}  {r['message']}", flush=True)
    text = table(rows)
    (out / "probes.md").write_text(text)
    print("\n" + text + f"\nwritten to {out / 'probes.md'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
