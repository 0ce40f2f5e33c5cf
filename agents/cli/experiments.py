"""The agents' commands: ``benchmark``, ``train``, ``evaluate``, ``sweep``, ``drift``,
``sensitivity``, ``gap``, ``fleet-benchmark``, ``paper-table``, ``plot``, ``comparison-table``,
``sample-efficiency``.

Each function's parameters are its options (help and default in one place); its body checks what
only it can check and calls the library (:mod:`agents.experiments`), imported inside the body.
"""

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from agents.cli.app import Quiet, at_least_one, command, csv_list, invocation, parse_hp

DEFAULT_AGENTS = "qlearning,oracle,fixed:local/cpu/fp32,fixed:cloud/gpu/fp32,random"
SB3_NOTE = "; dqn, ppo, a2c need the [sb3] extra"

Force = Annotated[bool, typer.Option("--force", help="overwrite existing results in --out")]
NoFigures = Annotated[bool, typer.Option("--no-figures", help="skip the PNG figures")]
Hp = Annotated[list[str] | None, typer.Option(
    "--hp", metavar="AGENT.NAME=VALUE", show_default="none",
    help="override a hyperparameter (repeatable), e.g. --hp qlearning.epsilon=0.05; defaults: "
         "agents/data/hyperparams.toml, agents.qlearning.QLearningConfig")]
Workers = Annotated[int | None, typer.Option(
    help="processes (>= 1)", show_default="the cores", callback=at_least_one)]
Address = Annotated[str | None, typer.Option(
    help="Ray cluster address", show_default="start Ray here")]


def _grid(
    agents: Annotated[str, typer.Option(help="comma list of agents; valid: {agents}" + SB3_NOTE)]
    = DEFAULT_AGENTS,
    device: Annotated[str, typer.Option(help="comma list of phones: {devices}")] = "mi8pro",
    scenario: Annotated[str, typer.Option(help="comma list of scenarios: {scenarios}")]
    = "non_streaming",
    setting: Annotated[str, typer.Option(help="comma list of settings: {settings}")] = "dynamic",
    seeds: Annotated[int, typer.Option(help="seeds 0..N-1 per cell")] = 3,
    train_steps: Annotated[int, typer.Option(help="online training requests")] = 64_000,
    eval_steps: Annotated[int, typer.Option(
        help="greedy evaluation requests (>= 1)", callback=at_least_one)] = 5_000,
    log_interval: Annotated[int, typer.Option(help="steps per TensorBoard point")] = 1_000,
    hp: Hp = None,
    reward: Annotated[str, typer.Option(
        help="reward preset (autoscale_env/data/rewards.toml): {rewards}")] = "energy",
    features: Annotated[str, typer.Option(help="state bins: {features}")] = "paper",
    out: Annotated[str, typer.Option(help="output directory")] = "runs/benchmark",
    force: Force = False,
    resume: Annotated[bool, typer.Option("--resume", help="keep finished tasks, run the rest")]
    = False,
    no_figures: NoFigures = False,
    quiet: Quiet = False,
) -> None:
    """The options of ``benchmark`` and ``sweep`` (defined once, here)."""


def grid_options(*extra: inspect.Parameter):
    """Give the decorated command the grid's options (plus ``extra``) as its signature."""
    grid = list(inspect.signature(_grid).parameters.values())

    def apply(fn):
        fn.__signature__ = inspect.Signature(grid + list(extra))
        return fn
    return apply


def _plan(o: dict[str, Any]):
    from agents.experiments.benchmark import plan
    return plan(csv_list(o["agents"]), csv_list(o["device"]), csv_list(o["scenario"]),
                csv_list(o["setting"]), o["seeds"], train_steps=o["train_steps"],
                eval_steps=o["eval_steps"], log_interval=o["log_interval"],
                hyperparameters=parse_hp(o["hp"]), reward=o["reward"], features=o["features"])


def _kept_tasks(o: dict[str, Any]) -> str:
    from agents.experiments.benchmark import finished_tasks
    return (f"{finished_tasks(o['out'])} finished task(s) are saved in "
            f"{Path(o['out']) / 'results.csv'}; rerun with --resume to run the rest")


