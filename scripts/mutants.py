"""Mutation testing of the world's rules: do the tests notice when a rule changes?

    python scripts/mutants.py                    # every module below, 2 workers (6-14 min)
    python scripts/mutants.py --module reward --module radio --out mutants.md
    python scripts/mutants.py --dry-run          # count the mutants, run nothing

Needs ``cosmic-ray`` (the ``[mutation]`` extra: ``pip install -c constraints.txt -e
'.[test,mutation]'``). Not part of the test suite; ``docs/testing.md`` has the last full run.

How it works
------------

The mutants are `cosmic-ray <https://cosmic-ray.readthedocs.io>`_'s: ``cosmic-ray init``'s own
code lists every mutation of each file into a cosmic-ray work database (``--work-db FILE``
keeps it for ``cr-report``), and cosmic-ray's mutation visitor applies each one. The script runs them
itself rather than with ``cosmic-ray exec``, which writes each mutant over the source file and
starts a fresh interpreter and test run per mutant, one at a time with its default distributor
(4 to 6 s per mutant here: over an hour for the thousand mutants). Instead it

* copies the tree to a temporary folder per worker and never writes a source file: a test run
  imports the mutated module from memory (an import hook serves the mutated text under the file's
  name), so an interrupted run leaves nothing behind but that folder, which it removes;
* forks each test run from a process that has already imported numpy, numba, gymnasium, pydantic,
  hypothesis, pytest, cosmic-ray and the package's bottom (config and schemas, with the data files
  loaded), so a mutant costs its own tests (``--no-fork``: a fresh interpreter per mutant);
* runs, per module, a few fast test files that pin it (:data:`MODULES`), the most specific first,
  stopping at the first failure (``-x``);
* sets ``NUMBA_DISABLE_JIT=1``: the rules are ``@njit`` functions, which run as plain Python, so a
  mutant takes effect without a compile (and ``NUMBA_CACHE_DIR`` points into the temporary
  folder, so no cache can serve a stale function);
* runs ``--jobs`` mutants at a time (default 2), each with a timeout (5 x the module's unmutated
  run, at least 30 s; ``--timeout``).

A mutant is **killed** when a test fails, the mutated module fails to import, or the run times
out; it **survives** when the tests pass. A mutation that makes invalid Python (``def f(a, *, b)``
-> ``def f(a, -, b)``) is reported and not counted. The script prints ``killed N of M mutants``
per module and overall, and each survivor as ``path:line (module) operator``, its line before and
after, and why it may survive (:data:`EQUIVALENT`), or ``NOT EXPLAINED``.

Which mutants
-------------

Every cosmic-ray core operator, less:

* ``RemoveDecorator``, and mutations inside an ``@njit(...)`` decorator: with the JIT off they
  change nothing (that compiled and plain Python agree bit for bit is
  ``tests/test_rules.py::test_plain_python_runs_the_same_code_with_the_same_results``);
* mutations inside annotations, which ``from __future__ import annotations`` never evaluates;
* operator replacements outside :data:`REPLACEMENTS` (``--all-operators`` makes them all): a
  relational operator gets the non-redundant replacements of Just, Kapfhammer and Schweiggert
  (ISSRE 2012) (``<`` -> ``<=``, ``!=``; ``==`` -> ``<=``, ``>=``; ...); ``+ - * /`` each of the
  other three (not ``// % **``); a bitwise or shift operator the others of its family; an
  arithmetic operator never a bitwise one (on floats a ``TypeError`` at once) nor a comparison
  ``is``/``in``. The full set is more than twice as many mutants for little more information.

Scope: ``world/rules.py`` (less the oracle), the oracle (``best_target``, ``_oracle_loop``,
``oracle_actions`` of ``rules.py``), ``world/reward.py``, ``world/observation.py``,
``world/radio.py``, ``world/power.py``, and the counter-based random numbers of
``backends/sim.py`` (``random_word`` to ``lognormal`` and their constants).

Survivors
---------

Each survivor of the last full run is equivalent to the original: no input the module can be
given tells them apart. :data:`EQUIVALENT` matches them by module, operator and mutated line:

=======================================  =================================================
mutated code                             why it cannot be told apart
=======================================  =================================================
``x.reshape(-2)`` for ``reshape(-1)``    numpy infers a dimension given as any negative
                                         size (rules, oracle, reward, observation)
``k <= LOCAL``, ``k <= 0`` for ``==``    links are -1, 0, 1; a remote target's is 0 or 1
``kind < "phone"`` for ``!=``            kinds are phone, edge, cloud; both others sort first
``location >= "edge"`` for ``==``        remote locations are edge and cloud; "cloud" < "edge"
``tail_mj=(1.0, 0.0)`` etc.              a placeholder the next statement replaces
``args[1].shape``, ``flat[1].size``      ``np.broadcast_arrays`` made every shape equal
``a < x or a <= x`` for ``... a == x``   the same condition
``max(..., default=1)`` for ``0``        a table with no rows: its width is never read
``obs.ndim <= 1`` for ``== 1``           an observation has at least one dimension
``<`` for ``<=`` at 0.02425, 0.97575,    no draw lands on a boundary: p is an odd multiple
0.01, 0.99 (normal quantile, noise)      of 2**-54, a table node a multiple of 2**-12
``p <= 0.5`` for ``p < 0.5``             the tail formula never sees p = 0.5
=======================================  =================================================
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What a worker's copy of the tree holds (what the tests import and read).
COPY = ("autoscale_env", "agents", "tests", "setup.cfg", "pyproject.toml")

#: pytest options of every run: stop at the first failure, no cache, the fast tier, quiet, a
#: fixed hypothesis seed (a mutant's verdict does not depend on the run), and the two plugins the
#: tests use named here rather than found by a scan of every installed package.
PYTEST = ("-x", "-q", "--no-header", "-p", "no:cacheprovider", "-m", "not slow and not live",
          "-p", "_hypothesis_pytestplugin", "-p", "pytest_timeout", "--hypothesis-seed=0",
          "-W", "ignore::RuntimeWarning", "-W", "ignore::pytest.PytestAssertRewriteWarning")


@dataclass(frozen=True)
class Module:
    """A module under mutation: its file, its scope in it, and the tests that pin it.

    ``only``: top-level names (functions, classes, assigned constants) in scope, or empty for the
    whole file; ``skip``: top-level names out of scope. ``tests``: pytest arguments (fast files,
    fastest first, so that most mutants die in the first second)."""

    name: str
    path: str
    tests: tuple[str, ...]
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


#: The oracle: the part of ``rules.py`` that picks the best target.
ORACLE = ("best_target", "_oracle_loop", "oracle_actions")

#: The counter-based random numbers of the simulator (``backends/sim.py``).
RANDOM = ("DRAWS_PER_REQUEST", "GOLDEN", "random_word", "uniform", "choice", "normal",
          "_open_uniform", "inverse_normal_cdf", "NOISE_QUANTILES", "NOISE_EXACT_TAIL",
          "lognormal_table", "lognormal")

MODULES = (
    Module("rules", "autoscale_env/world/rules.py", skip=ORACLE, tests=(
        "tests/world/test_rules_outcomes.py", "tests/world/test_scorer.py",
        "tests/test_rules.py")),
    Module("oracle", "autoscale_env/world/rules.py", only=ORACLE, tests=(
        "tests/world/test_oracle.py", "tests/test_reward.py", "tests/test_rules.py", "-k",
        "oracle")),
    Module("reward", "autoscale_env/world/reward.py", tests=(
        "tests/world/test_reward_terms.py", "tests/test_reward.py", "tests/test_rules.py", "-k",
        "reward")),
    Module("observation", "autoscale_env/world/observation.py", tests=(
        "tests/world/test_observation_bins.py", "tests/test_state.py",
        "tests/test_observation_edges.py", "-k", "not 4096")),
    Module("radio", "autoscale_env/world/radio.py", tests=(
        "tests/world/test_radio_rules.py", "tests/test_radio_predictor.py",
        "tests/world/test_rules_outcomes.py", "tests/test_rules.py")),
    Module("power", "autoscale_env/world/power.py", tests=(
        "tests/world/test_power.py", "tests/test_rules.py")),
    Module("random", "autoscale_env/backends/sim.py", only=RANDOM, tests=(
        "tests/backends/test_sim_random.py", "tests/backends/test_sim_batched.py", "-k",
        "random or normal or fresh_word or share or lognormal or noise")),
)

#: Survivors the tests cannot kill, because no input can tell them from the original:
#: ``(modules, operators, mutated line, why)``. Operators are cosmic-ray's names without
#: ``core/``; the mutated line (stripped of indentation) is a regular expression matched whole.
EQUIVALENT: tuple[tuple[tuple[str, ...], tuple[str, ...], str, str], ...] = (
    (("rules", "oracle", "reward", "observation"),
     ("NumberReplacer", "ReplaceUnaryOperator_USub_Invert"), r".*\.reshape\((1, )?(- 2|~1)[,)].*",
     "reshape(-2) is reshape(-1): numpy infers the size of a dimension given as any negative "
     "number"),
    (("rules",), ("ReplaceComparisonOperator_Eq_LtE",), r"if k <= LOCAL:.*",
     "a target's link is LOCAL (-1), 0 (Wi-Fi) or 1 (Wi-Fi Direct): k <= -1 only for -1"),
    (("rules",), ("ReplaceComparisonOperator_Eq_LtE",),
     r"goodput, rtt, tx_w, rx_w.* if k <= 0 else.*",
     "for a remote target the link is 0 or 1: k <= 0 only for 0"),
    (("rules",), ("ReplaceComparisonOperator_NotEq_Lt",), r'if self\.phone\.kind < "phone":',
     "the device kinds are phone, edge and cloud (schemas.DEVICE_KINDS): the other two sort "
     "before 'phone'"),
    (("rules",), ("ReplaceComparisonOperator_Eq_GtE",), r'.*t\.location >= "edge".*',
     "a remote target's location is edge or cloud (types.LOCATIONS), and 'cloud' < 'edge'"),
    (("rules",), ("NumberReplacer",), r".*tail_mj=\( ?-?[01]\.0, ?-?[01]\.0\)\)",
     "a placeholder: the next statement replaces tail_mj with the links' tail energies"),
    (("reward",), ("NumberReplacer",),
     r"shape = args\[ -?1\]\.shape|r = np\.empty\(flat\[ -?1\]\.size\)",
     "np.broadcast_arrays gave every argument the same shape"),
    (("observation",), ("ReplaceComparisonOperator_Eq_LtE",),
     r"if edges\[(row, )?k\] < x or \(not descending and edges\[(row, )?k\] <= x\):",
     "'a < x or a <= x' is 'a <= x', which is what 'a < x or a == x' says"),
    (("observation",), ("NumberReplacer",),
     r"out\[k\] = bin_index\(edges, -1, edges\.shape\[1\], values\[k\], descending\)",
     "the edges were reshaped to one row just before: row -1 is row 0"),
    (("random",), ("NumberReplacer",), r"@functools\.lru_cache\(maxsize= 25[57]\)",
     "the size of a cache of a pure function's results: any size returns the same tables"),
    (("observation",), ("NumberReplacer",), r"most = max\(.*, default= 1\)",
     "without context features the edge table has no rows, and its width is never read"),
    (("observation",), ("ReplaceComparisonOperator_Eq_LtE",),
     r"return int\(index\) if obs\.ndim <= 1 else index",
     "an observation has at least one dimension; a 0-d array has no features to index"),
    (("random",), ("ReplaceComparisonOperator_LtE_Lt",),
     r"if (0\.02425|NOISE_EXACT_TAIL) <=? p <=? 1\.0 - \1:",
     "no draw lands on a boundary between the formulas: every p is an odd multiple of 2**-54 "
     "and every table node a multiple of 2**-12, which 0.02425, 0.97575, 0.01 and 0.99 are not "
     "(tests/backends/test_sim_random.py::test_no_draw_lands_on_a_boundary_between_formulas)"),
    (("random",), ("ReplaceComparisonOperator_Lt_LtE",), r"return tail if p <= 0\.5 else -tail",
     "the tail formula runs only for p < 0.02425 or p > 0.97575, never at p = 0.5"),
)


def equivalence(module: str, operator: str, mutated: str) -> str:
    """Why a survivor is equivalent (:data:`EQUIVALENT`), or ''."""
    for modules, operators, line, why in EQUIVALENT:
        if module in modules and operator in operators and re.fullmatch(line, mutated):
            return why
    return ""

#: Why a mutant is not made (module docstring).
ANNOTATION = "in annotations (never evaluated)"
DECORATOR = "in @njit decorators (the JIT is off)"
NOT_SELECTED = "replacements outside the selected set"
INVALID_PYTHON = "invalid Python once mutated"

#: The operator replacements made (without ``--all-operators``). Relational operators: the
#: non-redundant replacements of Just, Kapfhammer and Schweiggert (ISSRE 2012), less the constant
#: true/false ones (``AddNot`` negates a whole condition); identity and membership: their negation;
#: arithmetic: any other arithmetic operator, but ``+ - * /`` only by each other; shifts and
#: bitwise operators: any other of them.
BASIC = {"Add", "Sub", "Mul", "Div"}
ARITHMETIC = BASIC | {"FloorDiv", "Mod", "Pow"}
BITWISE = {"RShift", "LShift", "BitOr", "BitAnd", "BitXor"}
REPLACEMENTS = {
    "Lt": {"LtE", "NotEq"}, "LtE": {"Lt", "Eq"}, "Gt": {"GtE", "NotEq"}, "GtE": {"Gt", "Eq"},
    "Eq": {"LtE", "GtE"}, "NotEq": {"Lt", "Gt"}, "Is": {"IsNot"}, "IsNot": {"Is"},
    "In": {"NotIn"}, "NotIn": {"In"},
    **{op: BASIC - {op} for op in BASIC},
    **{op: ARITHMETIC - {op} for op in ARITHMETIC - BASIC},
    **{op: BITWISE - {op} for op in BITWISE},
}


def dropped_operator(operator: str, everything: bool = False) -> str | None:
    """Why an operator's mutants are not made (module docstring), or None."""
    name = operator.split("/")[-1]
    if name == "RemoveDecorator":
        return DECORATOR
    m = re.fullmatch(r"Replace(Binary|Comparison)Operator_(\w+?)_(\w+)", name)
    if m and not everything and m[3] not in REPLACEMENTS[m[2]]:
        return NOT_SELECTED
    return None


