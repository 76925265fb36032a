"""The kmock command line and the README's promises about it."""

import pathlib
import re

from typer.testing import CliRunner

from kmock.cli import app

ROOT = pathlib.Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_readme_opens_with_the_two_setup_commands():
    """The README's first code block is the main job and the test command, in that order."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert block == [
        "python3 -m pip install -e '.[test]' && kmock demo",
        "python3 -m pip install -e '.[test]' && python3 -m pytest -n 2",
    ]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "pytest" in ci


def test_profiles_lists_the_builtin_profiles():
    result = runner.invoke(app, ["profiles"])
    assert result.exit_code == 0
    assert "linux-6.18" in result.output and "host" in result.output


def test_bench_rejects_an_unknown_suite():
    result = runner.invoke(app, ["bench", "nonsense"])
    assert result.exit_code != 0


def test_bench_core_quick_prints_a_table():
    result = runner.invoke(app, ["bench", "core", "--quick"])
    assert result.exit_code == 0, result.output
    assert "W1" in result.output and "W3" in result.output


def test_bench_says_whether_the_hot_modules_ran_compiled():
    from kmock import compiled

    result = runner.invoke(app, ["bench", "syscalls", "--quick"])
    assert result.exit_code == 0, result.output
    assert compiled.summary() in result.output
    assert "compiled modules:" in result.output
