"""``completion``: shell completion scripts for bash, zsh and fish, made from the parser.

The scripts are generated from the same argparse parser the command uses, so a new command or
option completes without editing them. Account names complete from ``mailsync accounts
--names`` at the moment you press Tab.
"""

from __future__ import annotations

import argparse
import shlex

from mailsync._cli._common import Commands, Output

__all__ = ["register"]

# Options whose value is a file or directory, and options with fixed values.
_PATH_OPTIONS = ("--config", "--ca-file", "--attach", "--save", "--attachments", "--state")
_CHOICES = {"--tls": ("ssl", "starttls", "none")}


def register(commands: Commands) -> None:
    """Add ``completion``."""
    parser = commands.add_parser(
        "completion",
        help="Print a shell completion script (bash, zsh or fish).",
        description="Print a shell completion script (bash, zsh or fish).",
        epilog="\n".join(
            [
                "examples:",
                '  eval "$(mailsync completion bash)"          in ~/.bashrc',
                '  eval "$(mailsync completion zsh)"           in ~/.zshrc',
                "  mailsync completion fish > ~/.config/fish/completions/mailsync.fish",
            ]
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=["bash", "zsh", "fish"])
    parser.set_defaults(run=run_completion)


def run_completion(args: argparse.Namespace, out: Output) -> int:
    """``mailsync completion SHELL``."""
    commands = _commands(args.parser)
    script = {"bash": _bash, "zsh": _zsh, "fish": _fish}[args.shell](commands)
    out.line(script.rstrip("\n"))
    return 0


def _commands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, list[str]]]:
    """Command -> (its help, its option strings)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
            found[name] = (helps.get(name, ""), options)
    return found


def _bash(commands: dict[str, tuple[str, list[str]]]) -> str:
    cases = "\n".join(
        f"        {name}) opts={shlex.quote(' '.join(options))} ;;"
        for name, (_, options) in commands.items()
    )
    choices = "\n".join(
        f'        {option}) COMPREPLY=($(compgen -W {shlex.quote(" ".join(values))} -- "$cur"));'
        " return ;;"
        for option, values in _CHOICES.items()
    )
    return f"""\
# mailsync completion for bash: eval "$(mailsync completion bash)"
_mailsync() {{
    local cur prev cmd opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd="${{COMP_WORDS[1]}}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W {shlex.quote(" ".join(commands))} -- "$cur"))
        return
    fi
    case "$prev" in
        {"|".join(_PATH_OPTIONS)}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
{choices}
    esac
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(mailsync accounts --names 2>/dev/null)" -- "$cur"))
    fi
}}
complete -o default -F _mailsync mailsync
"""


def _zsh(commands: dict[str, tuple[str, list[str]]]) -> str:
    return (
        '# mailsync completion for zsh: eval "$(mailsync completion zsh)"\n'
        "autoload -U +X bashcompinit && bashcompinit\n" + _bash(commands)
    )


def _fish(commands: dict[str, tuple[str, list[str]]]) -> str:
    lines = ["# mailsync completion for fish: mailsync completion fish | source"]
    for name, (summary, options) in commands.items():
        lines.append(
            f"complete -c mailsync -n '__fish_use_subcommand' -f -a {name} "
            f"-d {shlex.quote(summary)}"
        )
        for option in options:
            values = _CHOICES.get(option)
            extra = f" -x -a {shlex.quote(' '.join(values))}" if values else ""
            extra += " -r -F" if option in _PATH_OPTIONS else ""
            lines.append(
                f"complete -c mailsync -n '__fish_seen_subcommand_from {name}' "
                f"-l {option[2:]}{extra}"
            )
    lines.append(
        "complete -c mailsync -n 'not __fish_use_subcommand; and not __fish_seen_subcommand_from"
        " completion' -f -a '(mailsync accounts --names 2>/dev/null)'"
    )
    return "\n".join(lines) + "\n"
