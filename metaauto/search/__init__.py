"""Optuna search over learners and their hyperparameters, tracked in MLflow.

``run_search(collection, trials=N)`` draws an algorithm and its own parameters per trial from a
conditional space (:class:`SearchSpace`), starts from every algorithm's published configuration,
meta-trains each trial under a step/second budget with pruning, nests every trial's MLflow run under
one parent run for the study, and meta-tests, registers and promotes the best configuration.
"""

from metaauto.search.objective import Budget, EpisodeSettings, Objective
from metaauto.search.space import Candidate, Param, SearchError, SearchSpace, load_overrides, parse_overrides
from metaauto.search.storage import default_storage_url, open_storage
from metaauto.search.study import PRUNERS, SearchResult, make_pruner, run_search

__all__ = [
    "PRUNERS",
    "Budget",
    "Candidate",
    "EpisodeSettings",
    "Objective",
    "Param",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "default_storage_url",
    "load_overrides",
    "make_pruner",
    "open_storage",
    "parse_overrides",
    "run_search",
]
