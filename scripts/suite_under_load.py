"""Run the test suite repeatedly beside a CPU burner: do the tests hold on a loaded machine?

    python scripts/suite_under_load.py --runs 10 --fast    # the fast tier, 10 times in a row
    python scripts/suite_under_load.py --runs 3            # the whole suite, 3 times
    python scripts/suite_under_load.py --runs 3 --burners 4 -- -k fleet   # extra pytest args

A *burner* is a process spinning on one core at normal priority (``--burners``, default one per
core), started before the first run and stopped after the last (or on Ctrl-C). Each run is the
README's test command (``pytest -n auto --maxprocesses 4``, so the suite's own workers compete with
the burners), in the fast tier with ``--fast`` (``-m "not slow and not live"``). Prints one line
per run (pytest's summary, its wall time, the load average) and stops at the first failing run
unless ``--keep-going``; the exit status is 0 only when every run passed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The README's test command after ``python -m pytest``.
SUITE_ARGS = ("-n", "auto", "--maxprocesses", "4", "-q", "-p", "no:cacheprovider")
FAST_TIER = ("-m", "not slow and not live")


def _burn() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def _summary(output: str) -> str:
    """pytest's last line (``N passed, ... in S s``), or the last non-empty one."""
    lines = [line.strip(" =") for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs in a row (default 3)")
    parser.add_argument("--fast", action="store_true", help="the fast tier only")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 1,
                        help="spinning processes beside the suite (default: one per core)")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failing run")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burners < 0:
        parser.error(f"--runs must be >= 1 and --burners >= 0, got {args.runs} and {args.burners}")
    cmd = [sys.executable, "-m", "pytest", *SUITE_ARGS, *(FAST_TIER if args.fast else ()),
           *args.pytest_args]
    print(f"$ python {shlex.join(cmd[1:])}  (beside {args.burners} burner(s), {os.cpu_count()} cores)",
          flush=True)
    burners = [mp.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    passed = ran = 0
    try:
        for i in range(1, args.runs + 1):
            start = time.monotonic()
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            ran += 1
            passed += done.returncode == 0
            print(f"run {i}/{args.runs}: {_summary(done.stdout)} [{time.monotonic() - start:.0f} s "
                  f"wall, load {load}]", flush=True)
            if done.returncode != 0:
                sys.stdout.write(done.stdout[-4000:])
                if not args.keep_going:
                    break
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for b in burners:
            b.terminate()
        for b in burners:
            b.join(timeout=5)
    print(f"{passed} of {ran} runs passed in a row" if passed == ran else
          f"{passed} of {ran} runs passed")
    return 0 if passed == ran == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
