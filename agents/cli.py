"""The ``autoscale`` command: ``benchmark``, ``train``, ``evaluate``, ``drift``, ``record``,
``serve``, ``sweep``, ``provenance``, ``fit-bins``, ``fleet-benchmark``, ``validate``,
``sensitivity``, ``calibrate``, ``gap``.

Each subcommand parses its options and calls the library; ``main(argv)`` returns an exit code, so
the scripts in ``scripts/`` and the console script are thin wrappers around it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoscale_env.world.errors import AutoScaleError

DEFAULT_AGENTS = "qlearning,oracle,fixed:local/cpu/fp32,fixed:cloud/gpu/fp32,random"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _hp(values: list[str]) -> dict[str, dict[str, Any]]:
    """``--hp qlearning.epsilon=0.05`` -> {"qlearning": {"epsilon": 0.05}} (values parsed as JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        agent, dot, name = key.partition(".")
        if not sep or not dot:
            raise argparse.ArgumentTypeError(f"--hp {item!r}: expected AGENT.NAME=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(agent, {})[name] = value
    return out


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--eval-steps 0`` would divide by zero later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


#: Every option's default appears in ``--help`` (argparse adds "(default: ...)").
FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def valid_names() -> dict[str, str]:
    """The valid names for the options, as shown in ``--help`` (read from the data files)."""
    from agents import agent_names
    from autoscale_env.world import config
    try:
        targets = ", ".join(str(t) for t in config.load_device("mi8pro").targets)
    except Exception:  # help must never fail; the option itself validates
        targets = "see env.unwrapped.targets"
    return {
        "agents": ", ".join(a for a in agent_names() if a != "fixed:<target>")
                  + f", fixed:<target> (mi8pro targets: {targets})",
        "devices": ", ".join(config.device_names()) + ", or a path to a profile .toml",
        "scenarios": ", ".join(config.load_scenarios()),
        "settings": ", ".join(config.SETTINGS),
        "features": ", ".join(config.FEATURE_SETS) + ", or a path to a features .toml",
        "rewards": ", ".join(config.load_reward_presets()),
    }


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``benchmark`` and ``sweep``."""
    names = valid_names()
    p.add_argument("--agents", default=DEFAULT_AGENTS,
                   help=f"comma list of agents; valid: {names['agents']}; dqn, ppo, a2c need the "
                        "[sb3] extra")
    p.add_argument("--device", default="mi8pro", help=f"comma list of phones: {names['devices']}")
    p.add_argument("--scenario", default="non_streaming",
                   help=f"comma list of scenarios: {names['scenarios']}")
    p.add_argument("--setting", default="dynamic", help=f"comma list of settings: {names['settings']}")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell")
    p.add_argument("--train-steps", type=int, default=64_000, help="online training requests")
    p.add_argument("--eval-steps", type=_positive_int, default=5_000,
                   help="greedy evaluation requests (>= 1)")
    p.add_argument("--log-interval", type=int, default=1_000, help="steps per TensorBoard point")
    p.add_argument("--hp", action="append", default=[], metavar="AGENT.NAME=VALUE",
                   help="override a hyperparameter (repeatable), e.g. --hp qlearning.epsilon=0.05; "
                        "defaults: agents/data/hyperparams.toml, agents.qlearning.QLearningConfig")
    p.add_argument("--reward", default="energy",
                   help=f"reward preset (autoscale_env/data/rewards.toml): {names['rewards']}")
    p.add_argument("--features", default="paper", help=f"state bins: {names['features']}")
    p.add_argument("--out", default="runs/benchmark", help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    p.add_argument("--resume", action="store_true", help="keep finished tasks, run the rest")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def tasks_and_config(args):
    from agents.experiments.benchmark import BenchmarkConfig, grid
    from autoscale_env.world import config
    for d in _csv(args.device):
        config.resolve_device_path(d)
    for s in _csv(args.scenario):
        config.get_scenario(s)
    for s in _csv(args.setting):
        config.check_setting(s)
    for a in _csv(args.agents):
        from agents import agent_class
        agent_class(a)
    tasks = grid(_csv(args.agents), _csv(args.device), _csv(args.scenario), _csv(args.setting),
                 args.seeds)
    config.load_features(args.features)  # a bad name or file fails before any task starts
    env_kwargs = {"reward": args.reward} if args.reward != "energy" else {}
    if args.features != "paper":
        features = args.features
        if features not in config.FEATURE_SETS:  # workers may run elsewhere: an absolute path
            features = str(Path(features).resolve())
        env_kwargs["features"] = features
    cfg = BenchmarkConfig(train_steps=args.train_steps, eval_steps=args.eval_steps,
                          log_interval=args.log_interval, hyperparameters=_hp(args.hp),
                          env_kwargs=env_kwargs)
    return tasks, cfg


def cmd_benchmark(args) -> int:
    from agents.experiments.benchmark import ResultStore, finish, run
    tasks, cfg = tasks_and_config(args)
    with ResultStore(args.out, force=args.force, resume=args.resume, config=cfg) as store:
        run(tasks, cfg, store, progress=not args.quiet)
        print(finish(store, figures=not args.no_figures))
    print(output_listing(args.out))
    return 0


#: What each output of a benchmark or sweep holds, in the order they are listed.
OUTPUTS = {
    "results.csv": "one row per agent x cell x seed",
    "per_network.csv": "energy per network (figures)",
    "curves.csv": "training curves (figures)",
    "summary.md": "the table above",
    "config.json": "the run's configuration",
}


def output_listing(out: str | Path) -> str:
    """The closing lines of ``benchmark`` / ``sweep``: every file the run produced."""
    out = Path(out)
    lines = [f"wrote to {out}/:"]
    for name, what in OUTPUTS.items():
        if (out / name).exists():
            lines.append(f"  {out / name}  ({what})")
    for png in sorted(out.glob("*.png")):
        lines.append(f"  {png}  (figure)")
    tb = out / "tb"
    if tb.is_dir():
        runs = sum(1 for d in tb.iterdir() if d.is_dir())
        lines.append(f"  {tb}/  ({runs} TensorBoard runs: tensorboard --logdir {tb})")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the benchmark's summary table for evaluation rows."""
    from agents.experiments.benchmark import summarize
    print(summarize(rows), end="")


def cmd_train(args) -> int:
    from agents.experiments.train import train
    path = train(agent=args.agent, device=args.device, scenario=args.scenario,
                 setting=args.setting, steps=args.steps, seed=args.seed, out=args.out,
                 hyperparameters=_hp([f"{args.agent}.{h}" for h in args.hp]).get(args.agent, {}),
                 checkpoint_every=args.checkpoint_every, resume=args.resume, force=args.force,
                 progress=not args.quiet,
                 features=args.features)
    print(f"model: {path}")  # saved, or a finished model kept (see train --resume)
    if args.eval_steps > 0:
        from agents.experiments.saved import evaluate_saved
        rows = evaluate_saved(path, devices=[args.device], scenarios=[args.scenario],
                              settings=[args.setting], seeds=1, eval_steps=args.eval_steps,
                              features=args.features)
        print(f"\nGreedy evaluation of {path} on {args.eval_steps} requests it did not train "
              "on (the benchmark's evaluation seed):\n")
        print_table(rows)
        print(f"\nevaluate it elsewhere: autoscale evaluate --model {path} --scenario ...")
    return 0


def cmd_evaluate(args) -> int:
    from agents.experiments.saved import evaluate_saved
    rows = evaluate_saved(args.model, devices=_csv(args.device) or None,
                          scenarios=_csv(args.scenario) or None,
                          settings=_csv(args.setting) or None, seeds=args.seeds,
                          eval_steps=args.eval_steps,
                          features=None if args.features == "auto" else args.features,
                          reward=args.reward)
    print_table(rows)
    return 0


def cmd_drift(args) -> int:
    from agents import agent_class
    from agents.experiments.drift_study import DriftConfig, run_suite
    from autoscale_env.backends.drift import shift_names
    valid = shift_names()
    shifts = valid if args.shifts == "all" else _csv(args.shifts)
    for s in shifts:
        if s not in valid:
            from autoscale_env.world.errors import UnknownNameError
            raise UnknownNameError("drift shift", s, valid)
    for a in _csv(args.agents):
        agent_class(a)
    cfg = DriftConfig(device=args.device, shift_at=args.shift_at, after=args.after,
                      window=args.window, hyperparameters=_hp(args.hp))
    try:
        cfg.resolved()
    except ValueError as e:
        print(f"autoscale drift: error: {e}", file=sys.stderr)
        return 2
    print(run_suite(_csv(args.agents), shifts, args.seeds, cfg, args.out, force=args.force,
                    progress=not args.quiet, figures=not args.no_figures))
    print(f"results: {Path(args.out) / 'drift.csv'}   figure: {Path(args.out) / 'drift.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscale", formatter_class=FORMATTER,
        description="AutoScale-v0: train, benchmark and evaluate agents; record traces; serve models.",
        epilog="Run `autoscale COMMAND --help` for a command's options, their defaults and "
               "valid values.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = valid_names()

    b = sub.add_parser("benchmark", help="train and evaluate agents on a grid of cells, one table",
                       description="Train every agent on every cell (device x scenario x setting) "
                                   "and seed, evaluate greedily on fresh requests, and write "
                                   "results.csv, summary.md, figures and TensorBoard runs.",
                       formatter_class=FORMATTER)
    add_grid_arguments(b)
    b.set_defaults(func=cmd_benchmark)

    t = sub.add_parser("train", help="train one agent on one cell, save it, print its evaluation",
                       description="Train one agent on one cell, save it under --out (model.npz "
                                   "or model.zip, TensorBoard logs in tb/), then evaluate it "
                                   "greedily and print the benchmark's table.",
                       formatter_class=FORMATTER)
    t.add_argument("--agent", default="qlearning",
                   help=f"agent to train: {names['agents']}; dqn, ppo, a2c need the [sb3] extra")
    t.add_argument("--device", default="mi8pro", help=f"phone: {names['devices']}")
    t.add_argument("--scenario", default="non_streaming", help=f"scenario: {names['scenarios']}")
    t.add_argument("--setting", default="dynamic", help=f"setting: {names['settings']}")
    t.add_argument("--steps", type=int, default=64_000, help="online training requests")
    t.add_argument("--seed", type=int, default=0, help="seed of the agent and the env")
    t.add_argument("--out", default="runs/train", help="output directory")
    t.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                   help="override a hyperparameter (repeatable), e.g. --hp alpha=0.1")
    t.add_argument("--features", default="paper", help=f"state bins: {names['features']}")
    t.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: none)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    t.add_argument("--eval-steps", type=int, default=5_000,
                   help="greedy evaluation requests after training (0: skip the evaluation)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a saved agent and print the benchmark's table",
                       description="Load a saved agent (Q-table .npz, SB3 .zip with its "
                                   ".meta.json, baseline .json) and evaluate it greedily on the "
                                   "given cells; prints the same table as `autoscale benchmark`. "
                                   "Only load SB3 models you or someone you trust created (SB3 "
                                   "stores some fields with cloudpickle).",
                       formatter_class=FORMATTER)
    e.add_argument("--model", required=True, help="path of the saved agent, e.g. runs/q/model.npz")
    e.add_argument("--device", default="",
                   help=f"comma list of phones: {names['devices']} (empty: the model's own)")
    e.add_argument("--scenario", default="",
                   help=f"comma list of scenarios: {names['scenarios']} (empty: the model's own)")
    e.add_argument("--setting", default="",
                   help=f"comma list of settings: {names['settings']} (empty: the model's own)")
    e.add_argument("--seeds", type=int, default=3,
                   help="evaluation seeds per cell (the benchmark's evaluation seeds)")
    e.add_argument("--eval-steps", type=int, default=5_000, help="greedy evaluation requests")
    e.add_argument("--features", default="auto",
                   help=f"state bins: auto (the bundled set matching the model), {names['features']}")
    e.add_argument("--reward", default="energy", help=f"reward preset: {names['rewards']}")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("drift", help="run agents through shifts of the world (drift.toml) and "
                       "report regret and recovery per shift",
                       formatter_class=FORMATTER)
    d.add_argument("--agents", default="qlearning,linucb,predictor",
                   help="comma-separated agent names (as for benchmark)")
    d.add_argument("--shifts", default="all",
                   help="comma-separated shifts of autoscale_env/data/drift.toml, or all")
    d.add_argument("--device", default="mi8pro", help=f"phone: {names['devices']}")
    d.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (agent, shift)")
    d.add_argument("--shift-at", type=int, default=None,
                   help="request index of the shift (default: drift.toml [run] shift_at)")
    d.add_argument("--after", type=int, default=None,
                   help="requests run after the shift (default: drift.toml [run] after)")
    d.add_argument("--window", type=int, default=500, help="requests per near-optimal-rate window")
    d.add_argument("--hp", action="append", default=[], metavar="AGENT.NAME=VALUE",
                   help="override a hyperparameter, e.g. --hp linucb.alpha=0.5")
    d.add_argument("--out", default="runs/drift", help="output directory")
    d.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    d.add_argument("--no-figures", action="store_true", help="skip drift.png")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_drift)

    for name, module, help_text in (
        ("record", "autoscale_env.traces.recorder", "record a trace (see autoscale record --help)"),
        ("serve", "autoscale_env.backends.live.server", "run an edge/cloud inference server"),
        ("sweep", "agents.experiments.sweep", "the benchmark on a process pool or a Ray cluster"),
        ("provenance", "autoscale_env.world.provenance", "count the world's sourced vs estimated numbers"),
        ("fit-bins", "autoscale_env.tools.fit_bins", "fit state bin edges for the highest state ceiling"),
        ("fleet-benchmark", "agents.experiments.fleet_benchmark", "many phones sharing one edge and one AP"),
        ("validate", "autoscale_env.tools.validate", "compare the world's numbers with public measurements"),
        ("sensitivity", "agents.experiments.sensitivity", "global sensitivity of the results to the world's estimates"),
        ("calibrate", "autoscale_env.tools.calibrate", "fit a device profile from full traces"),
        ("gap", "agents.experiments.gap", "sim-to-real gap of a profile against a trace"),
        ("protocol", "agents.experiments.protocol",
         "the standard protocol autoscale-bench-v1: run an agent, check, regenerate, leaderboard"),
    ):
        s = sub.add_parser(name, help=help_text, add_help=False)
        s.set_defaults(delegate=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autoscale`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in ("record", "serve", "sweep", "provenance", "fit-bins", "fleet-benchmark",
                            "validate", "sensitivity", "calibrate", "gap", "protocol"):
        import importlib
        module = parser._subparsers._group_actions[0].choices[argv[0]].get_default("delegate")
        try:
            return int(importlib.import_module(module).main(argv[1:]) or 0)
        except AutoScaleError as e:  # e.g. a missing extra: its install hint, no traceback
            print(f"autoscale {argv[0]}: error: {e}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (AutoScaleError, FileExistsError) as e:
        print(f"autoscale {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
