"""The one check of what a caller hands an environment: an action, ``reset`` options, a closed env.

``AutoScale-v0`` and the fleet both call these, so the two faces refuse the same inputs with
the same messages: a float (``1.7``), a string (``"3"``), a bool (``True``: an integer to Python,
but never a meant action), an integer outside the action space (``2**70`` included, which
must not reach numpy as an ``OverflowError``), an unknown ``reset`` option, a step after close.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from autoscale_env.world.errors import InvalidActionError

__all__ = ["check_action", "check_open", "check_reset_options"]


def check_action(action: Any, n_actions: int, target_names: Sequence[str],
                 who: str = "") -> int:
    """``action`` as a Python int in ``0 .. n_actions - 1``, or :class:`InvalidActionError`.

    Accepted: Python and numpy integers, and 0-d integer arrays (what ``space.sample()`` and
    agents give). Refused: bools, floats (even ``2.0``), strings, arrays of other shapes.

    Args:
        action: what the caller passed.
        n_actions: size of the ``Discrete`` action space.
        target_names: the targets, in action order (named in the message).
        who: a prefix naming the agent, e.g. ``"phone 3: "``.
    """
    kind = type(action).__name__
    if isinstance(action, bool) or kind == "bool" or getattr(action, "dtype", None) == bool:
        raise InvalidActionError(
            f"{who}action {action!r} is a bool, not an integer; valid actions are "
            f"0..{n_actions - 1} ({', '.join(target_names)})")
    try:
        a = operator.index(action)
    except TypeError:
        raise InvalidActionError(
            f"{who}action {action!r} is not an integer; valid actions are 0..{n_actions - 1} "
            f"({', '.join(target_names)})") from None
    if not 0 <= a < n_actions:
        raise InvalidActionError(
            f"{who}action {a} outside Discrete({n_actions}); valid actions are "
            f"0..{n_actions - 1} ({', '.join(target_names)})")
    return a


def check_reset_options(options: Mapping[str, Any] | None, valid: Sequence[str]) -> None:
    """Refuse ``reset(options=...)`` keys outside ``valid`` (a typo must not be ignored)."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ValueError(f"reset(options=...) must be a dict or None, got {type(options).__name__}")
    unknown = sorted(map(str, set(options) - set(valid)))
    if unknown:
        raise ValueError(f"reset(options=...): unknown key(s) {unknown}; valid keys: "
                         f"{', '.join(valid) or 'none (this env takes no options)'}")


def check_open(closed: bool, call: str, what: str = "AutoScale env") -> None:
    """``gymnasium.error.ClosedEnvironmentError`` for ``call`` (``"step()"``) on a closed env."""
    if closed:
        import gymnasium as gym

        raise gym.error.ClosedEnvironmentError(
            f"{call} on a closed {what} (close() released its backend); make a new one")
