"""Options with a fixed set of values, declared as choices from the library's own lists.

``--algorithm`` takes a name of the learner catalogue, ``--pruner`` one of ``PRUNERS``, ``--optimizer`` one
of ``OPTIMIZERS`` ... (:data:`CHOICES`). :func:`with_choices` gives such an option the annotation
``Literal[<the library's values>]`` when its command is built, so the parser rejects a bad value before any
work starts and ``--help`` lists the values. Reading those lists imports PyTorch, Optuna or MLflow, so
commands are built only when they run or show their own help (:class:`metaauto.cli.LazyGroup`): ``metaauto
--help`` imports none of them.

A rejected value is reported like every other bad input of the CLI (``error: <message>`` on stderr, exit
status 2), naming the known values: :class:`ChoiceCommand`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Optional, Sequence

import typer
from typer.core import TyperCommand


def _learners() -> list[str]:
    from metaauto.learners import LEARNERS

    return list(LEARNERS)


def _backbones() -> Sequence[str]:
    from metaauto.backbones import BACKBONES

    return BACKBONES


def _optimizers() -> Sequence[str]:
    from metaauto.engine.config import OPTIMIZERS

    return OPTIMIZERS


def _lr_schedules() -> Sequence[str]:
    from metaauto.engine.config import LR_SCHEDULES

    return LR_SCHEDULES


def _precisions() -> Sequence[str]:
    from metaauto.engine.device import AMP_CHOICES

    return AMP_CHOICES


def _pruners() -> Sequence[str]:
    from metaauto.search import PRUNERS

    return PRUNERS


def _splits() -> Sequence[str]:
    from metaauto.tasks.base import SPLITS

    return tuple(SPLITS)


def _paired_tests() -> Sequence[str]:
    from metaauto.tracking.promotion import TESTS

    return TESTS


def _worker_kinds() -> Sequence[str]:
    from metaauto.platform.workers import KINDS

    return KINDS


#: option (parameter) name -> (the library's values, what one value is called in an error message)
CHOICES: dict[str, tuple[Callable[[], Sequence[str]], str]] = {
    "algorithm": (_learners, "algorithm"),
    "backbone": (_backbones, "backbone"),
    "optimizer": (_optimizers, "optimizer"),
    "lr_schedule": (_lr_schedules, "lr schedule"),
    "amp": (_precisions, "precision"),
    "pruner": (_pruners, "pruner"),
    "split": (_splits, "split"),
    "test": (_paired_tests, "test"),
    "kind": (_worker_kinds, "worker kind"),
}


def with_choices(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with each option named in :data:`CHOICES` annotated ``Literal[values]`` (``Optional`` kept)."""
    hints = dict(command.__annotations__)
    for name in hints.keys() & CHOICES.keys():
        values = Literal[tuple(CHOICES[name][0]())]  # type: ignore[valid-type]
        hints[name] = Optional[values] if "Optional" in str(hints[name]) else values

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    wrapper.__annotations__ = hints
    return wrapper


def _given(param: Any, args: Sequence[str]) -> str:
    """The value ``args`` gave option ``param`` (the last one, as the parser keeps)."""
    value = "?"
    for i, arg in enumerate(args):
        for opt in param.opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(f"{opt}="):
                value = arg.partition("=")[2]
    return value


class ChoiceCommand(TyperCommand):
    """Reports a value outside an option's choices as ``error: unknown <noun> 'x'; known <noun>s: ...``, exit 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:
            if exc.param is None or exc.param.name not in CHOICES:
                raise
            source, noun = CHOICES[exc.param.name]
            typer.echo(f"error: unknown {noun} {_given(exc.param, given)!r}; known {noun}s: {', '.join(source())}", err=True)
            raise typer.Exit(code=2) from None
