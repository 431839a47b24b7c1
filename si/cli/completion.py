"""``si completion``: shell completion for bash, zsh and fish.

The scripts (``si completion show SHELL``, also checked into the repository's ``completions/``)
call ``si`` back on every TAB with ``_SI_COMPLETE=<shell>_complete`` and the words typed so
far; :func:`complete` answers with click's completion protocol. It completes commands (and
their aliases' targets), options, file and directory arguments (handed to the shell's own
file completion), and the running hub's sequence, instance and topic ids. Asking the hub is
bounded by a short connect timeout, and any failure means "no suggestions", never an error on
the user's terminal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from si.cli import render
from si.cli.common import (
    COMPLETE_VAR,
    GLOBAL_OPTIONS,
    AliasGroup,
    command,
    group,
    hoist_global_options,
)

app: AliasGroup = group("completion", "Shell completion for bash, zsh and fish.")

SHELLS = ("bash", "zsh", "fish")
PROGRAM = "si"


# The scripts speak click's completion protocol: the shell function runs ``si`` with
# _SI_COMPLETE=<shell>_complete, COMP_WORDS (the line) and COMP_CWORD (the word's index for
# bash and zsh, the word itself for fish); si answers one "kind,value" line per candidate
# (bash) or kind/value/help line triples (zsh, fish). A kind of "file" or "dir" hands the word
# to the shell's own path completion.
_BASH = r"""# bash completion for si; written by 'si completion show bash'.
_si_complete() {
    local IFS=$'\n' line kind
    local -a answer
    COMPREPLY=()
    answer=($(COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD="$COMP_CWORD" \
        _SI_COMPLETE=bash_complete "$1" 2>/dev/null))
    for line in "${answer[@]}"; do
        kind=${line%%,*}
        case $kind in
            file) compopt -o default; COMPREPLY=(); return 0 ;;
            dir) compopt -o dirnames; COMPREPLY=(); return 0 ;;
            plain) COMPREPLY+=("${line#*,}") ;;
        esac
    done
    return 0
}
complete -o nosort -F _si_complete si 2>/dev/null || complete -F _si_complete si
"""

_ZSH = r"""#compdef si
# zsh completion for si; written by 'si completion show zsh'.
_si() {
    local -a answer described plain
    local kind value help
    answer=("${(@f)$(COMP_WORDS="${words[*]}" COMP_CWORD=$((CURRENT - 1)) \
        _SI_COMPLETE=zsh_complete si 2>/dev/null)}")
    for kind value help in "${answer[@]}"; do
        case $kind in
            file) _files; return ;;
            dir) _path_files -/; return ;;
            plain)
                if [[ $help == _ ]]; then plain+=("$value"); else described+=("$value:$help"); fi ;;
        esac
    done
    (( ${#described} )) && _describe -V unsorted described -U
    (( ${#plain} )) && compadd -U -V unsorted -a plain
    return 0
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _si "$@"; else compdef _si si; fi
"""

_FISH = r"""# fish completion for si; written by 'si completion show fish'.
function __si_complete
    set -l answer (env _SI_COMPLETE=fish_complete COMP_WORDS=(commandline -cp) \
        COMP_CWORD=(commandline -t) si 2>/dev/null)
    for i in (seq 1 3 (count $answer))
        set -l kind $answer[$i]
        set -l value $answer[(math $i + 1)]
        set -l help $answer[(math $i + 2)]
        switch $kind
            case file
                __fish_complete_path (commandline -t)
            case dir
                __fish_complete_directories (commandline -t)
            case plain
                if test "$help" = _
                    echo $value
                else
                    printf '%s\t%s\n' $value $help
                end
        end
    end
end
complete --no-files --command si --arguments '(__si_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}
# The file each script is kept in under the repository's completions/ (and installed as).
SCRIPT_FILES = {"bash": "si.bash", "zsh": "_si", "fish": "si.fish"}


def script(shell: str) -> str:
    """The completion script for ``shell``, as ``completions/`` holds it."""
    return SCRIPTS[shell]


def install_path(shell: str) -> Path:
    """Where ``install`` puts the script: a directory each shell loads completions from."""
    home = Path.home()
    if shell == "bash":
        data = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
        return Path(data) / "bash-completion" / "completions" / PROGRAM
    if shell == "fish":
        config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(config) / "fish" / "completions" / f"{PROGRAM}.fish"
    return Path(os.environ.get("ZDOTDIR") or home) / ".zfunc" / f"_{PROGRAM}"


def _default_shell() -> str:
    name = Path(os.environ.get("SHELL", "bash")).name
    return name if name in SHELLS else "bash"


shell_argument = click.argument(
    "shell", type=click.Choice(SHELLS), required=False, metavar="[bash|zsh|fish]"
)


@command(app, "show", example=["si completion show bash > ~/.si-completion.bash"])
@shell_argument
def show(shell: str | None) -> None:
    """Print the completion script (default: for $SHELL)."""
    render.write_text(script(shell or _default_shell()))


@command(app, "install", example="si completion install bash")
@shell_argument
def install(shell: str | None) -> None:
    """Install the completion script for your user (default: for $SHELL)."""
    chosen = shell or _default_shell()
    target = install_path(chosen)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script(chosen), encoding="utf-8")
    render.message(f"si completion for {chosen} installed in {target}")
    if chosen == "bash":
        render.message("It loads in new shells (with bash-completion); now: source " + str(target))
    elif chosen == "zsh":
        render.message(
            f"Add to ~/.zshrc, before compinit: fpath=({target.parent} $fpath); then restart zsh"
        )
    else:
        render.message("It loads in new fish shells.")


@command(app, "uninstall", example="si completion uninstall bash")
@shell_argument
def uninstall(shell: str | None) -> None:
    """Remove the completion script installed by 'si completion install'."""
    chosen = shell or _default_shell()
    target = install_path(chosen)
    try:
        target.unlink()
    except FileNotFoundError:
        render.message(f"no si completion for {chosen} at {target}")
        return
    render.message(f"si completion for {chosen} removed from {target}")


def _hoisted(root: click.Command, args: list[str]) -> list[str]:
    """The typed words with global options moved in front, as :func:`si.cli.app.run` does.

    A global option still waiting for its value stays last, so its value gets completed.
    """
    trailing: list[str] = []
    if args and args[-1] in GLOBAL_OPTIONS:
        trailing = [args[-1]]
        args = args[:-1]
    try:
        return hoist_global_options(root, args) + trailing
    except Exception:
        return args + trailing


def complete(cli: click.Command, instruction: str) -> int:
    """Answer one completion request (``instruction`` like ``bash_complete``); never raises."""
    from click import shell_completion

    try:
        for shell in SHELLS:
            base = shell_completion.get_completion_class(shell)
            if base is None or getattr(base, "hoists", False):
                continue

            class Hoisting(base):  # type: ignore[valid-type,misc]
                hoists = True

                def get_completion_args(self) -> tuple[list[str], str]:
                    args, incomplete = super().get_completion_args()
                    return _hoisted(cli, args), incomplete

            shell_completion.add_completion_class(Hoisting, shell)
        return shell_completion.shell_complete(cli, {}, PROGRAM, COMPLETE_VAR, instruction)
    except Exception:
        if os.environ.get("SI_DEBUG"):
            raise
        return 1
    finally:
        sys.stdout.flush()
