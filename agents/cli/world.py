"""The world's commands: ``record``, ``serve``, ``provenance``, ``fit-bins``, ``validate``,
``calibrate``, ``regenerate-traces``, ``oracle-table``, ``warm``, ``live-report``.

Each function's parameters are its options (help and default in one place); its body calls the
library (:mod:`autoscale_env`), imported inside the body so the help starts fast.
"""

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agents.cli.app import Quiet, at_least_one, command, csv_list, invocation



def _kept_record(o: dict[str, Any]) -> str:
    from autoscale_env.traces.recorder import partial_path
    out = o["out"]
    if out.endswith(".parquet"):  # Parquet is written whole at the end: not yet
        partial = partial_path(out)
        if partial.exists():
            return (f"{out} was not written; the requests flushed so far are in {partial} (it "
                    "loads as a trace; a rerun keeps it under a new name and records afresh)")
        return f"{out} was not written"
    return f"{out} holds the requests flushed so far"


def _key_values(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} must look like KEY=VALUE",
                                     param_hint="'--option'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@command("record", kept=_kept_record, usage_errors=(ValueError,),
         help="Record a full trace (every target's outcome of every request) from the sim or the "
              "live backend. See traces/README.md for the format.")
def record(
    out: Annotated[str, typer.Option(help="output file: .csv, .csv.gz or .parquet")],
    backend: Annotated[str, typer.Option(
        help="sim: the simulator; live: real inference (the [live] extra)")] = "sim",
    device: Annotated[str | None, typer.Option(
        help="sim: phone profile name or path; live: host",
        show_default="mi8pro for sim, host for live")] = None,
    scenario: Annotated[str, typer.Option(help="non_streaming, streaming or translation")]
    = "non_streaming",
    setting: Annotated[str, typer.Option(help="static or dynamic")] = "dynamic",
    requests: Annotated[int, typer.Option(help="requests to record")] = 2000,
    seed: Annotated[int, typer.Option(help="seeds the generator as env.reset(seed=SEED) does")]
    = 0,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing --out")] = False,
    batch_size: Annotated[int, typer.Option(help="requests between flushes to disk")] = 100,
    episode_requests: Annotated[int, typer.Option(
        help="reset the backend every N requests (0: never); the default is one gym.make "
             "episode")] = 101,
    option: Annotated[list[str] | None, typer.Option(
        "--option", metavar="KEY=VALUE", show_default="none",
        help="extra backend keyword argument (VALUE parsed as JSON when it is JSON); repeatable")]
    = None,
    quiet: Quiet = False,
) -> int:
    from autoscale_env.backends import make_backend
    from autoscale_env.traces.recorder import record as record_trace
    from autoscale_env.world.errors import BackendUnavailable
    if backend not in ("sim", "live"):
        raise typer.BadParameter(f"{backend!r} is not sim or live", param_hint="'--backend'")
    device = device or ("host" if backend == "live" else "mi8pro")
    kwargs = dict(device=device, scenario=scenario, setting=setting, **_key_values(option))
    try:
        made = make_backend(backend, **kwargs)
    except ModuleNotFoundError as e:
        raise BackendUnavailable(f"backend {backend!r} is not available here ({e})") from None
    try:
        path = record_trace(made, requests, out, seed=seed, force=force, batch_size=batch_size,
                            episode_requests=episode_requests, progress=not quiet)
    finally:
        made.close()
    print(f"recorded {requests} requests to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


@command("serve",
         help="An AutoScale edge/cloud inference server (the [live] extra); prints READY <port> "
              "once it listens and serves until SIGTERM or Ctrl-C. Beyond loopback it needs a "
              "shared token (or --insecure).")
def serve(
    role: Annotated[str, typer.Option(
        help="which device this server stands in for: edge (Wi-Fi Direct) or cloud")],
    host: Annotated[str, typer.Option(
        help="address to bind (loopback); any other needs a token or --insecure")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port, printed)")] = 0,
    max_bytes: Annotated[int, typer.Option(help="largest request accepted, bytes")]
    = 16 * 1024 * 1024,
    read_timeout_s: Annotated[float, typer.Option(
        help="a message must arrive in full within this many seconds of its first byte")] = 10.0,
    idle_timeout_s: Annotated[float, typer.Option(
        help="an idle keep-alive connection is closed after this many seconds")] = 60.0,
    max_connections: Annotated[int, typer.Option(
        help="connections served at once; more are answered BUSY")] = 32,
    max_per_peer: Annotated[int | None, typer.Option(
        help="connections one client host may hold (loopback addresses are one host)",
        show_default="16, or --max-connections if smaller")] = None,
    first_byte_timeout_s: Annotated[float, typer.Option(
        help="how long a new connection may stay silent before its first byte")] = 5.0,
    handshake_timeout_s: Annotated[float, typer.Option(
        help="with a token: the whole token must arrive within this many seconds of the "
             "connect")] = 3.0,
    max_pending: Annotated[int, typer.Option(
        help="with a token: connections waiting to present it, at most (a newcomer replaces "
             "the longest waiter)")] = 64,
    models: Annotated[str | None, typer.Option(
        help="comma-separated allow-list: NAME (at cpu/fp32), NAME@UNIT or NAME@*; 'all': every "
             "network at every unit",
        show_default="the --preload pairs if given, else any network at cpu/fp32, a few at most")]
    = None,
    token: Annotated[str | None, typer.Option(
        help="shared token clients must present (visible in the process list: prefer "
             "$AUTOSCALE_SERVER_TOKEN or --token-file)",
        show_default="$AUTOSCALE_SERVER_TOKEN")] = None,
    token_file: Annotated[str | None, typer.Option(
        metavar="PATH", help="read the shared token from this file",
        show_default="$AUTOSCALE_SERVER_TOKEN_FILE")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="allow binding beyond loopback without a token (anyone who can reach "
                           "the port can use the server)")] = False,
    max_batch: Annotated[int, typer.Option(help="largest batch in one request")] = 8,
    seed: Annotated[int, typer.Option(help="model weight seed")] = 0,
    threads: Annotated[int, typer.Option(help="torch intra-op threads (0: torch's default)")] = 0,
    no_fallback: Annotated[bool, typer.Option(
        "--no-fallback", help="refuse units this host cannot run instead of falling back to CPU")]
    = False,
    preload: Annotated[str, typer.Option(
        help="comma list of name@unit pairs to load before READY, e.g. "
             "mnv1@cpu/fp32,mbert@cpu/int8", show_default="none")] = "",
    log_level: Annotated[str, typer.Option(help="Python logging level on stderr")] = "WARNING",
    quiet: Annotated[bool, typer.Option("--quiet", help="no start-up report on stderr")] = False,
) -> int:
    from autoscale_env.backends.live.server import serve_command
    return serve_command(
        role=role, host=host, port=port, max_bytes=max_bytes, read_timeout_s=read_timeout_s,
        idle_timeout_s=idle_timeout_s, max_connections=max_connections, max_per_peer=max_per_peer,
        first_byte_timeout_s=first_byte_timeout_s, handshake_timeout_s=handshake_timeout_s,
        max_pending=max_pending, models=models, token=token, token_file=token_file,
        insecure=insecure, max_batch=max_batch, seed=seed, threads=threads,
        no_fallback=no_fallback, preload=preload, log_level=log_level, quiet=quiet)


