"""Task collections: named, fingerprinted families of tasks with disjoint meta-train/val/test splits."""

from metaauto.tasks.base import PooledData, SplitSummary, TaskCollection
from metaauto.tasks.batch import TaskBatch
from metaauto.tasks.omniglot import OmniglotCollection
from metaauto.tasks.catalog import available_collections, load_collection, register_collection
from metaauto.tasks.sinusoid import SinusoidCollection
from metaauto.tasks.table import TableCollection

__all__ = [
    "OmniglotCollection",
    "PooledData",
    "SinusoidCollection",
    "SplitSummary",
    "TableCollection",
    "TaskBatch",
    "TaskCollection",
    "available_collections",
    "load_collection",
    "register_collection",
]