# ----------------------------------------------------------------------------------------------
# Where a mutation is: scope and annotations


def top_level_spans(source: str) -> list[tuple[int, int, str]]:
    """``(first line, last line, name)`` of each top-level definition and assignment."""
    spans = []
    for node in ast.parse(source).body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        else:
            names = [""]
        spans += [(first, node.end_lineno, n) for n in names]
    return spans


def inert_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """``((line, col), (end line, end col), why)`` of the code in ``source`` whose mutants cannot
    change what the tests see: annotations and ``@njit(...)`` decorators."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        notes, decorators = [], []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            notes = [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg,
                                             a.kwarg) if x is not None] + [node.returns]
            decorators = [d for d in node.decorator_list
                          if getattr(d.func if isinstance(d, ast.Call) else d, "id", "") == "njit"]
        elif isinstance(node, ast.AnnAssign):
            notes = [node.annotation]
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset), why)
                  for group, why in ((notes, ANNOTATION), (decorators, DECORATOR))
                  for n in group if n is not None]
    return spans


def in_scope(module: Module, spans, line: int) -> bool:
    names = {n for first, last, n in spans if first <= line <= last}
    if module.only:
        return bool(names & set(module.only))
    return not names & set(module.skip)


# ----------------------------------------------------------------------------------------------
# Mutants


@dataclass
class Mutant:
    module: Module
    job_id: str
    operator: str         # without "core/"
    occurrence: int
    line: int
    original: str = ""    # the line before and after the mutation (stripped)
    mutated: str = ""
    diff: str = ""
    outcome: str = ""     # killed | survived | timeout | invalid | not applied | error
    seconds: float = 0.0
    output: str = ""


@dataclass
class Plan:
    mutants: list[Mutant] = field(default_factory=list)
    generated: Counter = field(default_factory=Counter)   # per module
    dropped: dict = field(default_factory=dict)           # module -> Counter of reasons


def make_plan(modules, work_db, copy_root: Path, everything: bool = False) -> Plan:
    """Every mutant of ``modules`` (cosmic-ray's ``init`` into ``work_db``, run in the copy at
    ``copy_root``), less those left out (recorded in the database as skipped, with the reason)."""
    from cosmic_ray.commands.init import init
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    paths = sorted({m.path for m in modules})
    with contextlib.chdir(copy_root):
        init([Path(p) for p in paths], work_db, {})
    sources = {p: (copy_root / p).read_text() for p in paths}
    spans = {p: top_level_spans(s) for p, s in sources.items()}
    inert = {p: inert_spans(s) for p, s in sources.items()}
    plan = Plan(dropped={m.name: Counter() for m in modules})
    skipped: dict[str, list[str]] = {}
    for item in work_db.work_items:
        (spec,) = item.mutations
        path = spec.module_path.as_posix()
        line = spec.start_pos[0]
        owners = [m for m in modules if m.path == path and in_scope(m, spans[path], line)]
        if not owners:
            skipped.setdefault("not in the modules under test", []).append(item.job_id)
            continue
        (module,) = owners
        plan.generated[module.name] += 1
        reason = dropped_operator(spec.operator_name, everything)
        for a, b, why in inert[path]:
            if a <= tuple(spec.start_pos) < b:
                reason = why
        if reason:
            plan.dropped[module.name][reason] += 1
            skipped.setdefault(reason, []).append(item.job_id)
            continue
        plan.mutants.append(Mutant(module, item.job_id, spec.operator_name.split("/")[-1],
                                   spec.occurrence, line))
    for reason, ids in skipped.items():
        work_db.set_multiple_results(ids, WorkResult(output=f"left out: {reason}",
                                                     worker_outcome=WorkerOutcome.SKIPPED))
    order = {m.name: k for k, m in enumerate(MODULES)}
    plan.mutants.sort(key=lambda m: (order[m.module.name], m.line, m.operator, m.occurrence))
    return plan


def mutated_source(source: str, operator: str, occurrence: int) -> str | None:
    """``source`` with cosmic-ray's mutation applied (None: nothing to apply)."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    return mutate_code(source, get_operator("core/" + operator)(), occurrence)


