"""The one command-line app: every command's help is generated, complete and shows defaults;
operating-system errors and Ctrl-C end in one line, not a traceback."""

from __future__ import annotations

import pytest
import typer

from agents.cli import app, main


def commands() -> dict:
    return typer.main.get_command(app).commands


def options(name: str) -> list:
    return [p for p in commands()[name].params if p.param_type_name == "option"]


def test_the_app_has_every_command_the_readme_shows():
    assert {"benchmark", "train", "evaluate", "drift", "record", "serve", "sweep", "provenance",
            "fit-bins", "fleet-benchmark", "validate", "sensitivity", "calibrate", "gap",
            "paper-table", "plot", "comparison-table", "regenerate-traces"} <= set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_help_names_each_option_and_shows_its_default(name, capsys):
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: autoscale {name} ") and "%%" not in text
    command = commands()[name]
    ctx = command.make_context(f"autoscale {name}", ["--help"], resilient_parsing=True)
    command.get_help(ctx)  # fills in the valid names on this command object, as main's did
    for param in command.params:
        if param.param_type_name != "option":
            continue
        opt = param.opts[0]
        assert opt in text, (name, opt)
        record = param.get_help_record(ctx)
        assert record is not None and record[1].strip(), (name, opt, "no help")
        help_text = " ".join(record[1].split())
        assert "{" not in help_text, (name, opt, help_text)  # valid names filled in
        if param.is_flag:
            continue
        assert "[default: " in help_text or "[required]" in help_text, (name, opt, help_text)


@pytest.mark.parametrize("name, option, default", [
    ("calibrate", "--bootstrap", "200"), ("calibrate", "--block", "10"), ("calibrate", "--seed", "0"),
    ("gap", "--train-steps", "20000"), ("gap", "--seeds", "3"),
    ("fleet-benchmark", "--rounds", "200"), ("fleet-benchmark", "--train-rounds", "20000"),
])
def test_the_defaults_once_missing_are_shown(name, option, default, capsys):
    assert main([name, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    after = text.split(f"{option} ", 1)[1]
    assert f"[default: {default}" in after.split(" --", 1)[0]


def test_defaults_written_in_the_app_match_the_library():
    from agents.experiments.fleet_benchmark import SIZES
    from autoscale_env.backends.live.wire import DEFAULT_MAX_BYTES
    from autoscale_env.traces.recorder import DEFAULT_BATCH_SIZE, DEFAULT_EPISODE_REQUESTS
    from autoscale_env.tools.validate import DEFAULT_MAX_LOG2_ERROR

    def default(name, opt):
        return next(p.default for p in options(name) if opt in p.opts)
    assert default("record", "--batch-size") == DEFAULT_BATCH_SIZE
    assert default("record", "--episode-requests") == DEFAULT_EPISODE_REQUESTS
    assert default("serve", "--max-bytes") == DEFAULT_MAX_BYTES
    assert default("validate", "--max-log2-error") == DEFAULT_MAX_LOG2_ERROR
    assert default("fleet-benchmark", "--sizes") == ",".join(map(str, SIZES))


def test_a_usage_error_exits_2(capsys):
    assert main(["benchmark", "--no-such-option"]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["train", "--hp", "alpha"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["benchmark", "--agents", "random", "--seeds", "1", "--eval-steps", "10", "--quiet"],
    ["train", "--agent", "random", "--steps", "1", "--eval-steps", "0", "--quiet"],
])
def test_out_under_a_regular_file_is_one_line_and_exit_1(tmp_path, capsys, argv):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([*argv, "--out", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(blocker) in err and "Not a directory" in err


@pytest.mark.parametrize("argv, function, says", [
    (["benchmark", "--agents", "random", "--quiet"], "agents.experiments.benchmark.run",
     "0 finished task(s) are saved in"),
    (["train", "--agent", "random", "--checkpoint-every", "0", "--quiet"],
     "agents.experiments.train.train", "no model was saved"),
])
def test_ctrl_c_inside_a_command_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, argv,
                                                          function, says):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(function, interrupted)
    assert main([*argv, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"autoscale {argv[0]}: interrupted; ") and says in err


def test_the_app_imports_without_the_numeric_stack():
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, agents.cli; print(sorted(m for m in ('numpy', 'gymnasium', "
            "'autoscale_env', 'torch', 'rich') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
