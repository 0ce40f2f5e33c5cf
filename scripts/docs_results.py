"""Regenerate every results table and figure of the documentation from run outputs.

    python scripts/docs_results.py                 # run every command, then write docs/generated/
    python scripts/docs_results.py --quick         # the same commands on tiny budgets (seconds):
                                                   #   proves the pipeline, not the published figures
    python scripts/docs_results.py --render-only   # rewrite the snippets from runs already in --runs
    python scripts/docs_results.py --only main_job,validate

Each product is one command of the package (as a user would type it) whose output directory lies
under ``--runs`` (default ``runs/docs``); the script reads that output and writes
``docs/generated/<name>.md`` (a Markdown snippet the pages include) and, for figures,
``docs/generated/<name>-<figure>.png``. Every snippet states the command, the package version and
the machine (``uname``, CPU count, load average when the run started), so a table in the docs
always says where it came from. Nothing in ``docs/generated/`` is edited by hand.

Pages include a snippet with ``--8<-- "generated/<name>.md"`` (``--only`` lists the names). Besides
the results, how far to trust it and many phones pages, the products cover the world page
(``provenance``), the benchmarks page (``paper_grid``, ``paper_grid_fitted``), your own device
(``gap``) and performance (``bench``, a timing: only meaningful on a quiet machine, so ``--quick``
does not shorten it and it is best run alone with ``--only bench``).

The full run takes about 40 minutes on a 2-core machine (the 18-cell grid, the drift suite and the
fleet benchmark dominate); run it on a quiet machine, since the snippets record its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Agents of the comparison tables, in table order.
COMPARISON = "qlearning,tabular-bandit,linucb,thompson,predictor,oracle,random"
GRID_AGENTS = COMPARISON + ",fixed:local/cpu/fp32,fixed:cloud/gpu/fp32"
ALL_PHONES = "mi8pro,galaxy_s10e,moto_x_force"
ALL_SCENARIOS = "non_streaming,streaming,translation"
SMALL_BENCH = ["--train-steps", "2000", "--eval-steps", "300", "--log-interval", "500",
               "--seeds", "2"]


@dataclass
class Product:
    """One command whose output becomes one snippet (and maybe figures) of the docs."""

    name: str
    what: str                    # one line: what the table or figure shows
    argv: list[str]              # the command, `{out}` standing for its output directory
    quick: list[str]             # extra arguments (or replacements) of the --quick run
    render: Callable[[Path, str], tuple[str, list[tuple[str, str]]]]
    stdout: bool = False         # the product is the command's standard output
    replace_in_quick: dict[str, str] = field(default_factory=dict)
    keep: tuple[str, ...] = ()   # output files copied as they are next to the snippet (data)

    def command(self, out: Path, quick: bool) -> list[str]:
        argv = [a.replace("{out}", str(out)) for a in self.argv]
        if quick:
            changes = dict(self.replace_in_quick)
            changes.update(zip(self.quick[::2], self.quick[1::2]))  # flag-value pairs
            for flag, value in changes.items():
                if flag in argv:
                    argv[argv.index(flag) + 1] = value
                else:
                    argv += [flag, value]
        return argv


# ---- readers: output directory (and captured stdout) -> Markdown, figures -----------------------


def _read(path: Path) -> str:
    if not path.is_file():
        raise SystemExit(f"docs_results: {path} is missing; run without --render-only first")
    return path.read_text()


def _benchmark_summary(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    return _read(out / "summary.md").strip(), []


def _benchmark_with_figures(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    figures = [(f, caption) for f, caption in (
        ("efficiency_per_network.png", "Energy efficiency against the mobile CPU per network, "
                                       "per cell, mean and 95 % interval over seeds"),
        ("oracle_match_vs_steps.png", "Learning curves: oracle match in the training window "
                                      "against training requests, per cell"),
        ("energy_vs_steps.png", "Energy per request while training, per cell, with the oracle's "
                                "and the mobile CPU's evaluated energy"))
        if (out / f).is_file()]
    return _read(out / "summary.md").strip(), [(str(out / f), c) for f, c in figures]


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line else "" for line in text.splitlines())


def _comparison(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    """Geometric means over the cells (all, then per scenario when several), every cell folded."""
    import csv

    from agents.experiments.comparison import geomean_table
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # table order: as the command lists them (results arrive in completion order)
    argv = shlex.split(json.loads(_read(out / "docs_results.json"))["command"])
    listed = argv[argv.index("--agents") + 1].split(",") if "--agents" in argv else []
    present = list(dict.fromkeys(r["agent"] for r in rows))
    agents = [a for a in listed if a in present] + [a for a in present if a not in listed]
    parts = ["Geometric means over every cell and seed:", "", geomean_table(rows, agents).strip()]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    if len(scenarios) > 1:
        for scenario in scenarios:
            part = [r for r in rows if r["scenario"] == scenario]
            parts += ["", f"Cells of the {scenario} scenario only:", "",
                      geomean_table(part, agents).strip()]
    parts += ["", '??? note "Every cell: mean and 95 % interval over seeds"', "",
              _indent(_demote_headings(_read(out / "summary.md").strip()))]
    return "\n".join(parts), []


def _stdout_table(out: Path, stdout: str) -> tuple[str, list[tuple[str, str]]]:
    """The command's own report: Markdown as it is, plain text in a code block."""
    text = stdout.strip()
    if "\n|---" in text or text.startswith("|"):
        return text, []
    return f"```text\n{text}\n```", []