@command("provenance",
         help="Count the world's sourced vs estimated numbers and list the estimates.")
def provenance(
    by: Annotated[str, typer.Option(help="group rows by: file or kind")] = "file",
    top: Annotated[int, typer.Option(help="estimates to list")] = 15,
    ranking: Annotated[str | None, typer.Option(
        help="a sensitivity.csv (parameter, mu_star/ST) to rank estimates",
        show_default="no ranking")] = None,
    json_: Annotated[bool, typer.Option(
        "--json", help="print every entry as JSON lines instead")] = False,
    data_dir: Annotated[str | None, typer.Option(
        help="data directory to read", show_default="the bundled autoscale_env/data")] = None,
    gap_report: Annotated[str | None, typer.Option(
        help="gap.json of the fitted profile (autoscale gap); a fitted profile's numbers count as "
             "sourced only when it passes", show_default="the bundled host gap report")] = None,
) -> int:
    from dataclasses import asdict

    from autoscale_env.world import provenance as prov
    if by not in ("file", "kind"):
        raise typer.BadParameter(f"{by!r} is not file or kind", param_hint="'--by'")
    data_dir = data_dir or str(prov.DATA_DIR)
    entries = prov.collect(data_dir)
    fitted = prov.fitted_profiles(data_dir, gap_report or str(prov.DEFAULT_GAP_REPORT))
    if json_:
        for e in entries:
            status = fitted.get(e.file)
            print(json.dumps({"name": e.name, **asdict(e),
                              "fitted_profile": status.profile if status else None,
                              "counts_as_sourced": prov.counts_as_sourced(e, fitted)}))
        return 0
    sys.stdout.write(prov.report(entries, by=by, top=top, ranking=ranking, fitted=fitted))
    return 0


