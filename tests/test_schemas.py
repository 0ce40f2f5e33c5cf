"""The data-file schemas (autoscale_env/world/schemas.py): every problem names the file, the field
path and the valid range; profile numbers are bounded so that no finite value breaks the reward."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscale_env.world import config, schemas
from autoscale_env.world.errors import ConfigError

MI8PRO = (config.DEVICES_DIR / "mi8pro.toml").read_text()
#: links.toml without its per-field provenance (the tests below add their own)
LINKS = re.sub(r"^(sources|ranges)\..*\n", "", (config.DATA_DIR / "links.toml").read_text(),
               flags=re.M)


def load_profile(text: str, directory: Path) -> str:
    path = directory / "phone.toml"
    path.write_text(text)
    config.load_device.cache_clear()
    return str(path)


def refused(model: type, text: str, tmp_path: Path) -> str:
    """The message of the ConfigError ``model`` raises for the TOML ``text``."""
    import tomllib
    path = tmp_path / "data.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        schemas.validate(model, tomllib.loads(text), path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


# ---- the wording of the errors -------------------------------------------------------------------


def test_a_number_out_of_range_names_the_field_the_whole_range_and_the_value(tmp_path):
    path = load_profile(MI8PRO.replace("cpu_interference = 1.5", "cpu_interference = 11.0", 1),
                        tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load_device(path)
    assert str(info.value) == (f"{path}: field 'processors.cpu.cpu_interference' must be >= 0 "
                               f"and <= 10 (x co-running load), got 11.0")


def test_every_problem_of_a_file_is_listed_one_per_line(tmp_path):
    text = (MI8PRO.replace("busy_power_w = 3.5", "busy_power_w = 300.0", 1)
            .replace("wifi_active_w = 0.70", 'wifi_active_w = "high"', 1)
            .replace('soc = "', 'socket = "x"\nsoc = "', 1))
    path = load_profile(text, tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load_device(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"{path}: field '") for line in lines), lines
    named = {re.search(r"field '([^']+)'", line).group(1) for line in lines}
    assert named == {"processors.cpu.busy_power_w", "base.wifi_active_w", "socket"}


def test_an_unknown_field_lists_the_known_ones(tmp_path):
    message = refused(schemas.RewardsFile, '[presets.x]\ndescription = "d"\nviolation_penalty = 1\n'
                      'latency_weight = 1\naccuracy_weight = 1\nlatency_wieght = 2\n', tmp_path)
    assert "field 'presets.x.latency_wieght' is not a known field here (known: accuracy_weight, " \
           "description, latency_weight, ranges, source, sources, violation_penalty)" in message


@pytest.mark.parametrize("value, problem", [
    ("true", "must be an integer (>= 0 and <= 100000 layers), got True"),
    ("2.5", "must be an integer (>= 0 and <= 100000 layers), got 2.5"),
    ("-1", "must be >= 0 and <= 100000 layers, got -1"),
])
def test_layer_counts_are_whole_numbers_in_range(tmp_path, value, problem):
    text = (config.DATA_DIR / "workloads.toml").read_text().replace("conv = 27", f"conv = {value}", 1)
    message = refused(schemas.WorkloadsFile, text, tmp_path)
    assert f"field 'networks.mnv1.conv' {problem}" in message


def test_list_lengths_that_belong_together_are_checked(tmp_path):
    text = LINKS.replace("tx_power_multiplier = [1.0, 1.0, 1.0, 1.0]",
                         "tx_power_multiplier = [1.0, 1.0]", 1)
    message = refused(schemas.LinksFile, text, tmp_path)
    assert ("field 'wifi.tx_power_multiplier' must have 4 items (len(power_band_edges_dbm) + 1), "
            "got 2") in message


def test_an_item_of_a_list_is_named_by_its_index(tmp_path):
    text = re.sub(r"mcs_min_rssi_dbm = \[[-0-9.]+,", "mcs_min_rssi_dbm = [-182.0,", LINKS, count=1)
    assert text != LINKS
    message = refused(schemas.LinksFile, text, tmp_path)
    assert "field 'wifi.mcs_min_rssi_dbm' item 0: must be >= -150 and <= 0 dBm, got -182.0" in message


def test_settings_name_only_apps_they_define(tmp_path):
    text = (config.DATA_DIR / "settings.toml").read_text().replace(
        'apps = ["none", "music"', 'apps = ["none", "radio"', 1)
    assert text != (config.DATA_DIR / "settings.toml").read_text()
    message = refused(schemas.SettingsFile, text, tmp_path)
    assert "field 'static.apps' names 'radio'; valid: none, music, browser, browser_music" in message


# ---- provenance fields: accepted on every table, checked against its fields ------------------------


@pytest.mark.parametrize("lines", [
    'sources.rtt_ms = "estimate: a new reason"\nranges.rtt_ms = [1.0, 20.0]',
    'ranges.power_band_edges_dbm = [[-65.0, -55.0], [-75.0, -65.0], [-84.0, -76.0]]',
])
def test_provenance_fields_are_accepted_on_any_table(tmp_path, lines):
    import tomllib
    text = LINKS.replace("[p2p]\n", f"[p2p]\n{lines}\n", 1)
    schemas.validate(schemas.LinksFile, tomllib.loads(text), tmp_path / "links.toml")
    rewards = (config.DATA_DIR / "rewards.toml").read_text().replace(
        "violation_penalty = 10.0", 'violation_penalty = 10.0\nsources.violation_penalty = "x"', 1)
    schemas.validate(schemas.RewardsFile, tomllib.loads(rewards), tmp_path / "rewards.toml")


@pytest.mark.parametrize("line, field, problem", [
    ("ranges.nope = [1.0, 2.0]", "p2p.ranges.nope", "names no numeric field"),
    ("ranges.standard = [1.0, 2.0]", "p2p.ranges.standard", "names no numeric field"),
    ("ranges.rtt_ms = [3.0, 1.0]", "p2p.ranges.rtt_ms", "must be [lo, hi] with lo <= hi"),
    ("ranges.tx_power_multiplier = [0.5, 1.5]", "p2p.ranges.tx_power_multiplier", "must be 4 pairs"),
    ("sources.ranges = \"x\"", "p2p.sources.ranges", "names no numeric field"),
])
def test_provenance_fields_must_name_fields_of_their_table(tmp_path, line, field, problem):
    message = refused(schemas.LinksFile, LINKS.replace("[p2p]\n", f"[p2p]\n{line}\n", 1), tmp_path)
    assert f"field '{field}' {problem}" in message


# ---- physical plausibility: no finite profile breaks the maths --------------------------------------

#: (first line of mi8pro.toml setting it, its key, the field path an error names)
PROFILE_NUMBERS = {
    "latency gpu/fp16": (r'^"gpu/fp16" = .*$', '"gpu/fp16"', "latency_ms.mnv1.gpu/fp16"),
    "latency cpu/fp32": (r'^"cpu/fp32" = .*$', '"cpu/fp32"', "latency_ms.mnv1.cpu/fp32"),
    "busy power": (r"^busy_power_w = .*$", "busy_power_w", "processors.cpu.busy_power_w"),
    "idle power": (r"^idle_power_w = .*$", "idle_power_w", "processors.cpu.idle_power_w"),
    "cpu interference": (r"^cpu_interference = .*$", "cpu_interference",
                         "processors.cpu.cpu_interference"),
    "memory interference": (r"^mem_interference = .*$", "mem_interference",
                            "processors.cpu.mem_interference"),
    "base power": (r"^power_w = .*$", "power_w", "base.power_w"),
    "radio power": (r"^wifi_active_w = .*$", "wifi_active_w", "base.wifi_active_w"),
    "fallback slowdown": (r"^fallback_slowdown = .*$", "fallback_slowdown", "fallback_slowdown"),
}
EXTREMES = [1e308, -1e308, 1e-308, 5e-324, 1e300, -1e300, 0.0, -0.0, 1e-3, 3.6e6, 100.0, 10.0,
            1e6, 1e-6]


@settings(max_examples=40, deadline=None)
@given(number=st.sampled_from(sorted(PROFILE_NUMBERS)),
       value=st.one_of(st.sampled_from(EXTREMES),
                       st.floats(allow_nan=False, allow_infinity=False)))
def test_an_extreme_finite_profile_value_is_refused_by_name_or_gives_finite_outcomes(number, value):
    line, key, field = PROFILE_NUMBERS[number]
    text, edits = re.subn(line, f"{key} = {value!r}", MI8PRO, count=1, flags=re.M)
    assert edits == 1
    with tempfile.TemporaryDirectory() as directory:
        path = load_profile(text, Path(directory))
        try:
            env = gym.make("AutoScale-v0", device=path, setting="dynamic")
        except ConfigError as e:
            assert f"'{field}'" in str(e) and path in str(e), str(e)
            return
        env.reset(seed=0)
        for action in range(env.action_space.n):
            _, reward, _, _, info = env.step(action)
            assert math.isfinite(reward), (field, value, action, reward)
            assert np.isfinite([info["latency_ms"], info["energy_mj"]]).all(), (field, value, info)
        env.close()


def test_the_bounds_of_each_bundled_number_hold_the_bundled_data():
    """Every bundled profile loads under the bounds (a bound tighter than real data would refuse
    a shipped file; the loaders raise if it did)."""
    for path in sorted(config.DEVICES_DIR.glob("*.toml")):
        assert config.load_device(str(path)).latency_ms


def test_a_huge_wrong_value_is_quoted_cut_short(tmp_path):
    text = MI8PRO.replace('name = "mi8pro"', "name = [" + ", ".join(["1"] * 20_000) + "]", 1)
    path = load_profile(text, tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load_device(path)
    message = str(info.value)
    assert "field 'name' must be a string, got [1, 1, 1" in message and message.endswith("...")
    assert len(message) < len(path) + 200