@command("benchmark", kept=_kept_tasks,
         help="Train every agent on every cell (device x scenario x setting) and seed, evaluate "
              "greedily on fresh requests, and write results.csv, summary.md, figures and "
              "TensorBoard runs.")
@grid_options()
def benchmark(**o: Any) -> int:
    from agents.experiments.benchmark import ResultStore, finish, output_listing, run
    tasks, cfg = _plan(o)
    with ResultStore(o["out"], force=o["force"], resume=o["resume"], config=cfg) as store:
        run(tasks, cfg, store, progress=not o["quiet"])
        print(finish(store, figures=not o["no_figures"]))
    print(output_listing(o["out"]))
    return 0


def _kept_sweep(o: dict[str, Any]) -> str:
    from agents.experiments.benchmark import finished_tasks
    return (f"{finished_tasks(o['out'])} finished task(s) are saved in "
            f"{Path(o['out']) / 'results.csv'}; rerun the same command to run the rest")


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=default)


@command("sweep", kept=_kept_sweep,
         help="The benchmark's grid on a local process pool or a Ray cluster; rerunning it "
              "completes only the missing tasks (see agents.experiments.sweep).")
@grid_options(
    _option("engine", Annotated[str, typer.Option(
        help="local: a process pool here; ray: Ray tasks (the [distributed] extra)")], "local"),
    _option("workers", Workers, None),
    _option("address", Address, None),
)
def sweep(**o: Any) -> int:
    from agents.experiments.benchmark import output_listing
    from agents.experiments.sweep import ENGINES, run_sweep
    if o["engine"] not in ENGINES:
        raise typer.BadParameter(f"{o['engine']!r} is not one of {', '.join(ENGINES)}",
                                 param_hint="'--engine'")
    tasks, cfg = _plan(o)
    print(run_sweep(tasks, cfg, o["out"], engine=o["engine"], workers=o["workers"],
                    address=o["address"], force=o["force"], progress=not o["quiet"],
                    figures=not o["no_figures"]))
    print(output_listing(o["out"]))
    return 0


def _kept_checkpoints(o: dict[str, Any]) -> str:
    if o["checkpoint_every"] > 0:
        return (f"the checkpoints written so far are in {Path(o['out']) / 'checkpoints'}; "
                "rerun with --resume to continue")
    return "no model was saved (--checkpoint-every keeps progress)"


@command("train", kept=_kept_checkpoints,
         help="Train one agent on one cell, save it under --out (model.npz, model.zip or "
              "model.json; TensorBoard logs in tb/), then evaluate it greedily and print the "
              "benchmark's table.")
