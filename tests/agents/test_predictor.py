"""The Neurosurgeon-style predictor: profiles, fits regressions that predict, places on the
cheapest target predicted feasible, and saves without pickle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agents import make_agent
from agents.experiments.benchmark import BenchmarkConfig, Task, run_task
from agents.experiments.evaluation import evaluate
from agents.predictor import PredictorAgent
from autoscale_env.world.errors import ModelFileError


def make(**kw):
    return gym.make("AutoScale-v0", **{"scenario": "non_streaming", "setting": "dynamic",
                                       "obs_mode": "extended", **kw})


@pytest.fixture(scope="module")
def fitted():
    return PredictorAgent(make(), seed=0, n_fit=2000).learn(2000)


@pytest.mark.slow
def test_profiles_round_robin_then_fits(fitted):
    agent = PredictorAgent(make(), seed=0, n_fit=90)
    seen = []

    class Spy:
        def on_reset(self, info):
            pass

        def on_step(self, action, reward, info):
            seen.append(action)

    agent.learn(95, callback=Spy())
    assert seen[:90] == [t % 9 for t in range(90)] and agent.fitted
    assert fitted.fitted and len(fitted.signatures) >= 7  # mnv2 and mnasnet share (52, 1, 0)


def test_predictions_track_the_world(fitted):
    env = make()
    obs, _ = env.reset(seed=123)
    pred, true = [], []
    for _ in range(500):
        lat, _ = fitted.predict_outcomes(obs["raw"])
        pred.append(lat[0])
        true.append(env.unwrapped.counterfactuals()["latency_ms"])
        obs, *_ = env.step(0)
    err = np.abs(np.array(pred) / np.array(true) - 1.0)
    local = np.array([t.is_local for t in env.unwrapped.targets])
    assert np.median(err[:, local]) < 0.1 and np.median(err[:, ~local]) < 0.3


def test_fast_path_equals_the_general_prediction(fitted):
    env = make()
    obs, _ = env.reset(seed=9)
    for _ in range(100):
        lat, en = fitted.predict_outcomes(obs["raw"])
        lat1, en1 = fitted._predict_one(obs["raw"])
        np.testing.assert_allclose(lat[0], lat1, rtol=1e-12)
        np.testing.assert_allclose(en[0], en1, rtol=1e-12)
        obs, *_ = env.step(1)


def test_picks_the_cheapest_target_predicted_feasible(fitted):
    env = make()
    obs, _ = env.reset(seed=4)
    for _ in range(200):
        a = fitted.predict(obs)[0]
        lat, en = fitted._predict_one(obs["raw"])
        sig = fitted._sig_index[tuple(int(v) for v in obs["raw"][:3])]
        ok = fitted.accuracy_ok[sig] & (lat <= fitted.qos_ms * 0.9)
        if ok.any():
            assert ok[a] and en[a] == en[ok].min()
        obs, *_ = env.step(a)


def test_beats_random_and_counterfactual_profiling_works():
    env = make(scenario="translation", setting="static")
    rand = evaluate(make_agent("random", env, seed=0), make(scenario="translation",
                    setting="static"), 1000, seed=7).metrics()
    for source in ("online", "counterfactual"):
        agent = PredictorAgent(make(scenario="translation", setting="static"), seed=0,
                               n_fit=300, fit_source=source).learn(400)
        ours = evaluate(agent, make(scenario="translation", setting="static"), 1000,
                        seed=7).metrics()
        assert ours["energy_mj"] < 0.6 * rand["energy_mj"]


def test_needs_the_extended_observation_and_a_fit():
    with pytest.raises(ValueError, match="obs_mode='extended'"):
        PredictorAgent(gym.make("AutoScale-v0"))
    with pytest.raises(RuntimeError, match="not fitted"):
        PredictorAgent(make()).predict_outcomes(np.zeros(7))
    with pytest.raises(ValueError, match="fit_source"):
        PredictorAgent(make(), fit_source="oracle")


def test_save_load_round_trip_and_refusals(tmp_path, fitted):
    path = tmp_path / "p.npz"
    fitted.save(path)
    loaded = PredictorAgent.load(path, env=make())
    env = make()
    obs, _ = env.reset(seed=3)
    for _ in range(200):
        assert loaded.predict(obs)[0] == fitted.predict(obs)[0]
        obs, *_ = env.step(0)
    with pytest.raises(ModelFileError, match="targets"):
        PredictorAgent.load(path, env=make(device="moto_x_force"))
    data = dict(np.load(path, allow_pickle=False))
    data["weights"] = data["weights"][..., :-1]
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ModelFileError, match="features"):
        PredictorAgent.load(tmp_path / "bad.npz", env=make())


def test_benchmark_makes_extended_envs_for_it(tmp_path):
    cfg = BenchmarkConfig(train_steps=1_200, eval_steps=200, log_interval=600)
    rows = run_task(Task("predictor", "mi8pro", "translation", "dynamic", 0), cfg, None)
    assert rows["results"][0]["agent"] == "predictor" and rows["results"][0]["energy_mj"] > 0