def describe(mutant: Mutant, source: str) -> None:
    """Fill in the mutant's line before and after, and its diff (for the report)."""
    code = mutated_source(source, mutant.operator, mutant.occurrence)
    if code is None:
        return
    before, after = source.splitlines(), code.splitlines()
    mutant.original = before[mutant.line - 1].strip()
    mutant.mutated = after[mutant.line - 1].strip() if mutant.line <= len(after) else ""
    mutant.diff = "".join(difflib.unified_diff(
        source.splitlines(True), code.splitlines(True), mutant.module.path, mutant.module.path,
        n=0))


# ----------------------------------------------------------------------------------------------
# Running tests in a worker's copy


def prepare_copy(dest: Path) -> None:
    """A copy of what the tests need (the test runs read their files from it; nothing is written
    to it but test output)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


def test_environment(tmp: Path) -> dict[str, str]:
    """The environment of the test runs (inherited by a fork, passed to a fresh interpreter)."""
    return {"NUMBA_DISABLE_JIT": "1", "NUMBA_CACHE_DIR": str(tmp / "numba-cache"),
            "PYTHONHASHSEED": "0", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def preload(root: Path, modules) -> None:
    """What every forked test run would import or read the same way, done once in the parent:
    the heavy third-party modules and the package's bottom (data files, schemas; warmed
    ``config`` caches). None of the modules under mutation, nor any module that imports one, is
    loaded here: each test run imports those afresh."""
    for name in ("numpy", "numba", "gymnasium", "pydantic", "hypothesis", "pytest", "parso",
                 "cosmic_ray.mutating", "cosmic_ray.plugins",
                 "_pytest.python", "_pytest.assertion.rewrite", "_hypothesis_pytestplugin",
                 "pytest_timeout"):
        with contextlib.suppress(ImportError):
            __import__(name)
    sys.path.insert(0, str(root))
    import autoscale_env  # noqa: F401
    from autoscale_env.world import config

    config.load_workloads(), config.load_links(), config.load_scenarios()
    config.load_settings(), config.load_reward_presets(), config.load_features()
    for kind in ("phone", "edge", "cloud"):
        with contextlib.suppress(Exception):
            for name in config.device_names(kind):
                config.load_device(name)
    for name in ("paper", "per_network", "fitted"):
        with contextlib.suppress(Exception):
            config.load_features(str(config.resolve_features_path(name)))
    loaded = [m.path for m in modules if module_name(m.path) in sys.modules]
    assert not loaded, f"preloaded a module under mutation: {loaded}"
    assert Path(autoscale_env.__file__).is_relative_to(root), autoscale_env.__file__


class MutatedSource:
    """An import hook that serves one module from a string (the mutant) instead of its file, with
    the file's name, so nothing is ever written over a source file."""

    def __init__(self, name: str, path: Path, source: str):
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(self.path))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = str(self.path)
        exec(compile(self.source, str(self.path), "exec", dont_inherit=True), module.__dict__)


