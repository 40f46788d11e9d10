"""Optuna search over learners and their hyperparameters, tracked in MLflow.

``run_search(collection, trials=N)`` draws an algorithm and its own parameters per trial from a
conditional space (:class:`SearchSpace`), starts from every algorithm's published configuration,
meta-trains each trial under a step/second budget with pruning, nests every trial's MLflow run under
one parent run for the study, and meta-tests, registers and promotes the best configuration.

The lifecycle behind it is :class:`SearchSession` (:mod:`metaauto.search.session`), built from value
objects: what is searched (:class:`SearchProblem`: the collection, :class:`EpisodeSettings`, the
:class:`SearchSpace`, the per-trial :class:`Budget`), how the study runs (:class:`SearchSettings`) and how
it ends (:class:`FinalSettings`); each trial ends in a :class:`TrialOutcome` and the search in a
:class:`SearchResult`. Several processes share one study through :mod:`metaauto.search.distributed`.
"""

from metaauto.search.final import FinalSettings
from metaauto.search.objective import Budget, EpisodeSettings, Objective, TrialOutcome
from metaauto.search.problem import SearchProblem, SearchSettings, default_study_name
from metaauto.search.session import SearchSession, run_search
from metaauto.search.space import Candidate, Param, SearchError, SearchSpace, load_overrides, parse_overrides
from metaauto.search.storage import STORAGE_ENV, default_storage_url, open_storage, resolve_storage_url
from metaauto.search.study import PRUNERS, SearchResult, make_pruner

__all__ = [
    "PRUNERS",
    "STORAGE_ENV",
    "Budget",
    "Candidate",
    "EpisodeSettings",
    "FinalSettings",
    "Objective",
    "Param",
    "SearchError",
    "SearchProblem",
    "SearchResult",
    "SearchSession",
    "SearchSettings",
    "SearchSpace",
    "TrialOutcome",
    "default_storage_url",
    "default_study_name",
    "load_overrides",
    "make_pruner",
    "open_storage",
    "parse_overrides",
    "resolve_storage_url",
    "run_search",
]
