"""JSON and CSV inputs go through one bounded reader (``world.files``): a FIFO or a device is
refused before it is opened (it would block or never end), a file over the size cap before it
is read, JSON nested past the depth cap before the parser recurses. And ``validate`` does not
pass a check that compared nothing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agents.baselines import FixedPolicyAgent
from agents.cli import main as cli_main
from agents.experiments.saved import describe
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import MAX_JSON_BYTES, load_csv_rows, load_json

MEASUREMENTS = Path(__file__).resolve().parents[2] / "autoscale_env/data/measurements"


def outcome_within(fn, timeout_s: float = 20.0):
    """``fn()``'s result or exception, or a failure if it has not returned in time (a hang)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert box, f"still reading after {timeout_s} s (a FIFO or an endless file was opened)"
    return box.get("error", box.get("value"))


@pytest.fixture
def fifo(tmp_path):
    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        return path
    return make


def test_a_baseline_model_that_is_a_fifo_is_refused_not_waited_on(fifo):
    path = fifo("fixed.json")
    for load in (lambda: FixedPolicyAgent.load(str(path), env=None), lambda: describe(path)):
        e = outcome_within(load)
        assert isinstance(e, ModelFileError) and "not a regular file" in str(e) and str(path) in str(e)


def test_an_sb3_description_that_is_a_fifo_is_refused(fifo, tmp_path):
    fifo("ppo.zip.meta.json")
    (tmp_path / "ppo.zip").write_bytes(b"PK")
    e = outcome_within(lambda: describe(tmp_path / "ppo.zip"))
    assert isinstance(e, ModelFileError) and "not a regular file" in str(e)


def test_a_model_file_that_is_dev_zero_is_refused_before_reading(tmp_path):
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    e = outcome_within(lambda: FixedPolicyAgent.load(str(link), env=None))
    assert isinstance(e, ModelFileError) and "not a regular file" in str(e)


def test_an_oversize_json_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ModelFileError, match=rf"exceeds the limit of {MAX_JSON_BYTES} bytes"):
        FixedPolicyAgent.load(str(path), env=None)


def test_json_nested_100000_deep_is_refused_before_the_parser_recurses(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match=r"nested 100000 levels deep, over the limit of 64"):
        FixedPolicyAgent.load(str(path), env=None)
    with pytest.raises(ModelFileError, match="nested 100000 levels deep"):
        describe(path)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"agent": "' + "[" * 1000 + '", "x": [[1]]}')
    assert load_json(path, ValueError)["x"] == [[1]]


def test_csv_rows_are_read_within_a_row_cap(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "1,2\n" * 11)
    assert len(load_csv_rows(path, ValueError)) == 11
    with pytest.raises(ValueError, match="11 rows exceeds the limit of 10 rows"):
        load_csv_rows(path, ValueError, max_rows=10)


def test_validate_refuses_a_measurements_fifo(fifo, capsys):
    path = fifo("m.csv")
    code = outcome_within(lambda: cli_main(["validate", "--measurements", str(path)]))
    assert code == 2 and "not a regular file" in capsys.readouterr().err


def test_validate_fails_a_header_only_file_that_compares_nothing(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    header = (MEASUREMENTS / "slim_pretrained.csv").read_text().splitlines()[:4]
    path.write_text("\n".join(header) + "\n")
    assert cli_main(["validate", "--measurements", str(path)]) == 2
    assert "no measurement compared" in capsys.readouterr().err


def test_validate_fails_a_profile_that_no_row_names(tmp_path, capsys):
    profile = tmp_path / "p.toml"
    profile.write_text("")
    assert cli_main(["validate", "--profile", f"nosuch={profile}"]) == 2
    err = capsys.readouterr().err
    assert "--profile nosuch" in err and "no measurement row names device 'nosuch'" in err