@command("fit-bins",
         help="Fit state bin edges for the highest state ceiling (greedy, on training seeds), "
              "report held-out ceilings and write a features .toml.")
def fit_bins(
    out: Annotated[str, typer.Option(help="features .toml to write (refuses to overwrite "
                                          "unless --force)")],
    device: Annotated[str, typer.Option(help="comma list of phones")]
    = "mi8pro,galaxy_s10e,moto_x_force",
    scenario: Annotated[str, typer.Option(help="comma list of scenarios")]
    = "non_streaming,streaming,translation",
    setting: Annotated[str, typer.Option(help="comma list of settings")] = "static,dynamic",
    seeds: Annotated[int, typer.Option(help="training seeds (and as many held out)")] = 3,
    requests: Annotated[int, typer.Option(help="requests per cell and seed")] = 8000,
    start: Annotated[str, typer.Option(help="features to start from (name or path)")] = "paper",
    min_gain: Annotated[float, typer.Option(help="stop below this mean gain")] = 0.001,
    max_states: Annotated[int, typer.Option(help="largest number of states of the fit")] = 4096,
    compare: Annotated[str, typer.Option(
        help="feature sets whose held-out ceilings to report beside the fit")]
    = "paper,per_network",
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing --out")] = False,
    quiet: Quiet = False,
) -> int:
    from autoscale_env.tools.fit_bins import fit_and_write
    made_by = "autoscale fit-bins " + " ".join(shlex.quote(a) for a in _argv_of("fit-bins"))
    print(fit_and_write(out, devices=csv_list(device), scenarios=csv_list(scenario),
                        settings=csv_list(setting), seeds=seeds, requests=requests, start=start,
                        min_gain=min_gain, max_states=max_states, compare=csv_list(compare),
                        force=force, progress=not quiet, command=made_by))
    return 0


def _argv_of(name: str) -> list[str]:
    """The arguments after ``name`` of the running command (recorded in a file's header)."""
    argv = invocation()
    return argv[argv.index(name) + 1:] if name in argv else argv


@command("validate",
         help="Compare the world's numbers with the public measurements bundled in "
              "autoscale_env/data/measurements; exit 1 when a row breaks the bound, or a device's "
              "median error or bias does.")
