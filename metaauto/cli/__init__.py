"""The ``metaauto`` command line: one typer app, one module per command group.

* :mod:`~metaauto.cli.train`: ``train``, ``evaluate``; :mod:`~metaauto.cli.search`: ``search``;
* :mod:`~metaauto.cli.models`: ``promote``, ``rollback`` (registered models);
* :mod:`~metaauto.cli.pipeline`: ``pipeline`` (the main job, in this process);
* :mod:`~metaauto.cli.servers`: ``server``, ``serve``, ``dashboard``; :mod:`~metaauto.cli.stack`: ``stack``;
* :mod:`~metaauto.cli.data`: ``data fetch`` (the public datasets).

Each subcommand is a thin layer over the library: it builds objects from options, calls library
functions, and reports. Conventions every subcommand follows:

* ``--json`` prints exactly one JSON document on stdout; progress bars and warnings go to stderr, so
  ``metaauto train ... --json | jq`` works.
* Bad input (a :class:`~metaauto.errors.MetaautoError`: unknown collection, missing data, impossible
  hyperparameters, mismatched checkpoint) prints ``error: <message>`` on stderr and exits with status 2,
  without a traceback (:mod:`~metaauto.cli.errors`); anything else is a bug and keeps its traceback.
  Options with a fixed set of values are checked by the parser against the library's own lists
  (:mod:`~metaauto.cli.common`), also with status 2.
* Options that name data (``--data-dir``) fall back to ``METAAUTO_DATA_DIR``; outputs default to the
  project home (``METAAUTO_HOME``), never to a path that depends on the current directory.
* ``metaauto --help`` is quick: command modules import PyTorch, MLflow and Prefect inside the commands, and a
  command is built (its choices read from the library) only when it runs or shows its own help
  (:class:`LazyGroup`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Optional

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from metaauto import __version__
from metaauto.cli.choices import ChoiceCommand, with_choices
from metaauto.cli.data import data_app
from metaauto.cli.errors import friendly_errors
from metaauto.cli.servers import server_app
from metaauto.cli.stack import stack_app

#: command name -> "module:function" under metaauto.cli, in the order ``--help`` lists them
COMMANDS: dict[str, str] = {
    "train": "train:train",
    "evaluate": "train:evaluate",
    "search": "search:search",
    "dashboard": "servers:dashboard",
    "rollback": "models:rollback",
    "promote": "models:promote",
    "pipeline": "pipeline:pipeline",
    "serve": "servers:serve",
}


def _function(name: str) -> Callable[..., Any]:
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(f"metaauto.cli.{module}"), function)


def build_command(name: str) -> TyperCommand:
    """The click command ``metaauto <name>`` runs: options with choices, library errors reported (exit 2)."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, cls=ChoiceCommand)(friendly_errors(with_choices(_function(name))))
    return typer.main.get_command(single)


class LazyCommands(dict):
    """The group's commands: the sub-groups given, and :data:`COMMANDS`, built on first access."""

    def __init__(self, groups: dict[str, Any]) -> None:
        super().__init__(groups)
        self.order = [*COMMANDS, *groups]

    def __missing__(self, name: str) -> TyperCommand:
        if name not in COMMANDS:
            raise KeyError(name)
        command = self[name] = build_command(name)
        return command

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or dict.__contains__(self, name)

    def __iter__(self):  # noqa: ANN204
        return iter(self.order)

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self.order)

    def stub(self, name: str) -> Any:
        """What the group's help lists for ``name``: the command if built, else its name and docstring."""
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        return TyperCommand(name=name, help=inspect.getdoc(_function(name)))


class LazyGroup(TyperGroup):
    """The ``metaauto`` group: a command is built (and its library choices read) only when it is used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(self.commands)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        commands = self.commands
        self.commands = {name: commands.stub(name) for name in commands.order}  # type: ignore[assignment]
        try:
            super().format_help(ctx, formatter)
        finally:
            self.commands = commands


app = typer.Typer(
    name="metaauto",
    cls=LazyGroup,
    help="AutoML for meta-learning: train and evaluate few-shot learners on task collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(server_app, name="server")
app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"metaauto {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_show_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """AutoML for meta-learning: train and evaluate few-shot learners on task collections."""


__all__ = ["COMMANDS", "LazyGroup", "app", "build_command"]
