"""Shell completion, driven by a real bash running the script from ``completions/``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from si.cli.completion import SCRIPT_FILES, script
from tests.cli.conftest import REPO, RunSi
from tests.cli.hubproxy import HubUnderTest

BASH = shutil.which("bash")

needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH entry whose ``si`` runs this checkout, as an installed si would."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "si"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m si "$@"\n')
    wrapper.chmod(0o755)
    return folder


def complete(line: str, env: dict[str, str], bin_dir: Path) -> tuple[list[str], list[str], str]:
    """TAB at the end of ``line`` in bash: (candidates, compopt calls, stderr)."""
    words = shlex.split(line)
    if line.endswith(" "):
        words.append("")
    program = f"""
compopt() {{ local IFS=' '; printf '%s\\n' "$*" >> "$COMPOPT_LOG"; }}
source {shlex.quote(str(REPO / "completions" / "si.bash"))}
COMP_WORDS=({" ".join(shlex.quote(word) for word in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
_si_complete si {shlex.quote(words[-1])} {shlex.quote(words[-2] if len(words) > 1 else "")}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    log = bin_dir.parent / "compopt.log"
    log.write_text("")
    environment = dict(env, PATH=f"{bin_dir}:{env.get('PATH', os.defpath)}", COMPOPT_LOG=str(log))
    assert BASH is not None
    result = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program],
        capture_output=True,
        env=environment,
        timeout=30,
        check=True,
    )
    candidates = [word for word in result.stdout.decode().splitlines() if word]
    return candidates, log.read_text().splitlines(), result.stderr.decode()


def test_checked_in_scripts_are_the_generated_ones(run_si: RunSi) -> None:
    for shell, name in SCRIPT_FILES.items():
        assert (REPO / "completions" / name).read_text() == script(shell)
        assert run_si("completion", "show", shell).stdout.decode() == script(shell)


@needs_bash
def test_bash_script_is_valid_bash() -> None:
    assert BASH is not None
    subprocess.run([BASH, "-n", str(REPO / "completions" / "si.bash")], check=True, timeout=10)


@needs_bash
def test_commands_complete(si_env: dict[str, str], bin_dir: Path) -> None:
    candidates, _, _ = complete("si ", si_env, bin_dir)
    assert candidates[:4] == ["seq", "inst", "topic", "hub"]
    assert complete("si se", si_env, bin_dir)[0] == ["seq"]
    assert complete("si inst ev", si_env, bin_dir)[0] == ["event"]
    # An alias leads to its command's subcommands.
    assert "deploy" in complete("si sequence d", si_env, bin_dir)[0]


@needs_bash
def test_options_complete(si_env: dict[str, str], bin_dir: Path) -> None:
    candidates, _, _ = complete("si seq start - --con", si_env, bin_dir)
    assert candidates == ["--config-file", "--config-string"]
    assert complete("si topic get t --content-type text/", si_env, bin_dir)[0] == [
        "text/x-ndjson",
        "text/plain",
    ]


@needs_bash
def test_file_and_directory_arguments_go_to_bash(si_env: dict[str, str], bin_dir: Path) -> None:
    candidates, compopt, _ = complete("si seq send ", si_env, bin_dir)
    assert (candidates, compopt) == ([], ["-o default"])
    candidates, compopt, _ = complete("si seq pack ", si_env, bin_dir)
    assert (candidates, compopt) == ([], ["-o dirnames"])
    assert complete("si seq start - -f ", si_env, bin_dir)[1] == ["-o default"]


@needs_bash
def test_live_ids_from_the_hub(si_env: dict[str, str], bin_dir: Path, hub: HubUnderTest) -> None:
    sequence_id = hub.add_sequence()
    first, second = (f"1n5t-{letter * 4}".ljust(36, "0") for letter in "bc")
    hub.add_instance(sequence_id, instanceId=first)
    hub.add_instance(sequence_id, instanceId=second)
    assert complete("si seq start ", si_env, bin_dir)[0] == [sequence_id]
    assert complete("si inst output 1n5t-c", si_env, bin_dir)[0] == [second]
    assert complete("si inst kill ", si_env, bin_dir)[0] == [first, second]


@needs_bash
def test_hub_option_after_the_subcommand_is_used(
    si_env: dict[str, str], bin_dir: Path, hub: HubUnderTest
) -> None:
    sequence_id = hub.add_sequence()
    env = dict(si_env, SI_HUB="/nonexistent/hub.sock")
    assert complete(f"si seq info --hub {hub.address} ", env, bin_dir)[0] == [sequence_id]


@needs_bash
def test_no_hub_means_no_ids_quickly_and_silently(si_env: dict[str, str], bin_dir: Path) -> None:
    env = dict(si_env, SI_HUB="/nonexistent/hub.sock")
    began = time.monotonic()
    candidates, compopt, stderr = complete("si inst info ", env, bin_dir)
    assert (candidates, compopt, stderr) == ([], [], "")
    assert time.monotonic() - began < 5


def test_engine_never_prints_a_traceback(si_env: dict[str, str]) -> None:
    env = dict(si_env, _SI_COMPLETE="bash_complete", COMP_WORDS="si seq start '", COMP_CWORD="3")
    result = subprocess.run(
        [sys.executable, "-m", "si"], capture_output=True, env=env, timeout=30, check=False
    )
    assert b"Traceback" not in result.stderr


def test_install_and_uninstall_for_bash(run_si: RunSi, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = run_si("completion", "install", "bash", env=env)
    assert result.returncode == 0, result.stderr
    installed = tmp_path / "data" / "bash-completion" / "completions" / "si"
    assert installed.read_text() == script("bash")
    assert str(installed) in result.stderr.decode()
    assert run_si("completion", "uninstall", "bash", env=env).returncode == 0
    assert not installed.exists()


def test_install_for_fish_and_zsh(run_si: RunSi, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "ZDOTDIR": None}
    assert run_si("completion", "install", "fish", env=env).returncode == 0
    assert (tmp_path / "config" / "fish" / "completions" / "si.fish").read_text() == script("fish")
    assert run_si("completion", "install", "zsh", env=env).returncode == 0
    assert (tmp_path / ".zfunc" / "_si").read_text() == script("zsh")


FISH = shutil.which("fish")
ZSH = shutil.which("zsh")


@pytest.mark.skipif(FISH is None, reason="fish is not installed")
def test_fish_script_completes_commands_ids_and_choices(
    si_env: dict[str, str], bin_dir: Path, hub: HubUnderTest
) -> None:
    instance_id = "1n5t-dddd".ljust(36, "0")
    hub.add_instance(hub.add_sequence(name="counter"), instanceId=instance_id)
    script_path = REPO / "completions" / "si.fish"
    program = (
        f"source {shlex.quote(str(script_path))}; "
        "complete -C 'si se'; echo SPLIT; complete -C 'si inst kill '; echo SPLIT; "
        "complete -C 'si topic get t --content-type text/p'"
    )
    assert FISH is not None
    result = subprocess.run(
        [FISH, "--no-config", "-c", program],
        capture_output=True,
        env=dict(si_env, PATH=f"{bin_dir}:{si_env.get('PATH', os.defpath)}"),
        timeout=60,
        check=True,
    )
    commands, ids, choices = result.stdout.decode().split("SPLIT\n")
    assert commands.splitlines() == ["seq\tPack, send, start and manage sequences."]
    assert ids.splitlines() == [f"{instance_id}\tcounter running"]
    assert choices.splitlines() == ["text/plain"]


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed")
def test_zsh_script_hands_candidates_to_zsh(
    si_env: dict[str, str], bin_dir: Path, hub: HubUnderTest
) -> None:
    sequence_id = hub.add_sequence(name="counter")
    # zsh's completion builtins only work inside its line editor: stand-ins record the calls.
    program = f"""
compdef() {{ : }}
compadd() {{ print -r -- "compadd $*" }}
_describe() {{ print -r -- "describe ${{(P)3}}" }}
_files() {{ print files }}
_path_files() {{ print "dirs $*" }}
source {shlex.quote(str(REPO / "completions" / "_si"))}
words=(si se); CURRENT=2; _si
words=(si seq start ''); CURRENT=4; _si
words=(si seq send ''); CURRENT=4; _si
words=(si seq pack ''); CURRENT=4; _si
"""
    assert ZSH is not None
    result = subprocess.run(
        [ZSH, "-f", "-c", program],
        capture_output=True,
        env=dict(si_env, PATH=f"{bin_dir}:{si_env.get('PATH', os.defpath)}"),
        timeout=60,
        check=True,
    )
    assert result.stdout.decode().splitlines() == [
        "describe seq:Pack, send, start and manage sequences.",
        f"describe {sequence_id}:counter",
        "files",
        "dirs -/",
    ]
