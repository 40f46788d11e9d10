"""Name -> task collection, so that configs, the CLI and later dataset issues share one entry point.

A factory takes the data directory the caller gave (``None`` if none; factories that read files resolve
it with :func:`metaauto.config.data_dir`, which falls back to ``METAAUTO_DATA_DIR``) and the collection's
options. Tables need no registration: a DataFrame, or a path ending in ``.csv``/``.parquet``, becomes a
:class:`TableCollection`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from metaauto.errors import CollectionError
from metaauto.tasks.base import TaskCollection
from metaauto.tasks.heart_disease import HeartDiseaseCollection
from metaauto.tasks.movielens import MovieLensCollection
from metaauto.tasks.omniglot import OmniglotCollection
from metaauto.tasks.sinusoid import SinusoidCollection
from metaauto.tasks.table import TABLE_SUFFIXES, TableCollection

CollectionFactory = Callable[..., TaskCollection]

_REGISTRY: dict[str, CollectionFactory] = {}


def register_collection(name: str, factory: CollectionFactory, *, replace: bool = False) -> None:
    """Make ``load_collection(name, data_dir, **options)`` call ``factory(data_dir, **options)``.

    Registering a taken name is an error unless ``replace=True``, so that two plugins cannot silently
    shadow each other.
    """
    key = name.lower()
    if not key or Path(key).suffix in TABLE_SUFFIXES:
        raise CollectionError(f"cannot register collection name {name!r}: it would read as a table path")
    if key in _REGISTRY and not replace:
        raise CollectionError(f"collection {name!r} is already registered; pass replace=True to override it")
    _REGISTRY[key] = factory


def available_collections() -> list[str]:
    """Registered collection names (tables load from a DataFrame or a file path instead)."""
    return sorted(_REGISTRY)


def load_collection(
    source: str | os.PathLike | pd.DataFrame, data_dir: str | os.PathLike | None = None, **options: Any
) -> TaskCollection:
    """Build a collection from a registered name, a DataFrame, or a ``.csv``/``.parquet`` path.

    A relative table path is resolved against ``data_dir`` when one is given, else against the current
    directory. Table options (``task_col=``, ``label_col=``, ...) are those of :class:`TableCollection`.
    """
    if isinstance(source, pd.DataFrame):
        return TableCollection(source, **options)
    if isinstance(source, str) and source.lower() in _REGISTRY:
        return _REGISTRY[source.lower()](data_dir, **options)
    path = Path(source)
    if isinstance(source, os.PathLike) or path.suffix.lower() in TABLE_SUFFIXES:
        if data_dir is not None and not path.is_absolute():
            path = Path(data_dir) / path
        return TableCollection(path, **options)
    raise CollectionError(
        f"unknown collection {source!r}; registered collections are {available_collections()}, "
        "or pass a DataFrame or a .csv/.parquet path"
    )


register_collection("omniglot", lambda data_dir, **options: OmniglotCollection(data_dir, **options))
register_collection("sinusoid", lambda data_dir, **options: SinusoidCollection(**options))
register_collection("heart-disease", lambda data_dir, **options: HeartDiseaseCollection(data_dir, **options))
register_collection("movielens", lambda data_dir, **options: MovieLensCollection(data_dir, **options))
