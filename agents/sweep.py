"""``autoscale sweep``: the benchmark's grid on a local process pool or a Ray cluster.

Every (agent, cell, seed) is one task run by :func:`agents.benchmark.run_task`, a pure function of
the task and the config, so the engine, the worker and the order do not change a task's result:
``--engine local`` and ``--engine ray`` give the same rows. Results are appended as each task
finishes; rerunning the same sweep skips finished tasks, so a killed sweep loses only the tasks
that were in flight. The merged outputs are the benchmark's (results.csv, summary.md, tb/, PNGs).

Ray is optional (``pip install -c constraints.txt 'autoscale-env[distributed]'``). On a cluster:
``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others, then
``autoscale sweep --engine ray --address HEAD:6379 --out /shared/dir ...`` (``--out`` must be on
storage every node can write, for the TensorBoard runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm.auto import tqdm

from agents.benchmark import BenchmarkConfig, ResultStore, Task, finish, run_task
from autoscale_env.errors import AutoScaleError, DependencyMissing

ENGINES = ("local", "ray")


def _pending(tasks: Sequence[Task], store: ResultStore) -> list[Task]:
    return [t for t in tasks if t.key not in store.done]


def run_local(tasks: Sequence[Task], cfg: BenchmarkConfig, store: ResultStore, *,
              workers: int | None = None, progress: bool = True) -> None:
    """Run the missing tasks on a process pool (``workers`` processes, default: the cores)."""
    todo = _pending(tasks, store)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    _drain(todo, store, progress, lambda submit_all: _pool(todo, cfg, store.out, workers, submit_all))


def _one_thread() -> None:
    # One task per core: torch's own thread pool would oversubscribe the cores and spin.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def _pool(todo, cfg, out, workers, on_done: Callable) -> None:
    with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread) as pool:
        futures = {pool.submit(run_task, t, cfg, out): t for t in todo}
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                futures.pop(f)
                on_done(f.result())


def run_ray(tasks: Sequence[Task], cfg: BenchmarkConfig, store: ResultStore, *,
            address: str | None = None, workers: int | None = None, progress: bool = True) -> None:
    """Run the missing tasks as Ray tasks (a local Ray instance unless ``address`` is given)."""
    try:
        import ray
    except ImportError:
        raise DependencyMissing("ray", "distributed", "--engine ray") from None
    todo = _pending(tasks, store)
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_task)

        def go(on_done: Callable) -> None:
            refs = [remote.remote(t, cfg, store.out) for t in todo]
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                on_done(ray.get(ready[0]))

        _drain(todo, store, progress, go)
    finally:
        if started:
            ray.shutdown()


def _drain(todo, store: ResultStore, progress: bool, engine: Callable[[Callable], None]) -> None:
    with tqdm(total=len(todo), disable=not progress, desc="sweep", unit="task") as bar:
        def on_done(rows):
            store.append(rows)
            bar.update(1)
        engine(on_done)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``autoscale sweep`` / ``python scripts/sweep.py``."""
    from agents.cli import FORMATTER, _tasks_and_config, add_grid_arguments, output_listing
    parser = argparse.ArgumentParser(prog="autoscale sweep", description=__doc__.splitlines()[0],
                                     formatter_class=FORMATTER)
    add_grid_arguments(parser)
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: a process pool here; ray: Ray tasks (the [distributed] extra)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start Ray here)")
    args = parser.parse_args(argv)
    try:
        tasks, cfg = _tasks_and_config(args)
        # a sweep resumes by default: rerunning it completes only the missing tasks
        store = ResultStore(args.out, force=args.force, resume=not args.force)
        if args.engine == "local":
            run_local(tasks, cfg, store, workers=args.workers, progress=not args.quiet)
        else:
            run_ray(tasks, cfg, store, address=args.address, workers=args.workers,
                    progress=not args.quiet)
        print(finish(store, figures=not args.no_figures))
    except (AutoScaleError, FileExistsError) as e:
        print(f"autoscale sweep: error: {e}", file=sys.stderr)
        return 2
    print(output_listing(args.out))
    return 0