def validate(
    max_log2_error: Annotated[float, typer.Option(
        help="largest |log2(sim/measured)| allowed per row (0.5: a factor of sqrt(2))", min=0.0)]
    = 0.5,
    max_median_log2_error: Annotated[float, typer.Option(
        help="largest median |log2(sim/measured)| allowed per device", min=0.0)] = 0.4,
    max_bias: Annotated[float, typer.Option(
        help="per device, the geometric-mean bias sim/measured must lie in [1/this, this]",
        min=1.0)] = 1.25,
    measurements: Annotated[list[str] | None, typer.Option(
        "--measurements", metavar="CSV", show_default="every bundled one",
        help="a measurement file (repeatable)")] = None,
    profile: Annotated[list[str] | None, typer.Option(
        "--profile", metavar="NAME=PATH", show_default="the bundled profiles",
        help="validate this profile file in place of the bundled device NAME (repeatable)")]
    = None,
) -> int:
    from autoscale_env.tools.validate import compare, failures_text, report, summaries
    from autoscale_env.world.errors import ConfigError
    profiles = {}
    for item in profile or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"{item!r}: expected NAME=PATH (e.g. mi8pro=my.toml)",
                                     param_hint="'--profile'")
        profiles[name] = path
    comparisons, meta = compare(measurements, profiles)
    # A check that compared nothing, or a --profile no row names, would pass by checking nothing.
    measured = sorted({c.m.device for c in comparisons if c.m.device})
    unused = sorted(set(profiles) - set(measured))
    if unused:
        raise ConfigError(f"--profile {unused[0]}=...: no measurement row names device "
                          f"{unused[0]!r}, so the profile would not be checked; devices measured: "
                          f"{', '.join(measured) or 'none'}")
    if not any(c.world is not None for c in comparisons):
        raise ConfigError(f"no measurement compared ({len(comparisons)} row(s) in "
                          f"{', '.join(meta) or '(none)'}, none modelled by the world); an empty "
                          "check passes nothing")
    table, failing = report(comparisons, max_log2_error)
    print(table)
    print("Sources:\n" + "\n".join(f"- {Path(f).name}: {m['origin']}; {m['version']}; "
                                   f"table {m['table']}" for f, m in meta.items()))
    broken = [(d, d.breaks(max_median_log2_error, max_bias)) for d in summaries(comparisons)]
    broken = [(d, why) for d, why in broken if why]
    if failing:
        print(f"autoscale validate: {len(failing)} measurement(s) break |log2(sim/measured)| <= "
              f"{max_log2_error:g}:\n{failures_text(failing)}", file=sys.stderr)
    for d, why in broken:
        print(f"autoscale validate: device {d.device} ({d.rows} rows): {'; '.join(why)}",
              file=sys.stderr)
    return 1 if failing or broken else 0


@command("calibrate",
         help="Fit a device profile (latency, interference, noise, server latency, power where "
              "measured) from full traces, with 95 % confidence intervals.")
def calibrate(
    trace: Annotated[list[str], typer.Option(
        "--trace", help="a full trace (path or bundled name); repeat to pool several (e.g. a "
                        "static and a dynamic recording of one device)")],
    out: Annotated[str, typer.Option(
        help="profile to write (.toml); edge/cloud server profiles <stem>_edge.toml / "
             "<stem>_cloud.toml and the report <stem>.calibration.json go beside it")],
    base: Annotated[str, typer.Option(
        help="phone profile whose values are kept where the traces identify nothing (mi8pro is "
             "the live backend's power profile)")] = "mi8pro",
    name: Annotated[str | None, typer.Option(help="profile name", show_default="--out's stem")]
    = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap replicates (CI)")] = 200,
    block: Annotated[int, typer.Option(help="requests per bootstrap block")] = 10,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    min_requests: Annotated[int, typer.Option(
        help="refuse traces with fewer requests in total")] = 100,
    min_per_network: Annotated[int, typer.Option(
        help="refuse traces with fewer requests of a network of the scenario's mix")] = 10,
    max_foreign_cpu: Annotated[float, typer.Option(
        min=0.0, max=1.0,
        help="refuse a measured trace whose recording conditions say other processes used more "
             "than this share of the CPU time (0-1)")] = 0.10,
    force: Annotated[bool, typer.Option(
        "--force", help="replace existing output files, and fit a trace recorded under foreign "
                        "load anyway (the report warns)")] = False,
    quiet: Quiet = False,
) -> int:
    from autoscale_env.tools import calibrate as cal_mod
    cal = cal_mod.calibrate(trace, base=base, name=name or Path(out).stem, bootstrap=bootstrap,
                            block_requests=block, seed=seed, min_requests=min_requests,
                            min_per_network=min_per_network, progress=not quiet,
                            max_foreign_cpu=max_foreign_cpu, force=force)
    paths = cal_mod.write_profile(cal, out, force=force)
    print(cal_mod.summary(cal))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


