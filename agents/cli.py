"""The ``autoscale`` command: ``benchmark``, ``train``, ``record``, ``serve``, ``sweep``.

Each subcommand parses its options and calls the library; ``main(argv)`` returns an exit code, so
the scripts in ``scripts/`` and the console script are thin wrappers around it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoscale_env.errors import AutoScaleError

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


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``benchmark`` and ``sweep``."""
    p.add_argument("--agents", default=DEFAULT_AGENTS, help="comma list of agent names")
    p.add_argument("--device", default="mi8pro", help="comma list: mi8pro,galaxy_s10e,moto_x_force")
    p.add_argument("--scenario", default="non_streaming",
                   help="comma list: non_streaming,streaming,translation")
    p.add_argument("--setting", default="dynamic", help="comma list: static,dynamic")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell")
    p.add_argument("--train-steps", type=int, default=64_000, help="online training requests")
    p.add_argument("--eval-steps", type=int, default=5_000, help="greedy evaluation requests")
    p.add_argument("--log-interval", type=int, default=1_000, help="steps per TensorBoard point")
    p.add_argument("--hp", action="append", default=[], metavar="AGENT.NAME=VALUE",
                   help="override a hyperparameter, e.g. --hp qlearning.epsilon=0.05")
    p.add_argument("--reward", default="energy", help="reward preset (data/rewards.toml)")
    p.add_argument("--features", default="paper",
                   help="state bins: paper, per_network, or a path to a features .toml")
    p.add_argument("--out", default="runs/benchmark", help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    p.add_argument("--resume", action="store_true", help="keep finished tasks, run the rest")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _tasks_and_config(args):
    from agents.benchmark import BenchmarkConfig, grid
    from autoscale_env import config
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
    from agents.benchmark import ResultStore, finish, run
    tasks, cfg = _tasks_and_config(args)
    with ResultStore(args.out, force=args.force, resume=args.resume, config=cfg) as store:
        run(tasks, cfg, store, progress=not args.quiet)
        print(finish(store, figures=not args.no_figures))
    print(f"results: {Path(args.out) / 'results.csv'}   TensorBoard: tensorboard --logdir {Path(args.out) / 'tb'}")
    return 0


def cmd_train(args) -> int:
    from agents.train import train
    path = train(agent=args.agent, device=args.device, scenario=args.scenario,
                 setting=args.setting, steps=args.steps, seed=args.seed, out=args.out,
                 hyperparameters=_hp([f"{args.agent}.{h}" for h in args.hp]).get(args.agent, {}),
                 checkpoint_every=args.checkpoint_every, resume=args.resume, force=args.force,
                 progress=not args.quiet,
                 features=args.features)
    print(f"model: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoscale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("benchmark", help="train and evaluate agents on a grid of cells, one table")
    add_grid_arguments(b)
    b.set_defaults(func=cmd_benchmark)

    t = sub.add_parser("train", help="train one agent on one cell and save it")
    t.add_argument("--agent", default="qlearning")
    t.add_argument("--device", default="mi8pro")
    t.add_argument("--scenario", default="non_streaming")
    t.add_argument("--setting", default="dynamic")
    t.add_argument("--steps", type=int, default=64_000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/train")
    t.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    t.add_argument("--features", default="paper",
                   help="state bins: paper, per_network, or a path to a features .toml")
    t.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: none)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    for name, module, help_text in (
        ("record", "autoscale_env.recording", "record a trace (see autoscale record --help)"),
        ("serve", "autoscale_env.backends.live.server", "run an edge/cloud inference server"),
        ("sweep", "agents.sweep", "the benchmark on a process pool or a Ray cluster"),
    ):
        s = sub.add_parser(name, help=help_text, add_help=False)
        s.set_defaults(delegate=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autoscale`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in ("record", "serve", "sweep"):
        import importlib
        module = parser._subparsers._group_actions[0].choices[argv[0]].get_default("delegate")
        return int(importlib.import_module(module).main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (AutoScaleError, FileExistsError) as e:
        print(f"autoscale {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
