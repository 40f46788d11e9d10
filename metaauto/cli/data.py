"""``metaauto data fetch``: the public datasets into the data directory (:mod:`metaauto.tasks.datasets`)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from metaauto.cli.errors import friendly_errors as friendly

data_app = typer.Typer(
    name="data",
    help="Get the public datasets (Omniglot, MovieLens latest-small, UCI heart disease) with checked hashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NAMES = ("omniglot", "movielens", "heart-disease")


@data_app.command("fetch")
@friendly
def fetch(
    datasets: Optional[list[str]] = typer.Argument(None, help=f"Datasets to fetch: {', '.join(NAMES)} (default: all)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where they go (default: $METAAUTO_DATA_DIR)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show download progress on stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Download what is missing into the data directory, checking every file's hash; copies already there
    are checked and kept (a read-only shared copy works too)."""
    from metaauto.tasks.datasets import fetch as fetch_datasets

    fetched = fetch_datasets(datasets or NAMES, data_dir=data_dir, progress=progress)
    if json_output:
        typer.echo(json.dumps([{"dataset": f.dataset, "path": str(f.path), "action": f.action, "files": list(f.files)}
                               for f in fetched], indent=2))
        return
    for f in fetched:
        typer.echo(f.describe())