def _gap(out: Path, stdout: str) -> tuple[str, list[tuple[str, str]]]:
    figures = [(str(f), f"Sim against measured, {f.stem.removeprefix('scatter-')}")
               for f in sorted(out.glob("scatter-*.png"))]
    return _stdout_table(out, stdout)[0], figures


def _paper_table(agents: tuple[str, ...]):
    def render(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
        from agents.experiments.paper_table import table
        return table(out, agents=agents).strip(), []
    return render


def _oracle_table(out: Path, stdout: str) -> tuple[str, list[tuple[str, str]]]:
    """scripts/oracle_table.py's lines as a Markdown table (and its pooled line below)."""
    rows, rest = [], []
    for line in stdout.strip().splitlines():
        if "|" in line and "state ceiling" in line:
            left, best = line.split("|", 1)
            device, scenario, setting, *_ = left.split()
            ceiling = left.split("state ceiling", 1)[1].strip()
            rows.append(f"| {device} | {scenario} | {setting} | {ceiling} | {best.strip()} |")
        elif line.strip():
            rest.append(line.strip())
    table = ["| device | scenario | setting | state ceiling | oracle's targets, most often best "
             "first |", "|---|---|---|---|---|", *rows]
    return "\n".join(table + [""] + [f"{r}" for r in rest]), []


def _drift(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    figures = [(str(out / "drift.png"), "Near-optimal rate in windows around each shift")] \
        if (out / "drift.png").is_file() else []
    return _read(out / "summary.md").strip(), figures


def _sensitivity(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    figures = [(str(out / "tornado_headline.png"),
                "One at a time: the oracle's efficiency against the mobile CPU and against the "
                "cloud with each top parameter at the low and the high end of its range")]
    return _read(out / "sensitivity.md").strip(), figures


def _fleet(out: Path, _: str) -> tuple[str, list[tuple[str, str]]]:
    figures = [(str(out / "fleet.png"), "Energy, QoS violations and price of anarchy against N")] \
        if (out / "fleet.png").is_file() else []
    return _read(out / "table.md").strip(), figures


def _demote_headings(markdown: str) -> str:
    """A report's title goes (the page has its own); its other headings sit below the page's."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("#"):
            line = "##" + line
        lines.append(line)
    return "\n".join(lines)


PY = [sys.executable]
CLI = PY + ["-m", "agents.cli"]

PAPER_GRID = CLI + ["sweep", "--agents", "qlearning,oracle,fixed:local/cpu/fp32,fixed:cloud/gpu/fp32",
                    "--device", ALL_PHONES, "--scenario", ALL_SCENARIOS, "--setting",
                    "static,dynamic", "--seeds", "5", "--workers", "1", "--no-figures", "--out",
                    "{out}", "--force"]
PAPER_GRID_QUICK = ["--device", "mi8pro", "--seeds", "1", "--train-steps", "1000",
                    "--eval-steps", "200"]
HOST_TRACES = ["--trace", "live-host-non_streaming-dynamic", "--trace",
               "live-host-non_streaming-static"]

PRODUCTS = [
    Product("main_job", "The main job: the Q-learner against the mobile CPU, the cloud, the oracle "
            "and random on the default cell (Mi 8 Pro, non-streaming, dynamic)",
            CLI + ["benchmark", "--out", "{out}", "--force", "--no-figures"], SMALL_BENCH,
            _benchmark_summary),
    Product("bench_cells", "Static and dynamic cells of non-streaming and translation on the "
            "Mi 8 Pro, the reconstruction's state bins",
            CLI + ["benchmark", "--scenario", "non_streaming,translation", "--setting",
                   "static,dynamic", "--seeds", "3", "--out", "{out}", "--force"], SMALL_BENCH,
            _benchmark_with_figures),
    Product("per_network", "The same cells with bins that tell the catalog's networks apart "
            "(`--features per_network`)",
            CLI + ["benchmark", "--scenario", "non_streaming,translation", "--setting",
                   "static,dynamic", "--seeds", "3", "--features", "per_network", "--out",
                   "{out}", "--force", "--no-figures"], SMALL_BENCH, _benchmark_summary),
    Product("oracle_table", "Which target the oracle picks, per cell, on every phone",
            PY + [str(ROOT / "scripts" / "oracle_table.py"), "--device", ALL_PHONES],
            [], _oracle_table, stdout=True, replace_in_quick={"--device": "mi8pro"}),
    Product("comparison", "The paper's comparison on the Mi 8 Pro: the Q-learner, contextual "
            "bandits and a prediction-based baseline",
            CLI + ["benchmark", "--agents", COMPARISON, "--device", "mi8pro", "--scenario",
                   "non_streaming,translation", "--setting", "static,dynamic", "--seeds", "3",
                   "--out", "{out}", "--force", "--no-figures"], SMALL_BENCH, _comparison),
    Product("grid", "The paper's grid: 3 phones x 3 scenarios x 2 settings, every agent family",
            CLI + ["sweep", "--agents", GRID_AGENTS, "--device", ALL_PHONES, "--scenario",
                   ALL_SCENARIOS, "--setting", "static,dynamic", "--seeds", "3", "--workers",
                   "2", "--no-figures", "--out", "{out}", "--force"],
            ["--train-steps", "1000", "--eval-steps", "200"], _comparison,
            replace_in_quick={"--device": "mi8pro", "--seeds": "1",
                              "--agents": "qlearning,tabular-bandit,oracle,random"}),
    Product("drift", "Drift: the world shifts under agents learning online",
            CLI + ["drift", "--agents", COMPARISON, "--seeds", "3", "--out", "{out}", "--force"],
            ["--shift-at", "2000", "--after", "1000", "--window", "250"], _drift,
            replace_in_quick={"--seeds": "1", "--agents": "qlearning,oracle,random"}),
    Product("validate", "The world against bundled public measurements",
            CLI + ["validate"], [], _stdout_table, stdout=True),
    Product("sensitivity", "Sensitivity of the world's conclusions to its estimates",
            CLI + ["sensitivity", "--quick", "--out", "{out}", "--force"],
            ["--trajectories", "2", "--samples", "8", "--sobol-top", "1", "--tornado-top", "4",
             "--episodes", "2", "--device", "mi8pro", "--scenario", "non_streaming",
             "--setting", "static"], _sensitivity),
    Product("fleet", "Many phones, benchmark mix: energy, QoS and price of anarchy against N",
            CLI + ["fleet-benchmark", "--ppo-timesteps", "16384", "--out", "{out}", "--force",
                   "--figure", "{out}/fleet.png"],
            ["--sizes", "1,2,4", "--rounds", "20", "--edge-rounds", "20", "--train-rounds",
             "300"], _fleet, replace_in_quick={"--ppo-timesteps": "256"}),
    Product("fleet_translation", "Many phones, one kind of phone (translation): contention alone",
            CLI + ["fleet-benchmark", "--mix", "translation", "--out", "{out}", "--force"],
            ["--sizes", "1,2,4", "--rounds", "20", "--edge-rounds", "20", "--train-rounds",
             "300", "--ppo-timesteps", "256"], _fleet),
    # for the pages of the world, benchmarks, your own device and performance
    Product("provenance", "Where the world's numbers come from: sourced and estimated, by file",
            CLI + ["provenance"], [], _stdout_table, stdout=True),
    Product("paper_grid", "The paper's grid, the reconstruction's state bins: oracle and Q-learner "
            "against the paper's headline numbers",
            PAPER_GRID, PAPER_GRID_QUICK, _paper_table(("oracle", "qlearning"))),
    Product("paper_grid_fitted", "The paper's grid with fitted state bins (`--features fitted`)",
            PAPER_GRID + ["--features", "fitted"], PAPER_GRID_QUICK, _paper_table(("qlearning",))),
    Product("gap", "The sim-to-real gap of the fitted host profile on the bundled host recordings",
            CLI + ["gap", *HOST_TRACES, "--profile", "host", "--out", "{out}"],
            ["--train-steps", "500", "--seeds", "1"], _gap, stdout=True,
            keep=("gap.json",)),  # the report `autoscale provenance` reads by default
    Product("bench", "Speed: steps per second of the env, the vector env, the sim and the fleet",
            PY + [str(ROOT / "scripts" / "bench.py"), "--quick", "--skip-main-job", "--json",
                  "{out}/bench.json"], [], _stdout_table, stdout=True),
]


# ---- the stamp every snippet carries -----------------------------------------------------------


def machine() -> str:
    """``uname`` in one line, the CPU count and the load average (what the run competed with)."""
    u = platform.uname()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, "
            f"load average {load:.1f} at the start, Python {platform.python_version()}")


def display_command(argv: list[str], runs: Path) -> str:
    """The command as a user types it: `autoscale ...` or `python scripts/...`, paths relative."""
    shown = list(argv)
    if shown[:3] == CLI:
        shown = ["autoscale"] + shown[3:]
    elif shown[:1] == PY:
        shown = ["python"] + [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a
                              for a in shown[1:]]
    text = shlex.join(shown)
    return text.replace(str(ROOT) + "/", "")


def write_product(p: Product, out: Path, stdout: str, command: str, stamp: dict,
                  generated: Path) -> list[Path]:
    """The snippet and the figures of one product; returns the files written."""
    from autoscale_env.world.files import atomic_write

    body, figures = p.render(out, stdout)
    body = body.replace(str(ROOT) + os.sep, "")  # paths as a user of a checkout reads them
    written = []
    images = []
    for source, caption in figures:
        target = generated / f"{p.name}-{Path(source).name}"
        shutil.copyfile(source, target)
        written.append(target)
        images.append(f"![{caption}]({generated.name}/{target.name})\n\n*{caption}.*")
    mode = (" Quick mode: tiny budgets that prove the pipeline; not the published figures."
            if stamp["quick"] else "")
    text = "\n".join([
        f"<!-- generated by scripts/docs_results.py from {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}; do not edit -->",
        "",
        f'!!! info "How this was made ({stamp["seconds"]:.0f} s)"',
        f"    `{command}`",
        "",
        f"    autoscale-env {stamp['version']}, {stamp['date']}; {stamp['machine']}.{mode}",
        "",
        _demote_headings(body),
        "",
        *[i + "\n" for i in images],
    ])
    snippet = generated / f"{p.name}.md"
    atomic_write(snippet, text.rstrip() + "\n")
    for name in p.keep:
        shutil.copyfile(out / name, generated / name)
        written.append(generated / name)
    written.append(snippet)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets: seconds per product, to prove the pipeline")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing; rewrite the snippets from the outputs in --runs")
    parser.add_argument("--only", default="",
                        help="comma list of products (default: all): "
                             + ", ".join(p.name for p in PRODUCTS))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "docs"),
                        help="where the commands write their outputs")
    parser.add_argument("--generated", default=str(ROOT / "docs" / "generated"),
                        help="where the snippets and figures go")
    args = parser.parse_args(argv)

    import autoscale_env
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - {p.name for p in PRODUCTS})
    if unknown:
        parser.error(f"unknown product(s) {', '.join(unknown)}; valid: "
                     + ", ".join(p.name for p in PRODUCTS))
    products = [p for p in PRODUCTS if not names or p.name in names]
    runs, generated = Path(args.runs).resolve(), Path(args.generated).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    generated.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for p in products:
        out = runs / p.name
        argv_p = p.command(out, args.quick)
        command = display_command(argv_p, runs)
        log = out / "docs_results.json"
        if args.render_only:
            record = json.loads(_read(log))
        else:
            out.mkdir(parents=True, exist_ok=True)
            record = {"command": command,
                      "quick": args.quick and bool(p.quick or p.replace_in_quick),
                      "version": autoscale_env.__version__,
                      "date": datetime.date.today().isoformat(), "machine": machine()}
            print(f"[{p.name}] {command}", flush=True)
            start = time.perf_counter()
            # long commands report their own progress on stderr, which stays on the terminal
            done = subprocess.run(argv_p, cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=None)
            record["seconds"] = time.perf_counter() - start
            record["stdout"] = done.stdout
            if done.returncode != 0:
                sys.stdout.write(done.stdout)
                print(f"[{p.name}] failed with exit code {done.returncode}", file=sys.stderr)
                return done.returncode
            log.write_text(json.dumps(record, indent=1))
        for path in write_product(p, out, record["stdout"], record["command"], record, generated):
            print(f"[{p.name}] wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