#: Exit codes of a test run whose mutation cosmic-ray could not apply, or made invalid Python
#: (e.g. ``def f(a, *, b)`` -> ``def f(a, -, b)``): such a mutant is reported, not counted.
NOT_APPLIED, INVALID = 98, 97


def child_main(root: Path, args: list[str], path: str, mutation: list | None) -> int:
    """A test run: pytest in the copy at ``root``, with module file ``path`` mutated by
    ``mutation`` (``[operator, occurrence]``; None: unmutated) in memory. The mutation is applied
    here, in the test run's process, so that the parse it needs runs on the workers."""
    os.chdir(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if mutation is not None:
        source = mutated_source((root / path).read_text(), *mutation)
        if source is None:
            return NOT_APPLIED
        try:
            compile(source, str(root / path), "exec", dont_inherit=True)
        except SyntaxError:
            return INVALID
        sys.meta_path.insert(0, MutatedSource(module_name(path), root / path, source))
    import pytest

    return int(pytest.main(args))


class Run:
    """One pytest run in ``root`` (forked from this process, or a fresh interpreter)."""

    def __init__(self, root: Path, args: list[str], path: str, mutation: list | None, log: Path,
                 fork: bool):
        self.log, self.started, self.proc = log, time.monotonic(), None
        if not fork:
            spec = log.with_suffix(".json")
            spec.write_text(json.dumps({"root": str(root), "args": args, "path": path,
                                        "mutation": mutation}))
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, __file__, "--child", str(spec)], cwd=root, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            self.pid = self.proc.pid
            return
        self.pid = os.fork()
        if self.pid:
            return
        code = 99  # the child: never returns
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = child_main(root, args, path, mutation)
        except BaseException:  # noqa: B036 (the child must always exit here)
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        """Exit code (negative: killed by that signal), or None while running."""
        if self.proc is not None:
            return self.proc.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            if self.proc is not None:
                self.proc.wait()
            else:
                os.waitpid(self.pid, 0)

    def output(self, limit: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-limit:]


