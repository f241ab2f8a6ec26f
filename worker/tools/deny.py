"""``[bash] deny`` rules, matched against the parsed command line as well as its text.

Every rule refuses a command line that contains it as a substring. A rule that reads as a
command (a program name, then arguments: ``rm -rf``, ``git push --force``, ``sudo``) also
refuses every simple command of the line that runs that program with those arguments, however
it is written: short flags in any grouping or order (``rm -r -f``, ``rm -fr``), a path to the
program (``/bin/rm``), quotes, after ``;``, ``&&``, ``||``, ``|``, ``&``, inside ``$(...)`` or
backticks, and behind ``sudo``, ``env``, ``xargs`` and similar wrappers. This is a seat-belt
against a model's mistakes, not a security boundary: the sandbox is (see ``sandbox.py``).
"""

from __future__ import annotations

import re
import shlex

SEPARATORS = frozenset({";", "&&", "||", "|", "&", "|&", ";;", "(", ")", "{", "}", "!"})
WRAPPERS = frozenset(
    {"sudo", "doas", "env", "nice", "nohup", "time", "command", "exec", "builtin", "xargs",
     "stdbuf", "timeout", "setsid", "chroot", "unbuffer", "ionice", "taskset"}
)  # fmt: skip
"""Programs that run the program named after their own options."""
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_SHORT_FLAGS = re.compile(r"^-[A-Za-z0-9]+$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def as_command(rule: str) -> tuple[str, frozenset[str]] | None:
    """``(program, normalised arguments)`` when ``rule`` reads as a command, else None."""
    try:
        tokens = shlex.split(rule)
    except ValueError:
        return None
    if not tokens or not _NAME.fullmatch(tokens[0]) or tokens[0].startswith("-"):
        return None
    return tokens[0], normalise(tokens[1:])


def normalise(args: list[str]) -> frozenset[str]:
    """Arguments as a set, each short-flag group split into single flags (``-rf`` → -r, -f)."""
    out: set[str] = set()
    for a in args:
        if _SHORT_FLAGS.fullmatch(a):
            out.update(f"-{c}" for c in a[1:])
        else:
            out.add(a)
    return frozenset(out)


def simple_commands(line: str, depth: int = 0) -> list[list[str]]:
    """The simple commands of a shell line, as word lists (substitutions included)."""
    lexer = shlex.shlex(
        line.replace("`", " ; ").replace("\n", " ; "), posix=True, punctuation_chars=True
    )
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: bash refuses it too; the substring check still ran
        return []
    out: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token in SEPARATORS or set(token) <= set("();<>|&"):
            if current:
                out.append(current)
            current = []
            continue
        if "$(" in token and depth < 4:  # a substitution inside a word ("$(rm -rf x)")
            out += simple_commands(token.split("$(", 1)[1], depth + 1)
        current.append(token.removeprefix("$"))
    if current:
        out.append(current)
    return out


def programs(words: list[str]) -> list[tuple[str, list[str]]]:
    """Each program a simple command runs, with its arguments: the wrapped ones too."""
    out = []
    i = 0
    while i < len(words) and _ASSIGNMENT.match(words[i]):
        i += 1
    while i < len(words):
        name = words[i].rsplit("/", 1)[-1]
        out.append((name, words[i + 1 :]))
        if name not in WRAPPERS:
            break
        i += 1  # the wrapped program: the first word that is no option, assignment or number
        while i < len(words) and (
            words[i].startswith("-") or _ASSIGNMENT.match(words[i]) or words[i][0].isdigit()
        ):
            i += 1
    return out


def matching_rule(deny: list[str], line: str) -> str:
    """The first rule of ``deny`` that refuses ``line``; empty when none does."""
    commands = None
    for rule in deny:
        if not rule:
            continue
        if rule in line:
            return rule
        parsed = as_command(rule)
        if parsed is None:
            continue
        if commands is None:
            commands = [p for words in simple_commands(line) for p in programs(words)]
        program, wanted = parsed
        if any(name == program and wanted <= normalise(args) for name, args in commands):
            return rule
    return ""