def train(
    agent: Annotated[str, typer.Option(help="agent to train: {agents}" + SB3_NOTE)] = "qlearning",
    device: Annotated[str, typer.Option(help="phone: {devices}")] = "mi8pro",
    scenario: Annotated[str, typer.Option(help="scenario: {scenarios}")] = "non_streaming",
    setting: Annotated[str, typer.Option(help="setting: {settings}")] = "dynamic",
    steps: Annotated[int, typer.Option(help="online training requests")] = 64_000,
    seed: Annotated[int, typer.Option(help="seed of the agent and the env")] = 0,
    out: Annotated[str, typer.Option(help="output directory")] = "runs/train",
    hp: Annotated[list[str] | None, typer.Option(
        "--hp", metavar="NAME=VALUE", show_default="none",
        help="override a hyperparameter (repeatable), e.g. --hp alpha=0.1")] = None,
    features: Annotated[str, typer.Option(help="state bins: {features}")] = "paper",
    checkpoint_every: Annotated[int, typer.Option(
        help="steps between checkpoints (0: none)")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing model in --out")]
    = False,
    eval_steps: Annotated[int, typer.Option(
        help="greedy evaluation requests after training (0: skip the evaluation)")] = 5_000,
    quiet: Quiet = False,
) -> int:
    from agents.experiments.benchmark import summarize
    from agents.experiments.train import train as train_agent
    path = train_agent(agent=agent, device=device, scenario=scenario, setting=setting,
                       steps=steps, seed=seed, out=out,
                       hyperparameters=parse_hp(hp, agent).get(agent, {}),
                       checkpoint_every=checkpoint_every, resume=resume, force=force,
                       progress=not quiet, features=features)
    print(f"model: {path}")  # saved, or a finished model kept (see train --resume)
    if eval_steps > 0:
        from agents.experiments.saved import evaluate_saved
        rows = evaluate_saved(path, devices=[device], scenarios=[scenario], settings=[setting],
                              seeds=1, eval_steps=eval_steps, features=features, agent=agent)
        print(f"\nGreedy evaluation of {path} on {eval_steps} requests it did not train "
              "on (the benchmark's evaluation seed):\n")
        print(summarize(rows), end="")
        print(f"\nevaluate it elsewhere: autoscale evaluate --model {path} --scenario ...")
    return 0


@command("evaluate",
         help="Load a saved agent (Q-table or bandit .npz, SB3 .zip with its .meta.json, "
              "baseline .json, or your own agent's file with --agent) and evaluate it greedily "
              "on the given cells; prints the same table as `autoscale benchmark`. Only load SB3 "
              "models you or someone you trust created (SB3 stores some fields with cloudpickle).")
def evaluate(
    model: Annotated[str, typer.Option(help="path of the saved agent, e.g. runs/q/model.npz")],
    agent: Annotated[str | None, typer.Option(
        help="agent class that reads the file: {agents}", show_default="the name the file "
                                                                        "records")] = None,
    device: Annotated[str, typer.Option(
        help="comma list of phones: {devices}", show_default="the model's own")] = "",
    scenario: Annotated[str, typer.Option(
        help="comma list of scenarios: {scenarios}", show_default="the model's own")] = "",
    setting: Annotated[str, typer.Option(
        help="comma list of settings: {settings}", show_default="the model's own")] = "",
    seeds: Annotated[int, typer.Option(
        help="evaluation seeds per cell (the benchmark's evaluation seeds)")] = 3,
    eval_steps: Annotated[int, typer.Option(
        help="greedy evaluation requests (>= 1)", callback=at_least_one)] = 5_000,
    features: Annotated[str, typer.Option(
        help="state bins: auto (the bundled set matching the model), {features}")] = "auto",
    reward: Annotated[str, typer.Option(help="reward preset: {rewards}")] = "energy",
) -> int:
    from agents.experiments.benchmark import summarize
    from agents.experiments.saved import evaluate_saved
    rows = evaluate_saved(model, devices=csv_list(device) or None,
                          scenarios=csv_list(scenario) or None,
                          settings=csv_list(setting) or None, seeds=seeds, eval_steps=eval_steps,
                          features=None if features == "auto" else features, reward=reward,
                          agent=agent)
    print(summarize(rows), end="")
    return 0


def _kept_drift(o: dict[str, Any]) -> str:
    return f"{o['out']} keeps the results of runs finished before this one"


@command("drift", kept=_kept_drift,
         help="Run agents through shifts of the world (autoscale_env/data/drift.toml) and report "
              "regret and recovery per shift.")
def drift(
    agents: Annotated[str, typer.Option(help="comma list of agents (as for benchmark)")]
    = "qlearning,linucb,predictor",
    shifts: Annotated[str, typer.Option(
        help="comma list of shifts of autoscale_env/data/drift.toml, or all")] = "all",
    device: Annotated[str, typer.Option(help="phone: {devices}")] = "mi8pro",
    seeds: Annotated[int, typer.Option(help="seeds 0..N-1 per (agent, shift)")] = 3,
    shift_at: Annotated[int | None, typer.Option(
        help="request index of the shift", show_default="drift.toml [run] shift_at")] = None,
    after: Annotated[int | None, typer.Option(
        help="requests run after the shift", show_default="drift.toml [run] after")] = None,
    window: Annotated[int, typer.Option(help="requests per near-optimal-rate window")] = 500,
    hp: Hp = None,
    out: Annotated[str, typer.Option(help="output directory")] = "runs/drift",
    force: Force = False,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="skip drift.png")] = False,
    quiet: Quiet = False,
) -> int:
    from agents import agent_class
    from agents.experiments.drift_study import DriftConfig, run_suite
    from autoscale_env.backends.drift import shift_names
    from autoscale_env.world.errors import UnknownNameError
    valid = shift_names()
    chosen = valid if shifts == "all" else csv_list(shifts)
    for s in chosen:
        if s not in valid:
            raise UnknownNameError("drift shift", s, valid)
    for a in csv_list(agents):
        agent_class(a)
    cfg = DriftConfig(device=device, shift_at=shift_at, after=after, window=window,
                      hyperparameters=parse_hp(hp))
    try:
        cfg.resolved()
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="'--shift-at' / '--after'") from None
    print(run_suite(csv_list(agents), chosen, seeds, cfg, out, force=force,
                    progress=not quiet, figures=not no_figures))
    print(f"results: {Path(out) / 'drift.csv'}   figure: {Path(out) / 'drift.png'}")
    return 0