def verdict(code: int) -> str:
    """pytest's exit code -> the mutant's fate. 1: a test failed; 2, 3: collection or an internal
    error (the mutant broke an import: killed); a signal: a crash (killed); 4, 5: a usage error or
    no tests, which no mutant can cause (error)."""
    if code == 0:
        return "survived"
    if code in (1, 2, 3) or code < 0:
        return "killed"
    if code == NOT_APPLIED:
        return "not applied"
    if code == INVALID:
        return "invalid"
    return "error"


def test_args(module: Module, root: Path) -> list[str]:
    """The module's pytest arguments, less test files missing from the tree (warned at start)."""
    return [a for a in module.tests if not a.startswith("tests/") or (root / a).exists()]


def run_all(jobs: list, slots: list[Path], fork: bool, timeout_of, on_done, logs: Path) -> None:
    """Run ``jobs`` (``(key, module, [operator, occurrence] or None)``) over the worker copies
    ``slots``, at most one per copy at a time; ``on_done(key, code or 'timeout', seconds,
    output)``."""
    queue, free, running = deque(jobs), list(slots), {}
    try:
        while queue or running:
            while queue and free:
                key, module, mutation = queue.popleft()
                slot = free.pop()
                shutil.rmtree(slot / ".hypothesis", ignore_errors=True)
                args = [*PYTEST, *test_args(module, slot)]
                running[slot] = (key, module, Run(slot, args, module.path, mutation,
                                                  logs / f"{slot.name}.log", fork))
            time.sleep(0.02)
            for slot, (key, module, run) in list(running.items()):
                code = run.poll()
                elapsed = time.monotonic() - run.started
                if code is None and elapsed > timeout_of(module):
                    run.kill()
                    code = "timeout"
                if code is None:
                    continue
                del running[slot]
                free.append(slot)
                on_done(key, code, elapsed, run.output())
    finally:
        for _, _, run in running.values():
            run.kill()


