"""What the ``metaauto`` commands share: output, and the options every data command takes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from metaauto.errors import CollectionError

RUN_SUMMARY = "run.json"
MODEL_SUBDIR = "model"
CHECKPOINT_SUBDIR = "checkpoints"

# ------------------------------------------------------------------------------------------- output


def emit(document: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    """One JSON document on stdout with ``--json``, else the human rendering."""
    if as_json:
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        human(document)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves half a summary behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["task_col=user", "k=3"]`` -> ``{"task_col": "user", "k": 3}`` (values parsed as JSON when they can be)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CollectionError(f"collection option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def split_names(text: Optional[str]) -> Optional[list[str]]:
    """``"a, b,"`` -> ``["a", "b"]``; ``None`` for no text (the library's default set)."""
    names = [name.strip() for name in text.split(",") if name.strip()] if text else []
    return names or None


# --------------------------------------------------------------------------------------- data source


@dataclass
class DataSource:
    """The collection a command works on: ``--collection``, ``--data-dir`` and ``--collection-option``."""

    collection: str
    data_dir: Optional[Path] = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cli(cls, collection: str, data_dir: Optional[Path], pairs: Optional[list[str]]) -> "DataSource":
        return cls(collection, data_dir, parse_options(pairs))

    def load(self) -> Any:
        from metaauto.tasks import load_collection

        return load_collection(self.collection, data_dir=self.data_dir, **self.options)


COLLECTION_HELP = "Registered collection (omniglot, sinusoid) or a .csv/.parquet table."
Collection = Annotated[str, typer.Option("--collection", "-c", help=COLLECTION_HELP)]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR).")]
CollectionOptions = Annotated[Optional[list[str]], typer.Option(
    "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable), e.g. task_col=user.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
Seed = Annotated[int, typer.Option(help="Seeds the sampler, initialisations and episodes.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