def _kept_sensitivity(o: dict[str, Any]) -> str:
    return (f"finished worlds are in {Path(o['out']) / 'samples.csv'}; rerun the same command to "
            "resume")


@command("sensitivity", kept=_kept_sensitivity,
         help="Global sensitivity of the results to the world's estimated numbers: Morris "
              "screening, then Sobol indices of the top parameters; tornado figures and a "
              "report (agents.experiments.sensitivity).")
def sensitivity(
    method: Annotated[str, typer.Option(
        help="morris: screening only; sobol: Morris, then Sobol indices of the top ones")]
    = "sobol",
    samples: Annotated[int | None, typer.Option(
        help="Sobol base samples, a power of 2", show_default="128, --quick 32")] = None,
    trajectories: Annotated[int | None, typer.Option(
        help="Morris trajectories", show_default="10, --quick 4")] = None,
    sobol_top: Annotated[int | None, typer.Option(
        help="per headline metric, the top parameters that get Sobol indices",
        show_default="3, --quick 2")] = None,
    tornado_top: Annotated[int | None, typer.Option(
        help="parameters per tornado figure", show_default="10")] = None,
    episodes: Annotated[int | None, typer.Option(
        help="episodes of 101 requests per cell and world", show_default="40, --quick 12")]
    = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="small design for a run of a few minutes")] = False,
    device: Annotated[str, typer.Option(help="comma list of phones")]
    = "mi8pro,galaxy_s10e,moto_x_force",
    scenario: Annotated[str, typer.Option(help="comma list of scenarios")]
    = "non_streaming,streaming,translation",
    setting: Annotated[str, typer.Option(help="comma list of settings")] = "static,dynamic",
    features: Annotated[str, typer.Option(help="state bins for the state ceiling")] = "paper",
    qlearning_steps: Annotated[int, typer.Option(
        help="also train the paper's Q-learner this many requests per cell and world and report "
             "its near-optimal rate (slow; 0 skips it)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the sampling design")] = 0,
    engine: Annotated[str, typer.Option(help="local: a process pool here; ray: Ray tasks")]
    = "local",
    workers: Workers = None,
    force_workers: Annotated[bool, typer.Option(
        "--force-workers", help="allow --workers above the core count (each extra process only "
                                "adds memory)")] = False,
    address: Address = None,
    out: Annotated[str, typer.Option(help="output directory")] = "runs/sensitivity",
    force: Annotated[bool, typer.Option("--force", help="discard an analysis already in --out")]
    = False,
    list_: Annotated[bool, typer.Option("--list", help="print the parameters and exit")] = False,
    quiet: Quiet = False,
) -> int:
    from agents.experiments import sensitivity as sa
    if list_:
        print(sa.list_parameters(sa.enumerate_estimates()))
        return 0
    chosen = {"samples": samples, "trajectories": trajectories, "sobol_top": sobol_top,
              "tornado_top": tornado_top, "episodes": episodes}
    text = sa.run_from_options(method=method, quick=quick, devices=csv_list(device),
                               scenarios=csv_list(scenario), settings=csv_list(setting),
                               features=features, qlearning_steps=qlearning_steps, seed=seed,
                               engine=engine, workers=workers, address=address, out=out,
                               force=force, progress=not quiet, force_workers=force_workers,
                               **chosen)
    print(text)
    return 0


@command("gap",
         help="Replay a trace's contexts through the sim of a profile: per-target latency and "
              "energy error, oracle agreement, sim-to-real regret of a Q-learner, and a "
              "sim-vs-measured scatter figure.")
