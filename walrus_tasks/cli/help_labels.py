"""Help screens without Python type labels: ``--token TOKEN`` rather than ``--token <str>``.

Typer labels every parameter with its Python type (``<str>``, ``<bool>``, ``<list[str]>``),
which tells a user little: a flag takes no value, so it gets no label; an option taking a
string or a number is labelled with its name (``--sender SENDER``, ``--limit LIMIT``); an
argument's name is in the help already. Choices (``<enqueue|reject|interrupt>``) and paths
keep their label.
Every ``walrus`` command and group is built from the classes here: :class:`Typer` makes them
the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_NOISE = re.compile(r"<(str|bool|int|float|list\[(str|int)\])>(\.\.\.)?")
"""The labels replaced: a string, a flag, a number, a repeatable string or number."""


def _label(label: str | None) -> str:
    return "" if label is None or _NOISE.fullmatch(label) else label


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str:
        return _label(super().display_type_rich(ctx))


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str:
        label = _label(super().display_type_rich(ctx))
        if label or self.is_flag or self.count:
            return label
        return (self.name or "").upper()


def _plain(params: Iterable[object]) -> None:
    """Give Typer's parameters the classes above (Typer builds them itself, so: by class)."""
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option


class _PlainHelp:
    """What :class:`Command` and :class:`Group` add to Typer's: parameters without type labels.

    A mixin, so one body serves both (Typer's command and group share no class of its own).
    """

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        """The ``--help`` option, made lazily by Click, with the plain class too."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _plain([option])
        return option


class Command(_PlainHelp, TyperCommand):
    """A command whose help shows no type labels (its ``--help`` option's neither)."""


class Group(_PlainHelp, TyperGroup):
    """A group (``walrus``, ``walrus cron``…) whose help shows no type labels."""


class Typer(typer.Typer):
    """``typer.Typer`` whose groups and commands are :class:`Group` and :class:`Command`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Any], Any]:
        """Register a command, a :class:`Command` unless ``cls`` says otherwise."""
        return super().command(name, cls=cls or Command, **kwargs)
