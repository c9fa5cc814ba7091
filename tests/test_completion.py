"""`agentdeck completion SHELL`: scripts generated from the real parser. bash completes for
real (the script sourced into bash, its function called as bash calls it); zsh and fish,
where installed, accept their scripts' syntax."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import ok, time_left

from app.cli import build_parser


def _bash_completes(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of `words` (the word being completed)."""
    array = " ".join(f"'{w}'" for w in ("agentdeck", *words))
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c",
         f'source "$1"; COMP_WORDS=({array}); COMP_CWORD={len(words)}; _shtab_agentdeck; '
         'printf "%s\\n" "${COMPREPLY[@]}"', "bash", str(script)],
        capture_output=True, text=True, timeout=time_left(),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.fixture
def bash_script(home: Path, tmp_path: Path) -> Path:
    script = tmp_path / "agentdeck.bash"
    script.write_text(ok(home, "completion", "bash"))
    return script


def test_bash_completes_commands_subcommands_options_and_choices(bash_script: Path) -> None:
    assert _bash_completes(bash_script, "ch") == ["changes"]
    assert "install" in _bash_completes(bash_script, "service", "in")
    assert {"--approvals", "--unit-dir", "--force"} <= set(_bash_completes(bash_script, "service", "install", "--"))
    assert sorted(_bash_completes(bash_script, "run", "--approvals", "")) == ["cli", "deny"]


def test_bash_offers_every_command_the_parser_has(bash_script: Path) -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    offered = set(_bash_completes(bash_script, ""))
    assert set(sub.choices) <= offered, set(sub.choices) - offered
    assert "completion" in offered


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_script_parses_in_its_shell(shell: str, home: Path, tmp_path: Path) -> None:
    script = tmp_path / f"agentdeck.{shell}"
    script.write_text(ok(home, "completion", shell))
    assert "changes" in script.read_text()
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    proc = subprocess.run([exe, "-n", str(script)], capture_output=True, text=True, timeout=time_left())
    assert proc.returncode == 0, proc.stderr
