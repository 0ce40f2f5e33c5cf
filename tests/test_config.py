"""Data files: the bundled ones load; broken ones are refused naming the file and field."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import pytest

from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError

MI8PRO = (config.DEVICES_DIR / "mi8pro.toml").read_text()


def test_bundled_profiles_load_and_cover_the_catalog():
    nets = set(config.load_workloads())
    for name in ("mi8pro", "galaxy_s10e", "moto_x_force", "galaxy_tab_s6", "cloud_server"):
        profile = config.load_device(name)
        assert set(profile.latency_ms) == nets


def test_every_profile_number_carries_a_source():
    for path in sorted(config.DATA_DIR.rglob("*.toml")):
        text = path.read_text()
        for block in re.split(r"\n(?=\[)", text):
            numbers = re.findall(r"^\s*\"?[\w/]+\"?\s*=\s*-?[\d.]+\s*$", block, re.M)
            header = block.splitlines()[0] if block else ""
            if numbers and path.name not in ("features.toml", "rewards.toml", "settings.toml"):
                assert re.search(r"source\s*=", block), f"{path.name} {header}: numbers without a source"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "phone.toml"
    path.write_text(text)
    config.load_device.cache_clear()
    return str(path)


@pytest.mark.parametrize("edit, field, problem", [
    (lambda s: s.replace("busy_power_w = 3.5", "busy_power_w = -3.5", 1), "processors.cpu.busy_power_w", ">= 0.001 and <= 100 W"),
    (lambda s: s.replace("busy_power_w = 3.5", 'busy_power_w = "hot"', 1), "processors.cpu.busy_power_w", "number"),
    (lambda s: s.replace("busy_power_w = 3.5", "busy_power_w = nan", 1), "processors.cpu.busy_power_w", "finite"),
    (lambda s: s.replace("busy_power_w = 3.5\n", "", 1), "processors.cpu.busy_power_w", "missing"),
    (lambda s: s.replace("idle_power_w = 0.038", "idle_power_w = 0.038\nturbo = true", 1), "processors.cpu.turbo", "not a known field"),
    (lambda s: s.replace('"cpu/fp32" = 23.9', '"cpu/fp64" = 23.9', 1), "latency_ms.mnv1.cpu/fp64", "not a processor/precision"),
    (lambda s: s.replace('"local/dsp/int8",\n', '"local/npu/int8",\n', 1), "targets", "processor"),
    (lambda s: s.replace('kind = "phone"', 'kind = "watch"'), "kind", "phone, edge, cloud"),
    (lambda s: s.split("[latency_ms.lstm_nmt]")[0], "latency_ms.lstm_nmt", "missing"),
    (lambda s: re.sub(r'source = "TFL-BENCH Pixel 3 \(CPU.*\n', "", s, count=1), "latency_ms.mnv1.source", "missing"),
    (lambda s: s.replace('source = "TFL-BENCH Pixel 3 (CPU', 'sauce = "TFL-BENCH Pixel 3 (CPU', 1), "latency_ms.mnv1.sauce", "not a processor/precision unit"),
])
def test_malformed_profile_names_file_and_field(tmp_path, edit, field, problem):
    path = write(tmp_path, edit(MI8PRO))
    with pytest.raises(ConfigError) as e:
        config.load_device(path)
    message = str(e.value)
    assert path in message and f"'{field}'" in message and problem in message


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "name = \n")
    with pytest.raises(ConfigError, match=re.escape(path) + ".*not valid TOML"):
        config.load_device(path)


def test_a_user_profile_file_drives_the_env(tmp_path):
    slower = MI8PRO.replace('"gpu/fp16" = 6.45', '"gpu/fp16" = 64.5')
    path = write(tmp_path, slower)
    env = gym.make("AutoScale-v0", device=path, setting="static")
    env.reset(seed=0)
    assert env.unwrapped.backend.phone.latency_ms["mnv1"]["gpu/fp16"] == 64.5


def test_per_network_features_separate_every_network_with_distinct_layer_counts():
    import numpy as np

    from autoscale_env.world.observation import StateEncoder

    workloads = tuple(config.load_workloads().values())
    context = {f: np.zeros(len(workloads)) for f in ("co_cpu_pct", "co_mem_pct")}
    context.update({f: np.full(len(workloads), -50.0) for f in ("rssi_wifi_dbm", "rssi_p2p_dbm")})
    everyone = np.arange(len(workloads))
    fine = StateEncoder(config.load_features("per_network"), workloads).encode(everyone, **context)
    coarse = StateEncoder(config.load_features(), workloads).encode(everyone, **context)
    names = [w.name for w in workloads]
    counts = {w.name: (w.conv, w.fc, w.rc) for w in workloads}
    for a in range(len(workloads)):
        for b in range(a + 1, len(workloads)):
            # same state exactly when the layer counts are equal (only mnv2 and mnasnet)
            same = bool((fine[a] == fine[b]).all())
            assert same == (counts[names[a]] == counts[names[b]]), (names[a], names[b])
    aliased = [names.index(n) for n in ("mnv2", "rn50", "incv1")]  # one state in the paper's bins
    assert (coarse[aliased] == coarse[aliased[0]]).all()
    assert StateEncoder(config.load_features("per_network"), workloads).n_states == 4224


def test_unknown_features_name_lists_the_bundled_sets():
    with pytest.raises(config.UnknownNameError, match="per_network"):
        config.load_features("coarse")


def test_a_phone_profile_may_name_server_profiles_beside_it(tmp_path):
    edge = (config.DEVICES_DIR / "galaxy_tab_s6.toml").read_text()
    (tmp_path / "my_edge.toml").write_text(edge.replace('name = "galaxy_tab_s6"', 'name = "my_edge"'))
    path = write(tmp_path, MI8PRO.replace('edge = "galaxy_tab_s6"', 'edge = "my_edge.toml"'))
    assert config.load_device(path).edge == str(tmp_path / "my_edge.toml")
    missing = write(tmp_path, MI8PRO.replace('edge = "galaxy_tab_s6"', 'edge = "gone.toml"'))
    with pytest.raises(ConfigError, match=r"'edge'.*gone.toml.*not a readable edge profile"):
        config.load_device(missing)
