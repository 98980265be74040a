"""``cianna-otf completion SHELL``: completion scripts generated from the real parser by shtab."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import cianna_otf_server.cli as cli

pytest.importorskip("shtab")

MODULE = "cianna_otf_server.cli.completion"


def test_the_command_is_registered():
    assert MODULE in cli.COMMAND_MODULES


def test_bash_script_knows_the_commands_and_options(capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert script.strip()
    assert "submit" in script and "--model" in script
    assert "completion" in script and "cianna-otf" in script
    assert "--phase" in script  # jobs' options too
    if shutil.which("bash"):
        checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_other_shells(capsys, shell):
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "submit" in script and "--model" in script


def test_unknown_shell_is_a_usage_error(capsys):
    assert cli.main(["completion", "fish"]) == 2
    assert "invalid choice" in capsys.readouterr().err
