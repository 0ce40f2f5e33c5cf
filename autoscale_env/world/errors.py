"""Errors raised by autoscale-env.

Every error derives from :class:`AutoScaleError` and from the builtin it refines, so callers may
catch either ``AutoScaleError`` or the usual ``ValueError`` / ``RuntimeError`` / ``ImportError``.
Messages name the file, field or value at fault and, where there is a closed set, the valid choices.
"""

from __future__ import annotations

from collections.abc import Iterable


class AutoScaleError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AutoScaleError, ValueError):
    """A configuration or profile file (or an argument naming one) is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A name (device, scenario, setting, backend, target, agent) is not one of the valid choices."""

    def __init__(self, kind: str, name: object, choices: Iterable[str]):
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices)}")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


class InvalidActionError(AutoScaleError, ValueError):
    """An action outside the environment's action space was passed to ``step``."""


class TraceFormatError(AutoScaleError, ValueError):
    """A recorded trace is malformed; the message names the file, the row and the column."""


class ModelFileError(AutoScaleError, ValueError):
    """A saved agent is junk, truncated, or was made for another environment."""


class BackendUnavailable(AutoScaleError, RuntimeError):
    """A backend cannot run here (missing hardware, server unreachable, ...)."""


class DependencyMissing(AutoScaleError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{what}; install it with: "
            f"pip install -c constraints.txt 'autoscale-env[{extra}]'"
        )
