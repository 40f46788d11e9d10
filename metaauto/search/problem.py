"""The value objects a search is made of: what it searches (:class:`SearchProblem`) and how the study runs
(:class:`SearchSettings`). The CLI, :func:`~metaauto.search.run_search` and the flows all build these, and
:class:`~metaauto.search.SearchSession` takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metaauto.search.knowledge import DEFAULT_K, KnowledgeBase
from metaauto.search.objective import Budget, EpisodeSettings
from metaauto.search.space import SearchSpace
from metaauto.search.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S


def default_study_name(collection: Any, ways: int | None, shots: int) -> str:
    shape = f"{ways}w{shots}s" if collection.task_type == "classification" else f"{shots}shot"
    return f"{collection.name}-{shape}"


@dataclass(frozen=True)
class SearchProblem:
    """What a study searches: the collection and its episodes, the space of learners and hyperparameters,
    the per-trial budget, and the study's name."""

    collection: Any
    episodes: EpisodeSettings
    space: SearchSpace
    budget: Budget
    study_name: str

    @classmethod
    def build(cls, collection: Any, episodes: EpisodeSettings, *, budget: Budget | None = None,
              algorithms: list[str] | None = None, overrides: dict[str, Any] | None = None,
              study_name: str | None = None) -> "SearchProblem":
        """``algorithms`` (default: all that fit the task type) and ``overrides`` shape the space
        (:class:`SearchSpace`); the study is named ``COLLECTION-{ways}w{shots}s`` unless ``study_name``."""
        space = SearchSpace(collection.task_type, episodes.backbone, algorithms, overrides)
        name = study_name or default_study_name(collection, episodes.ways, episodes.shots)
        return cls(collection, episodes, space, budget or Budget(), name)


@dataclass(frozen=True)
class SearchSettings:
    """How the study runs and where it lives.

    ``trials`` caps the study's finished trials in total (across processes and resumptions); ``timeout``
    bounds one process's optimisation in seconds. ``storage`` is a URL (default:
    :func:`~metaauto.search.storage.resolve_storage_url`). An existing study is an error unless
    ``resume``. ``exclusive`` says that this process alone runs the study's trials, so that a trial left
    RUNNING was interrupted and is run again on resume (default: when the storage is not shared, i.e.
    SQLite); elsewhere heartbeats decide. ``heartbeat_interval`` and ``grace_period`` (seconds) apply to
    database storages other than SQLite. With ``warm_start``, a new study also enqueues the best
    configurations of the ``warm_k`` past studies nearest by meta-features in ``knowledge`` (a
    :class:`KnowledgeBase` or its path; default ``$METAAUTO_HOME/search/knowledge.db``), where every
    finished study is recorded either way.
    """

    trials: int = 20
    timeout: float | None = None
    pruner: str = "hyperband"
    storage: str | None = None
    resume: bool = False
    exclusive: bool | None = None
    warm_start: bool = True
    knowledge: KnowledgeBase | str | None = None
    warm_k: int = DEFAULT_K
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S
    grace_period: int = GRACE_PERIOD_S
