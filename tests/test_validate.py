"""`autoscale validate`: the world against the bundled public measurements."""

from __future__ import annotations

import re

import pytest

from agents.cli import main as cli_main
from autoscale_env.world import config
from autoscale_env.tools.validate import MEASUREMENTS_DIR, compare, read_measurements


def main(argv):
    """``autoscale validate ARGV``."""
    return cli_main(["validate", *argv])


def test_bundled_measurements_pass_and_print_the_table(capsys):
    assert cli_main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "| device | quantity | unit | rows | median sim/measured |" in out
    for row in ("| mi8pro | latency_ms | cpu/fp32 |", "| (catalog) | accuracy | int8 |",
                "| mi8pro | power_w | base.wifi_active_w |"):
        assert row in out


def test_every_bundled_file_names_its_origin_version_and_table():
    files = sorted(MEASUREMENTS_DIR.glob("*.csv"))
    assert len(files) >= 4
    for f in files:
        meta, rows = read_measurements(f)
        assert meta["origin"] and meta["version"] and meta["table"] and rows


def test_bundled_rows_all_name_something_in_the_world():
    comparisons, _ = compare()
    compared = [c for c in comparisons if c.world is not None]
    assert len(compared) >= 40
    assert {c.m.quantity for c in compared} == {"latency_ms", "accuracy", "power_w", "latency_ratio"}


def test_a_ratio_row_compares_the_worlds_ratio_of_two_profiles(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("# origin: test\n# version: 1\n# table: t\n"
                 "quantity,device,network,unit,relation,value,published,measured_on,conditions\n"
                 "latency_ratio,galaxy_tab_s6/mi8pro,mnv1,cpu/fp32,=,0.5,x,x,y\n")
    (c,), _ = compare([f])
    tab = config.load_device("galaxy_tab_s6").latency_ms["mnv1"]["cpu/fp32"]
    mi8 = config.load_device("mi8pro").latency_ms["mnv1"]["cpu/fp32"]
    assert c.world == pytest.approx(tab / mi8)
    assert c.ratio == pytest.approx(tab / mi8 / 0.5)


def test_every_device_with_rows_gets_its_median_error_and_bias(capsys):
    from autoscale_env.tools.validate import summaries
    comparisons, _ = compare()
    by = {d.device: d for d in summaries(comparisons)}
    assert {"mi8pro", "galaxy_tab_s6", "galaxy_s10e", "moto_x_force"} <= set(by)
    for d in by.values():  # the bound: median <= 0.4, bias within a factor 1.25
        assert d.median_log2_error <= 0.4 and 1 / 1.25 <= d.bias <= 1.25, d
    assert main([]) == 0
    assert "| galaxy_s10e | 21 |" in capsys.readouterr().out


def test_a_device_biased_beyond_the_bound_fails_although_every_row_passes(tmp_path, capsys):
    path = _wrong_profile(tmp_path, factor=1.3)  # every mi8pro latency 1.3x: log2 0.38 per row
    files = [str(MEASUREMENTS_DIR / f) for f in ("tflite_hosted_models.csv",
                                                   "tflite_benchmarks_android.csv")]
    assert main([*(a for f in files for a in ("--measurements", f)), "--profile", f"mi8pro={path}"]) == 1
    err = capsys.readouterr().err
    assert "device mi8pro" in err and "geometric-mean bias" in err
    assert "break |log2(sim/measured)|" not in err  # no single row breaks the 0.5 bound


def _wrong_profile(tmp_path, factor=10.0):
    """mi8pro with every latency multiplied by ``factor``."""
    text = (config.DEVICES_DIR / "mi8pro.toml").read_text()
    in_latency = False
    out = []
    for line in text.splitlines():
        if line.startswith("["):
            in_latency = line.startswith("[latency_ms.")
        m = re.match(r'^("[a-z]+/[a-z0-9]+") = ([0-9.]+)$', line)
        if in_latency and m:
            line = f"{m.group(1)} = {float(m.group(2)) * factor!r}"
        out.append(line)
    path = tmp_path / "mi8pro_x10.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def test_latency_table_times_ten_fails_naming_file_and_rows(tmp_path, capsys):
    path = _wrong_profile(tmp_path)
    assert config.load_device(str(path)).latency_ms["mnv1"]["cpu/fp32"] == pytest.approx(239.0)
    assert main(["--profile", f"mi8pro={path}"]) == 1
    err = capsys.readouterr().err
    bench = str(MEASUREMENTS_DIR / "tflite_benchmarks_android.csv")
    # the six mi8pro rows of the benchmark file sit on lines 6-11; the tablet's rows still pass
    assert f"{bench}: rows 6, 7, 8, 9, 10, 11\n" in err
    assert "tflite_hosted_models.csv: rows 6," in err
    assert "sim 239 vs measured 23.9" in err
    # the tablet's own absolute rows still pass; its ratios to the (wrong) Mi 8 Pro do not
    assert "tflite_benchmarks_android.csv: rows 6, 7, 8, 9, 10, 11\n" in err
    assert "paddle_lite_benchmark.csv: rows" in err and "android_power_profiles" not in err
    assert "device mi8pro" in err and "median |log2(sim/measured)|" in err


def test_bound_is_a_parameter(tmp_path):
    path = _wrong_profile(tmp_path, factor=1.2)  # log2(1.2) = 0.26
    files = [str(MEASUREMENTS_DIR / f) for f in ("tflite_hosted_models.csv",
                                                   "tflite_benchmarks_android.csv")]
    args = [*(a for f in files for a in ("--measurements", f)), "--profile", f"mi8pro={path}"]
    assert main(args) == 0
    assert main(args + ["--max-log2-error", "0.2"]) == 1


def test_ceiling_rows_fail_only_above_the_ceiling(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("# origin: test\n# version: 1\n# table: t\n"
                 "quantity,device,network,unit,relation,value,published,measured_on,conditions\n"
                 "power_w,mi8pro,,processors.cpu.busy_power_w,<=,1.0,1 W,x,y\n"
                 "power_w,mi8pro,,processors.cpu.busy_power_w,<=,100.0,100 W,x,y\n")
    assert main(["--measurements", str(f)]) == 1  # 3.5 W above a 1 W ceiling: line 5 fails


@pytest.mark.parametrize("body, message", [
    ("latency_ms,mi8pro,nope,cpu/fp32,=,1,1 ms,x,y\n", "line 5: latency_ms of device 'mi8pro', network 'nope'"),
    ("latency_ms,mi8pro,mnv1,cpu/fp32,~,1,1 ms,x,y\n", "line 5: column 'relation' must be one of"),
    ("latency_ms,mi8pro,mnv1,cpu/fp32,=,-3,1 ms,x,y\n", "line 5: column 'value' must be a positive number"),
    ("speed,mi8pro,mnv1,cpu/fp32,=,1,1 ms,x,y\n", "line 5: column 'quantity' must be one of"),
])
def test_bad_rows_are_named(tmp_path, capsys, body, message):
    f = tmp_path / "m.csv"
    f.write_text("# origin: test\n# version: 1\n# table: t\n"
                 "quantity,device,network,unit,relation,value,published,measured_on,conditions\n" + body)
    assert main(["--measurements", str(f)]) == 2
    assert f"{f}: {message}" in capsys.readouterr().err


def test_a_file_without_its_origin_is_refused(tmp_path, capsys):
    f = tmp_path / "m.csv"
    f.write_text("# version: 1\n# table: t\n"
                 "quantity,device,network,unit,relation,value,published,measured_on,conditions\n")
    assert main(["--measurements", str(f)]) == 2
    assert "header must give '# origin: ...'" in capsys.readouterr().err