def gap(
    trace: Annotated[list[str], typer.Option(
        "--trace", help="a full trace (path or bundled name); repeat for several")],
    profile: Annotated[str, typer.Option(help="phone profile (bundled name or .toml path)")],
    out: Annotated[str, typer.Option(help="directory for gap.json and the figures")]
    = "runs/gap",
    train_steps: Annotated[int, typer.Option(
        help="Q-learning steps in the sim and on the trace (0: skip the regret)")] = 20_000,
    seeds: Annotated[int, typer.Option(help="Q-learning seeds 0..N-1")] = 3,
    no_figure: Annotated[bool, typer.Option("--no-figure", help="skip the scatter figures")]
    = False,
    sim_contexts: Annotated[str, typer.Option(
        help="the sim-trained learner's requests: 'trace' (the profile's outcomes at the "
             "trace's contexts) or 'settings' (the plain sim's settings.toml schedule)")]
    = "trace",
    quiet: Quiet = False,
) -> int:
    from agents.experiments.gap import format_report, gap_report
    report = gap_report(trace, profile, out=out, train_steps=train_steps, seeds=range(seeds),
                        figure=not no_figure, progress=not quiet, sim_contexts=sim_contexts)
    print(format_report(report))
    print(f"\nwrote {Path(out) / 'gap.json'}")
    return 0


@command("fleet-benchmark", usage_errors=(ValueError,),
         help="Many phones sharing one edge device and one Wi-Fi access point: energy per "
              "request, QoS violations and price of anarchy against the fleet size.")