# ----------------------------------------------------------------------------------------------
# Report


def summarise(plan: Plan, modules) -> dict:
    rows = {}
    for m in modules:
        mine = [x for x in plan.mutants if x.module.name == m.name]
        ran = [x for x in mine if x.outcome != "invalid"]
        killed = sum(x.outcome in ("killed", "timeout") for x in ran)
        left_out = dict(plan.dropped[m.name])
        if len(ran) < len(mine):
            left_out[INVALID_PYTHON] = len(mine) - len(ran)
        rows[m.name] = {"path": m.path, "scope": list(m.only) or "whole file",
                        "generated": plan.generated[m.name], "left_out": left_out,
                        "mutants": len(ran), "test_seconds": round(sum(x.seconds for x in ran)),
                        "killed": killed, "timeouts": sum(x.outcome == "timeout" for x in ran),
                        "survived": sum(x.outcome == "survived" for x in ran),
                        "errors": sum(x.outcome in ("error", "not applied") for x in ran),
                        "tests": " ".join(m.tests)}
    survivors = [{"module": x.module.name, "path": x.module.path, "line": x.line,
                  "operator": x.operator, "original": x.original, "mutated": x.mutated,
                  "reason": equivalence(x.module.name, x.operator, x.mutated)}
                 for x in plan.mutants if x.outcome == "survived"]
    errors = [{"module": x.module.name, "line": x.line, "operator": x.operator,
               "output": x.output} for x in plan.mutants
              if x.outcome in ("error", "not applied")]
    return {"modules": rows, "survivors": survivors, "errors": errors}


