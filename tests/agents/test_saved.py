"""Loading a saved agent and evaluating it: on which cell, and saying so."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

from agents import make_agent
from agents.experiments.saved import DEFAULT_CELL, describe, evaluate_saved


def test_a_saved_sb3_model_is_evaluated_on_the_cell_it_was_trained_on(tmp_path, capsys):
    pytest.importorskip("stable_baselines3")
    env = gym.make("AutoScale-v0", scenario="translation", setting="static")
    agent = make_agent("ppo", env, seed=0, n_steps=64)
    path = tmp_path / "model.zip"
    agent.save(str(path))
    meta = json.loads((tmp_path / "model.zip.meta.json").read_text())
    assert meta["env"] == {"device": "mi8pro", "scenario": "translation", "setting": "static"}
    assert describe(path)["env"]["scenario"] == "translation"

    rows = evaluate_saved(path, seeds=1, eval_steps=50)
    assert {(r["device"], r["scenario"], r["setting"]) for r in rows} == {
        ("mi8pro", "translation", "static")}
    said = capsys.readouterr().err
    assert "scenario=translation, setting=static" in said
    assert "recorded in the model file" in said


def test_a_model_file_without_a_cell_says_the_default_is_used(tmp_path, capsys):
    path = tmp_path / "oracle.json"
    path.write_text(json.dumps({"agent": "oracle"}))
    rows = evaluate_saved(path, seeds=1, eval_steps=20)
    assert {(r["device"], r["scenario"], r["setting"]) for r in rows} == {DEFAULT_CELL}
    said = capsys.readouterr().err
    assert "by default" in said and "--scenario" in said


def test_cells_given_by_the_caller_win_over_the_recorded_one():
    from agents.experiments.saved import chosen_cells
    meta = {"agent": "qlearning", "env": {"device": "mi8pro", "scenario": "translation",
                                          "setting": "static"}}
    cells, why = chosen_cells(meta, None, ["streaming", "non_streaming"], None)
    assert cells == (["mi8pro"], ["streaming", "non_streaming"], ["static"])
    assert "scenario as given" in why
    assert "device and setting recorded in the model file" in why