def fleet_benchmark(
    sizes: Annotated[str, typer.Option(help="fleet sizes N, comma-separated")]
    = "1,2,4,8,16,64",
    rounds: Annotated[int, typer.Option(
        help="evaluation rounds per policy and N (>= 1)", callback=at_least_one)] = 200,
    edge_rounds: Annotated[int, typer.Option(
        help="rounds of the all-edge run (>= 1)", callback=at_least_one)] = 1000,
    train_rounds: Annotated[int, typer.Option(
        help="training rounds of the independent Q-learners per N (>= 1)",
        callback=at_least_one)] = 20_000,
    ppo_timesteps: Annotated[int, typer.Option(
        help="phone-steps of shared-parameter PPO training per N (0: skip PPO; needs the "
             "[fleet] and [sb3] extras)")] = 0,
    mix: Annotated[str, typer.Option(help="a [mixes.<name>] of fleet.toml")] = "benchmark",
    sharing: Annotated[str | None, typer.Option(
        help="channel sharing rule: equal_throughput or equal_airtime",
        show_default="fleet.toml's")] = None,
    load_signal: Annotated[bool, typer.Option(
        "--load-signal", help="observations include the binned edge / access-point load")]
    = False,
    edge_target: Annotated[str, typer.Option(help="target of the all-edge run")]
    = "edge/gpu/fp32",
    seed: Annotated[int, typer.Option(help="seed of the fleet and the learners")] = 0,
    out: Annotated[str, typer.Option(help="folder for results.json and table.md")]
    = "runs/fleet",
    figure: Annotated[str | None, typer.Option(
        help="also draw the figure to this PNG path", show_default="no figure")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace results already in --out")]
    = False,
    quiet: Quiet = False,
    render: Annotated[str | None, typer.Option(
        metavar="DIR", show_default="run the benchmark",
        help="print the tables of DIR/results.json (an earlier run), draw --figure, exit")]
    = None,
) -> int:
    from agents.experiments import fleet_benchmark as fb
    if render:
        print(fb.render(render, figure))
        return 0
    if sharing not in (None, "equal_throughput", "equal_airtime"):
        raise typer.BadParameter(f"{sharing!r} is not equal_throughput or equal_airtime",
                                 param_hint="'--sharing'")
    try:
        size_list = [int(x) for x in csv_list(sizes)]
    except ValueError:
        raise typer.BadParameter(f"{sizes!r}: expected comma-separated integers, e.g. 1,2,4",
                                 param_hint="'--sizes'") from None
    if not size_list or min(size_list) < 1:
        raise typer.BadParameter(f"{sizes!r}: every size must be >= 1", param_hint="'--sizes'")
    if not force and any((Path(out) / f).exists() for f in ("results.json", "table.md")):
        raise FileExistsError(f"{out} already holds results; pass --force")
    results = fb.run(size_list, rounds=rounds, train_rounds=train_rounds,
                     ppo_timesteps=ppo_timesteps, seed=seed, mix=mix, load_signal=load_signal,
                     edge_target=edge_target, sharing=sharing, edge_rounds=edge_rounds,
                     progress=not quiet)
    paths = fb.write(results, out, force=force)
    if figure:
        fb.figure(results, figure)
        paths.append(Path(figure))
    print(fb.table(results))
    print("wrote " + ", ".join(str(x) for x in paths))
    return 0


@command("paper-table",
         help="Print the paper-versus-this-world table of a benchmark or sweep output directory.")
def paper_table(
    out_dir: Annotated[str, typer.Argument(
        help="a benchmark or sweep output directory (with results.csv)")],
    agents: Annotated[str, typer.Option(help="comma list of agents, in table order")]
    = "oracle,qlearning",
) -> int:
    from agents.experiments.paper_table import table
    print(table(out_dir, tuple(csv_list(agents))))
    return 0


@command("plot",
         help="Remake a benchmark's or sweep's figures from its results files alone "
              "(oracle_match_vs_steps.png, energy_vs_steps.png, efficiency_per_network.png; the "
              "[plots] extra).")
def plot(
    runs: Annotated[list[Path], typer.Argument(
        help="output directories of autoscale benchmark / sweep")],
) -> int:
    from agents.experiments.figures import read_table, write_figures
    from autoscale_env.world.errors import ConfigError, DependencyMissing
    for run in runs:
        if not read_table(run, "results"):
            raise ConfigError(f"{run / 'results.csv'} is missing or empty")
        written = write_figures(run)
        if not written:
            raise DependencyMissing("matplotlib", "plots", "the figures")
        for path in written:
            print(f"wrote {path}")
    return 0


@command("comparison-table",
         help="Geometric-mean comparison of agents over a benchmark's cells "
              "(agents.experiments.comparison).")
def comparison_table(
    results: Annotated[str, typer.Argument(help="a benchmark's results.csv")],
    agents: Annotated[str, typer.Option(
        help="comma list of agents, in table order", show_default="all")] = "",
    scenario: Annotated[str, typer.Option(
        help="only the cells of this scenario", show_default="all")] = "",
    setting: Annotated[str, typer.Option(
        help="only the cells of this setting", show_default="all")] = "",
) -> int:
    from agents.experiments.comparison import comparison_from_csv
    print(comparison_from_csv(results, csv_list(agents) or None, scenario=scenario or None,
                              setting=setting or None), end="")
    return 0


@command("sample-efficiency",
         help="Sample efficiency: training-window oracle match and energy per request against "
              "steps, one column per cell, from benchmark or sweep directories (the [plots] "
              "extra).")
def sample_efficiency(
    runs: Annotated[list[Path], typer.Argument(
        help="output directories of autoscale benchmark / sweep")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("sample_efficiency.png"),
) -> int:
    from agents.experiments.figures import sample_efficiency_figure
    print(f"wrote {sample_efficiency_figure(runs, out)}")
    return 0


@command("protocol",
         help="The standard protocol (autoscale-bench-v1, agents/data/protocol_v1.toml): run it "
              "for one agent and print its row beside the stored reference results; or "
              "regenerate, check or verify those results, or write the leaderboard. Exactly one "
              "of --agent, --regenerate, --check, --verify, --leaderboard. Exit 1 when a check or "
              "verification fails.")
def protocol(
    agent: Annotated[str | None, typer.Option(
        help="agent to run: {agents}", show_default="none: give one mode")] = None,
    regenerate: Annotated[bool, typer.Option(
        "--regenerate", help="rerun the reference entries and rewrite agents/data/expected_v1.json")]
    = False,
    check: Annotated[bool, typer.Option(
        "--check", help="the regression check: rerun the quick protocol for the cheap reference "
                        "entries and fail if a score left its stored interval")] = False,
    verify: Annotated[str | None, typer.Option(
        metavar="PROTOCOL_JSON", show_default="none",
        help="rerun the quick protocol for a submitted protocol.json and compare")] = None,
    leaderboard: Annotated[bool, typer.Option(
        "--leaderboard", help="write the leaderboard table into docs/benchmarks.md and "
                              "docs/leaderboard.png from the stored results")] = False,
    quick: Annotated[bool, typer.Option(
        "--quick", help="the quick subset (3 cells, seed 0) instead of the full 18-cell grid")]
    = False,
    out: Annotated[str | None, typer.Option(
        help="output directory",
        show_default="runs/protocol, or runs/protocol-reference with --regenerate")] = None,
    name: Annotated[str | None, typer.Option(
        help="row label of --agent", show_default="the agent spec")] = None,
    features: Annotated[str, typer.Option(help="state bins of --agent: {features}")] = "paper",
    hp: Annotated[list[str] | None, typer.Option(
        metavar="NAME=VALUE", show_default="the agent's defaults",
        help="hyperparameter of --agent (repeatable, value parsed as JSON)")] = None,
    agents: Annotated[str, typer.Option(
        help="with --regenerate/--check: comma list of reference entries",
        show_default="all / the ci ones")] = "",
    expected: Annotated[str | None, typer.Option(
        help="expected-results file", show_default="agents/data/expected_v1.json")] = None,
    docs: Annotated[str, typer.Option(help="with --leaderboard: the page")] = "docs/benchmarks.md",
    figure: Annotated[str, typer.Option(help="with --leaderboard: the figure")]
    = "docs/leaderboard.png",
    results: Annotated[str, typer.Option(
        help="with --leaderboard: directory of submitted protocol.json files")] = "docs/results",
    force: Annotated[bool, typer.Option("--force", help="overwrite results in --out")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="keep finished tasks in --out")] = False,
    workers: Annotated[int, typer.Option(
        help="processes per entry (>1: the sweep's local pool; same results)",
        callback=at_least_one)] = 1,
    quiet: Quiet = False,
) -> int:
    import time

    from agents.experiments import protocol as proto
    modes = [m for m, on in (("--agent", agent is not None), ("--regenerate", regenerate),
                             ("--check", check), ("--verify", verify is not None),
                             ("--leaderboard", leaderboard)) if on]
    if len(modes) != 1:
        raise typer.BadParameter(
            f"give exactly one of --agent, --regenerate, --check, --verify, --leaderboard "
            f"(got {', '.join(modes) or 'none'})")
    names = csv_list(agents) or None
    progress = not quiet
    argv = invocation()[1:]  # the options: the protocol's records prefix "autoscale protocol"
    if agent is not None:
        hyperparameters = parse_hp(hp, agent=agent).get(agent, {})
        doc, report = proto.run_protocol(
            agent, quick=quick, out=out or "runs/protocol", features=features,
            hyperparameters=hyperparameters, name=name, force=force, resume=resume,
            progress=progress, workers=workers, argv=argv)
        where = Path(out or "runs/protocol")
        print(report)
        print(f"wrote {where / 'protocol.json'} (submit this file), {where / 'report.md'}")
    elif regenerate:
        t0 = time.perf_counter()
        proto.regenerate(quick=quick, names=names, out=out or "runs/protocol-reference",
                         expected_path=expected, force=force, resume=resume, progress=progress,
                         workers=workers, argv=argv)
        print(f"wrote {expected or proto.EXPECTED_FILE} ({time.perf_counter() - t0:.0f} s wall); "
              "refresh the page with `autoscale protocol --leaderboard`")
    elif check or verify is not None:
        failures = (proto.check(names=names, expected_path=expected, progress=progress) if check
                    else proto.verify(verify, out=out, progress=progress))
        for f in failures:
            print(f"FAIL {f}")
        if check:
            print("check passed" if not failures else f"{len(failures)} result(s) moved")
        else:
            print("verified: the quick protocol reproduces the submitted result" if not failures
                  else "not verified")
        return 1 if failures else 0
    else:
        print(proto.write_leaderboard(docs, figure, expected, results))
        print(f"wrote {docs}, {figure}")
    return 0