@command("regenerate-traces",
         help="Regenerate the bundled sim traces from the current sim (seed 0, 2020 requests, "
              "episodes of 101), or check that they still match it.")
def regenerate_traces(
    check: Annotated[bool, typer.Option(
        "--check", help="only compare; exit 1 naming the stale traces")] = False,
    dir: Annotated[str | None, typer.Option(
        "--dir", help="where to write", show_default="the bundled folder")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> int:
    from autoscale_env.tools import bundled_traces as bundled
    if check:
        problems = bundled.stale()
        if problems:
            print(bundled.stale_message(problems), file=sys.stderr)
            return 1
        print("every bundled sim trace matches the current sim")
        return 0
    paths = bundled.regenerate(dir, progress=not quiet)
    print(f"regenerated {len(paths)} sim traces in {paths[0].parent}")
    print(bundled.table(dir))
    return 0


@command("oracle-table",
         help="Which target the oracle picks per device x scenario x setting cell, and the "
              "state ceiling (the best oracle match over the paper's discrete state).")
def oracle_table(
    device: Annotated[str | None, typer.Option(
        help="comma list of phones", show_default="every bundled device")] = None,
    episodes: Annotated[int, typer.Option(help="seeded episodes per cell (>= 1)",
                                          callback=at_least_one)] = 100,
) -> int:
    from autoscale_env.tools.oracle_table import oracle_table as table
    from autoscale_env.world.config import device_names
    print(table(csv_list(device) if device else device_names(), episodes))
    return 0


@command("warm", usage_errors=(ValueError,),
         help="Compile the kernels of the env, the vector env, the fleet and the Q-learner ahead of "
              "their first use (numba's cache), each part in its own process, in parallel: run it "
              "once in an image build or a CI job so that later processes start in about a "
              "second.")
def warm(
    parts: Annotated[str | None, typer.Option(
        help="comma-separated parts: fleet, env, vector, qlearning", show_default="all")] = None,
    workers: Annotated[int, typer.Option(callback=at_least_one,
                                         help="parts compiled at once")] = 2,
) -> int:
    from agents.experiments.warm import warm as warm_kernels
    seconds = warm_kernels(csv_list(parts) if parts else None, workers=workers)
    for name, s in seconds.items():
        print(f"{name}: {s:.1f} s")
    return 0


@command("live-report",
         help="The live backend's models on this host: layer counts, FP32 and INT8 latency, "
              "INT8 top-1 agreement (the [live] extra; a measurement: run it on a quiet host).")
def live_report(
    networks: Annotated[str | None, typer.Option(
        help="comma list of catalog networks", show_default="every network")] = None,
    inputs: Annotated[int, typer.Option(help="requests for the INT8 agreement (>= 1)",
                                        callback=at_least_one)] = 32,
    runs: Annotated[int, typer.Option(help="timed runs per precision (>= 1)",
                                      callback=at_least_one)] = 5,
) -> int:
    from autoscale_env.backends.live.report import live_report as report
    report(csv_list(networks) if networks else None, inputs=inputs, runs=runs,
           emit=lambda line: print(line, flush=True))
    return 0


def _benchmark_spec(text: str) -> tuple[str, str, str]:
    """``NETWORK:UNIT=FILE`` -> ``(network, unit, file)``."""
    spec, sep, path = text.partition("=")
    net, sep2, unit = spec.partition(":")
    if not (sep and sep2 and net and unit and path):
        raise typer.BadParameter(f"{text!r}: expected NETWORK:UNIT=FILE (e.g. "
                                 f"mnv1:cpu/fp32=logs/mnv1_cpu_fp32_t4.txt)",
                                 param_hint="'--benchmark'")
    return net, unit, path


@command("import", group="profile",
         help="Build a phone profile from TFLite benchmark_model outputs and the phone's "
              "power_profile.xml; what they do not give comes from --base and is reported. "
              "Exit 1 when a covered `autoscale validate` row fails (--validate-as).")
def profile_import(
    power_profile: Annotated[str, typer.Option(help="the phone's power_profile.xml")],
    out: Annotated[str, typer.Option(
        help="profile to write (.toml); <stem>.import.json goes beside it (write under runs/, "
             "not into the package)")],
    benchmark: Annotated[list[str] | None, typer.Option(
        metavar="NETWORK:UNIT=FILE",
        help="one benchmark_model output for a catalog network on a unit (cpu|gpu|dsp / "
             "fp32|fp16|int8, e.g. mnv1:gpu/fp16=mnv1_gpu.txt); repeat")] = None,
    benchmark_dir: Annotated[str | None, typer.Option(
        help="a folder of outputs named <network>_<processor>_<precision>[_t<threads>].txt")]
    = None,
    name: Annotated[str | None, typer.Option(help="profile name", show_default="--out's stem")]
    = None,
    base: Annotated[str, typer.Option(
        help="bundled phone profile for what the inputs do not give")] = "mi8pro",
    soc: Annotated[str | None, typer.Option(help="the phone's SoC (the profile's soc field)")]
    = None,
    battery_voltage_v: Annotated[float, typer.Option(
        help="converts power_profile.xml's mA to W (the file gives no battery voltage; the "
             "nominal Li-ion cell)")] = 3.85,
    validate_as: Annotated[str | None, typer.Option(
        metavar="DEVICE|SOC",
        help="also run autoscale validate's latency and power rows of a device the measurements "
             "name (mi8pro) or of every phone with a SoC ('Snapdragon 845') against this "
             "profile, where the inputs gave the number under the row's own conditions (SoC, "
             "network, precision, delegate, CPU threads); the rest are listed as not covered. "
             "Exit 1 if a compared row fails")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
) -> int:
    from autoscale_env.tools import profile_import as pi
    from autoscale_env.tools import validate
    runs = [_benchmark_spec(b) for b in benchmark or []]
    if benchmark_dir:
        runs += pi.benchmarks_in(benchmark_dir)
    report = pi.import_profile(power_profile, runs, out, name=name, base=base, soc=soc,
                               battery_voltage_v=battery_voltage_v, force=force)
    n = sum(len(u) for u in report.latency_ms.values())
    print(f"wrote {out}: {n} latency rows and {len(report.power)} power figures from "
          f"{len(report.inputs)} files; {len(report.missing)} items not in the inputs (from "
          f"{report.base}):")
    for m in report.missing:
        print(f"  missing: {m}")
    for note in report.notes:
        print(f"  note: {note}")
    if validate_as:
        cov = pi.covered_validation(out, validate_as, [i["file"] for i in report.inputs])
        print(f"\nautoscale validate, rows of {validate_as} the inputs cover like for like:")
        if cov.compared:
            table, failing = validate.report(cov.compared, validate.DEFAULT_MAX_LOG2_ERROR)
            print(table)
        else:
            failing = []
            print("  none: nothing was validated", file=sys.stderr)
        print(f"not covered ({len(cov.not_covered)} rows, not compared):")
        for m, why in cov.not_covered:
            print(f"  {Path(m.file).name}:{m.line} {m.device} {m.network or ''} {m.unit}: {why}")
        if cov.ratio_rows:
            print(f"  and {cov.ratio_rows} within-framework ratio rows (an import gives absolute "
                  f"figures)")
        if failing:
            print(validate.failures_text(failing), file=sys.stderr)
            return 1
    return 0