def killed_line(killed: int, total: int) -> str:
    pct = 100.0 * killed / total if total else 100.0
    return f"killed {killed} of {total} mutants ({pct:.1f} %)"


def print_report(report: dict) -> None:
    rows = report["modules"]
    width = max(len(n) for n in rows)
    for name, r in rows.items():
        print(f"{name:<{width}}  {killed_line(r['killed'], r['mutants'])}"
              + (f", {r['timeouts']} by timeout" if r["timeouts"] else "")
              + (f", {r['errors']} errors" if r["errors"] else ""))
    killed = sum(r["killed"] for r in rows.values())
    total = sum(r["mutants"] for r in rows.values())
    print(f"{'all':<{width}}  {killed_line(killed, total)}")
    if report["survivors"]:
        print(f"\n{len(report['survivors'])} survivors:")
    for s in report["survivors"]:
        why = s["reason"] or "NOT EXPLAINED (add a test, or a reason to EQUIVALENT)"
        print(f"  {s['path']}:{s['line']} ({s['module']}) {s['operator']}\n"
              f"      {s['original']}\n    ->{s['mutated']}\n      {why}")
    for e in report["errors"]:
        print(f"  error {e['module']}:{e['line']} {e['operator']}:\n{e['output']}")


def markdown(report: dict) -> str:
    """The report as two Markdown tables: per module, and the survivors grouped by reason."""
    out = ["| module | scope | killed | of | % | not made or not counted |",
           "|---|---|---|---|---|---|"]
    for name, r in report["modules"].items():
        scope = f"`{r['path']}`" if r["scope"] == "whole file" else f"`{r['path']}`: " + ", ".join(
            f"`{n}`" for n in r["scope"])
        pct = 100.0 * r["killed"] / r["mutants"] if r["mutants"] else 100.0
        left = "; ".join(f"{n} {why}" for why, n in r["left_out"].items()) or "-"
        out.append(f"| {name} | {scope} | {r['killed']} | {r['mutants']} | {pct:.1f} | {left} |")
    killed = sum(r["killed"] for r in report["modules"].values())
    total = sum(r["mutants"] for r in report["modules"].values())
    out.append(f"| **all** | | **{killed}** | **{total}** | "
               f"**{100.0 * killed / total if total else 100.0:.1f}** | |")
    groups: dict[str, list[str]] = {}
    for s in report["survivors"]:
        code = s["mutated"].replace("|", "\\|")
        groups.setdefault(s["reason"] or "**not explained**", []).append(
            f"`{s['path'].removeprefix('autoscale_env/')}:{s['line']}` `{code}`")
    out += ["", "| why it survives | survivors | where, and the mutated line |", "|---|---|---|"]
    for why, where in groups.items():
        out.append(f"| {why} | {len(where)} | {'<br>'.join(where)} |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.reconfigure(line_buffering=True)  # nothing buffered is copied into a fork
    if argv[:1] == ["--child"]:  # a test run in a fresh interpreter (--no-fork)
        spec = json.loads(Path(argv[1]).read_text())
        return child_main(Path(spec["root"]), spec["args"], spec["path"], spec["mutation"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=[m.name for m in MODULES],
                        help="mutate only this module (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 5 x the module's unmutated run, at "
                             "least 30)")
    parser.add_argument("--out", type=Path, action="append", default=[],
                        help="write the report here: .json or .md (repeatable)")
    parser.add_argument("--work-db", type=Path, default=None,
                        help="keep cosmic-ray's work database here (for cr-report)")
    parser.add_argument("--all-operators", action="store_true",
                        help="every replacement cosmic-ray makes, not only the selected set")
    parser.add_argument("--dry-run", action="store_true", help="count the mutants, run nothing")
    parser.add_argument("--no-fork", action="store_true",
                        help="a fresh interpreter per mutant instead of a fork")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    modules = [m for m in MODULES if not args.module or m.name in args.module]
    fork = hasattr(os, "fork") and not args.no_fork
    for out in args.out:
        if out.suffix not in (".json", ".md"):
            parser.error(f"--out {out}: .json or .md")

    from cosmic_ray.work_db import use_db
    from tqdm import tqdm

    def stop(signum, frame):  # SIGTERM and SIGHUP clean up as Ctrl-C does
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    tqdm.monitor_interval = 0  # no monitor thread in a process that forks

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mutants-"))
    try:
        os.environ.update(test_environment(tmp))
        logs = tmp / "logs"
        logs.mkdir()
        slots = [tmp / f"worker{k}" for k in range(max(1, args.jobs))]
        for slot in slots:
            prepare_copy(slot)
        db_path = args.work_db or tmp / "work.sqlite"
        if db_path.exists():
            db_path.unlink()
        with use_db(str(db_path)) as work_db:
            plan = make_plan(modules, work_db, slots[0], args.all_operators)
            for m in modules:
                left = ", ".join(f"{n} {why}" for why, n in plan.dropped[m.name].items())
                print(f"{m.name}: {sum(x.module is m for x in plan.mutants)} mutants of "
                      f"{plan.generated[m.name]} made ({left or 'none'} left out)")
                missing = [a for a in m.tests if a not in test_args(m, slots[0])]
                if missing:
                    print(f"  warning: {m.name}: no {', '.join(missing)}", file=sys.stderr)
            if args.dry_run:
                return 0
            if fork:
                preload(slots[0], modules)
                # Bytecode (pytest's rewritten test modules too) is cached under the temporary
                # folder, never next to a source, and the objects loaded so far are left out of
                # every garbage collection of the test runs (pytest collects at its end).
                sys.pycache_prefix = str(tmp / "pycache")
                sys.dont_write_bytecode = False
                gc.freeze()

            # Unmutated runs first: each module's tests must pass, and set its timeout.
            baseline: dict[str, float] = {}

            def base_done(key, code, seconds, output):
                if code != 0:
                    raise SystemExit(f"the tests of {key} fail without a mutant "
                                     f"(exit {code}):\n{output}")
                baseline[key] = seconds

            run_all([(m.name, m, None) for m in modules], slots, fork, lambda m: 600.0,
                    base_done, logs)

            def timeout_of(module):
                return args.timeout or max(30.0, 5.0 * baseline[module.name])

            from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

            sources = {m.path: (slots[0] / m.path).read_text() for m in modules}
            jobs = [(x, x.module, [x.operator, x.occurrence]) for x in plan.mutants]
            bar = tqdm(total=len(jobs), unit="mutant", dynamic_ncols=True, file=sys.stderr)
            counts = Counter()

            def done(x, code, seconds, output):
                x.outcome = "timeout" if code == "timeout" else verdict(code)
                x.seconds = seconds
                counts[x.outcome] += 1
                bar.update()
                bar.set_postfix(killed=counts["killed"] + counts["timeout"],
                                survived=counts["survived"], refresh=False)
                if x.outcome in ("killed", "timeout"):
                    result = WorkResult(worker_outcome=WorkerOutcome.NORMAL,
                                        test_outcome=TestOutcome.KILLED, output=output)
                elif x.outcome == "survived":
                    describe(x, sources[x.module.path])
                    result = WorkResult(worker_outcome=WorkerOutcome.NORMAL,
                                        test_outcome=TestOutcome.SURVIVED, output=output,
                                        diff=x.diff)
                else:
                    x.output = output
                    result = WorkResult(worker_outcome=WorkerOutcome.ABNORMAL, output=output)
                work_db.set_result(x.job_id, result)

            run_all(jobs, slots, fork, timeout_of, done, logs)
            bar.close()
        report = summarise(plan, modules)
        report["wall_s"] = round(time.monotonic() - started, 1)
        report["jobs"] = len(slots)
        report["baseline_s"] = {k: round(v, 2) for k, v in baseline.items()}
        print_report(report)
        print(f"\nwall time {report['wall_s']:.0f} s with {len(slots)} workers")
        for out in args.out:
            out.write_text(json.dumps(report, indent=1) if out.suffix == ".json"
                           else markdown(report))
        return 0
    except KeyboardInterrupt as stop_signal:
        print(f"\ninterrupted ({stop_signal or 'SIGINT'}): nothing of the tree was changed",
              file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
