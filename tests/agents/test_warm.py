"""``autoscale warm``: each face's first use, compiled ahead in processes of their own."""

from __future__ import annotations

import pytest

from agents.cli import main
from agents.experiments.warm import PARTS, warm


def test_a_part_runs_in_its_own_process_and_reports_its_seconds():
    seconds = warm(["env"], workers=1)
    assert list(seconds) == ["env"] and seconds["env"] > 0


def test_every_face_has_a_part():
    assert set(PARTS) == {"env", "vector", "fleet", "qlearning"}


def test_an_unknown_part_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="fleet, env, vector, qlearning"):
        warm(["nope"])
    assert main(["warm", "--parts", "nope"]) == 2
    assert "unknown part(s) ['nope']" in capsys.readouterr().err


def test_a_failing_part_names_itself_and_its_error(monkeypatch):
    # a part this process knows and the part's own process does not: that process fails
    monkeypatch.setitem(PARTS, "ghost", lambda: None)
    with pytest.raises(RuntimeError, match=r"(?s)warm ghost failed \(exit 1\): .*KeyError: 'ghost'"):
        warm(["ghost"], workers=1)
