"""The ``autoscale`` app: one typer app, the command decorator with the top-level error handler,
and the small parsers the commands share.

Each command is a function in :mod:`agents.cli.experiments` or :mod:`agents.cli.world` registered
with :func:`command`; its options are its typed parameters (help and default in one place), and
``autoscale COMMAND --help`` is generated from them. Commands import the library they call inside
their bodies, so ``autoscale --help`` and a command's ``--help`` start fast.

Exit codes: 0 success; 1 a failed check (``validate``, ``regenerate-traces --check``) or an
operating-system error (disk full, read-only file system, a file where a folder should be, no
permission: one line naming the path); 2 a usage error (an unknown option or name, a bad value, an
existing output without ``--force``); 130 interrupted (Ctrl-C: one line saying what was kept;
``sweep`` stopped by SIGTERM: 143).
"""

import errno
import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

#: What the help of every option shows (typer adds "[default: ...]" to each).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class NamesInHelp(TyperCommand):
    """A command whose option help may name the valid choices read from the data files:
    ``{agents}``, ``{devices}``, ``{scenarios}``, ``{settings}``, ``{features}``, ``{rewards}``
    are filled in when the help is shown (only then, so a run does not load them for its help)."""

    def format_help(self, ctx, formatter) -> None:
        names = None
        for param in self.params:
            text = getattr(param, "help", None)
            if text and "{" in text:
                names = names or valid_names()
                param.help = text.format_map(names)
        super().format_help(ctx, formatter)


class AppGroup(TyperGroup):
    """The group: commands listed in the order they were registered."""

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)


app = typer.Typer(
    name="autoscale", cls=AppGroup, rich_markup_mode=None, add_completion=False,
    no_args_is_help=True, context_settings=CONTEXT,
    help="AutoScale-v0: train, benchmark and evaluate agents; record traces; serve models; check "
         "and calibrate the world. Run `autoscale COMMAND --help` for a command's options, their "
         "defaults and valid values.")


#: Command groups: ``autoscale GROUP COMMAND``.
GROUPS = {
    "profile": typer.Typer(cls=AppGroup, rich_markup_mode=None, no_args_is_help=True,
                           context_settings=CONTEXT,
                           help="Device profiles from your own measurements."),
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


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
                  + f", fixed:<target> (mi8pro targets: {targets}), or your own "
                    "package.module:Class (docs/agents.md)",
        "devices": ", ".join(config.device_names()) + ", or a path to a profile .toml",
        "scenarios": ", ".join(config.load_scenarios()),
        "settings": ", ".join(config.SETTINGS),
        "features": ", ".join(config.FEATURE_SETS) + ", or a path to a features .toml",
        "rewards": ", ".join(config.load_reward_presets()),
    }


# ---- the top-level error handler ---------------------------------------------------------------

#: Operating-system errors reported as one line naming the path (exit 1), not a traceback.
OS_ERRORS = {errno.ENOSPC, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM,
             errno.ENOENT, errno.EDQUOT, errno.EMFILE, errno.ENAMETOOLONG}


def os_error_line(e: OSError) -> str:
    """``PATH: reason`` for an operating-system error."""
    path = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    reason = e.strerror or str(e)
    return f"{path}: {reason}" if path else reason


def command(name: str, *, help: str, kept: Callable[[dict[str, Any]], str] | None = None,
            usage_errors: tuple[type[BaseException], ...] = (), group: str = "") -> Callable:
    """Register ``fn`` as ``autoscale NAME`` (``autoscale GROUP NAME`` with ``group``, one of
    :data:`GROUPS`) behind the top-level error handler.

    The handler turns the library's :class:`~autoscale_env.world.errors.AutoScaleError` and
    ``FileExistsError`` (and the command's ``usage_errors``) into ``autoscale NAME: error: ...``
    and exit 2; an operating-system error into one line naming the path and exit 1; Ctrl-C into
    ``autoscale NAME: interrupted; <kept(options)>`` and exit 130 (an interrupt may carry its own
    ``exit_code``, e.g. 143 for SIGTERM). The function returns its exit code (None: 0).
    """
    label = f"{group} {name}" if group else name

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def guarded(**options: Any) -> int:
            from autoscale_env.world.errors import AutoScaleError
            try:
                return int(fn(**options) or 0)
            except KeyboardInterrupt as e:
                what = kept(options) if kept is not None else "nothing was written"
                print(f"autoscale {label}: interrupted; {what}", file=sys.stderr)
                return int(getattr(e, "exit_code", 130))
            except (AutoScaleError, FileExistsError, *usage_errors) as e:
                print(f"autoscale {label}: error: {e}", file=sys.stderr)
                return 2
            except OSError as e:
                if e.errno not in OS_ERRORS:
                    raise
                print(f"autoscale {label}: error: {os_error_line(e)}", file=sys.stderr)
                return 1
        (GROUPS[group] if group else app).command(name, help=help, cls=NamesInHelp)(guarded)
        return fn
    return register


_INVOCATION: list[str] = []


def set_invocation(argv: list[str]) -> None:
    """Remember the arguments ``main`` runs with (see :func:`invocation`)."""
    _INVOCATION[:] = argv


def invocation() -> list[str]:
    """The arguments of the running ``autoscale`` call (for files that record how they were
    made); the process's arguments when the app was not started through ``main``."""
    return list(_INVOCATION) or sys.argv[1:]


#: The ``--quiet`` option of every command with a progress bar.
Quiet = Annotated[bool, typer.Option("--quiet", help="no progress bar")]


# ---- shared parsers ------------------------------------------------------------------------------


def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_hp(values: list[str] | None, agent: str | None = None) -> dict[str, dict[str, Any]]:
    """``--hp qlearning.epsilon=0.05`` -> ``{"qlearning": {"epsilon": 0.05}}`` (values parsed as
    JSON when they are JSON). With ``agent``, items are ``NAME=VALUE`` for that agent."""
    out: dict[str, dict[str, Any]] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if agent is not None:
            owner, name = agent, key
        else:  # the last dot: an agent given as package.module:Class has dots of its own
            owner, dot, name = key.rpartition(".")
            if not dot or not owner:
                sep = ""
        if not sep or not name:
            form = "NAME=VALUE" if agent is not None else "AGENT.NAME=VALUE"
            raise typer.BadParameter(f"{item!r}: expected {form}", param_hint="'--hp'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(owner, {})[name] = value
    return out


def at_least_one(value: int | None) -> int | None:
    """Option callback: a usage error unless the value is None or >= 1."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be >= 1, got {value}")
    return value
