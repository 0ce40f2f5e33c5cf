"""``autoscale sweep``: the benchmark's grid on a local process pool or a Ray cluster.

Every (agent, cell, seed) is one task run by :func:`agents.experiments.benchmark.run_task`, a pure function of
the task and the config, so the engine, the worker and the order do not change a task's result:
``--engine local`` and ``--engine ray`` give the same rows. Results are appended as each task
finishes; rerunning the same sweep skips finished tasks, so a killed sweep loses only the tasks
that were in flight. The merged outputs are the benchmark's (results.csv, summary.md, tb/, PNGs).

Ray is optional (``pip install -c constraints.txt 'autoscale-env[distributed]'``). On a cluster:
``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others, then
``autoscale sweep --engine ray --address HEAD:6379 --out /shared/dir ...`` (``--out`` must be on
storage every node can write, for the TensorBoard runs).

Stopping: the first Ctrl-C (SIGINT) or SIGTERM cancels the queued tasks, terminates the running
ones (local workers are killed; Ray tasks are force-cancelled) and exits (130 / 143) within
seconds, keeping every finished result; the same command then completes only the missing tasks.
Workers ignore SIGINT themselves (the parent stops them) and die with their parent even if it is
SIGKILLed (Linux). A rerun with another configuration is refused (see ``ResultStore``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from agents.experiments.benchmark import BenchmarkConfig, ResultStore, Task, finish, run_task
from autoscale_env.world.errors import AutoScaleError, DependencyMissing

ENGINES = ("local", "ray")


def _pending(tasks: Sequence[Task], store: ResultStore) -> list[Task]:
    return [t for t in tasks if t.key not in store.done]


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception in the main thread so the sweep stops cleanly."""

    exit_code = 143


def run_local(tasks: Sequence[Task], cfg: BenchmarkConfig, store: ResultStore, *,
              workers: int | None = None, progress: bool = True) -> None:
    """Run the missing tasks on a process pool (``workers`` processes, default: the cores).

    On any exception in the parent (Ctrl-C, :class:`Interrupted`, a failed task) the pool is
    terminated: no queued task starts and no worker process is left behind.
    """
    store.bind(cfg)
    todo = _pending(tasks, store)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    _drain(todo, store, progress, lambda on_done: _pool(todo, cfg, store.out, workers, on_done))


def _worker_init() -> None:
    # The parent handles Ctrl-C and stops the pool; a worker's own KeyboardInterrupt would only
    # print tracebacks. And a worker must not outlive a SIGKILLed parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    # One task per core: torch's own thread pool would oversubscribe the cores and spin.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def _run_packed(args: tuple) -> dict[str, list[dict]]:
    return run_task(*args)


def _pool(todo, cfg, out, workers, on_done: Callable) -> None:
    pool = multiprocessing.Pool(workers, initializer=_worker_init)
    try:
        for rows in pool.imap_unordered(_run_packed, [(t, cfg, out) for t in todo]):
            on_done(rows)
        pool.close()
    except BaseException:
        pool.terminate()  # SIGTERM to every worker: in-flight tasks are dropped, rerun later
        raise
    finally:
        pool.join()


def run_ray(tasks: Sequence[Task], cfg: BenchmarkConfig, store: ResultStore, *,
            address: str | None = None, workers: int | None = None, progress: bool = True) -> None:
    """Run the missing tasks as Ray tasks (a local Ray instance unless ``address`` is given)."""
    try:
        import ray
    except ImportError:
        raise DependencyMissing("ray", "distributed", "--engine ray") from None
    store.bind(cfg)
    todo = _pending(tasks, store)
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        main_thread = threading.current_thread() is threading.main_thread()
        ours = signal.getsignal(signal.SIGTERM) if main_thread else None
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
        started = True
        if main_thread and ours is not None:
            # ray.init replaces the SIGTERM handler (with sys.exit, behind a C++ stack dump):
            # put ours back, so SIGTERM stops the sweep like Ctrl-C does
            signal.signal(signal.SIGTERM, ours)
    try:
        remote = ray.remote(num_cpus=1)(run_task)

        def go(on_done: Callable) -> None:
            refs = [remote.remote(t, cfg, store.out) for t in todo]
            try:
                while refs:
                    ready, refs = ray.wait(refs, num_returns=1)
                    on_done(ray.get(ready[0]))
            except BaseException:
                for ref in refs:  # queued ones never start; running ones are killed
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 (already finished or gone)
                        pass
                raise

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


def _raise_on_sigterm():
    """SIGTERM -> :class:`Interrupted` in the main thread; returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
        raise Interrupted()
    return signal.signal(signal.SIGTERM, handler)


def run_sweep(tasks: Sequence[Task], cfg: BenchmarkConfig, out: str | Path, *,
              engine: str = "local", workers: int | None = None, address: str | None = None,
              force: bool = False, progress: bool = True, figures: bool = True) -> str:
    """Run the missing tasks into ``out`` (``autoscale sweep``); returns the summary table.

    A sweep resumes by default: rerunning it completes only the missing tasks (``force`` starts
    over). SIGTERM stops it like Ctrl-C, as :class:`Interrupted` (exit code 143); either keeps
    every finished task in ``out/results.csv``.
    """
    if engine not in ENGINES:
        raise AutoScaleError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    store = None
    previous = _raise_on_sigterm()
    try:
        store = ResultStore(out, force=force, resume=not force, config=cfg)
        if engine == "local":
            run_local(tasks, cfg, store, workers=workers, progress=progress)
        else:
            run_ray(tasks, cfg, store, address=address, workers=workers, progress=progress)
        return finish(store, figures=figures)
    finally:
        if store is not None:
            store.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
