"""A search's lifecycle, step by step, in one place: :class:`SearchSession`.

1. :meth:`SearchSession.start` resolves the storage (:func:`~metaauto.search.storage.resolve_storage_url`),
   creates the study -- seeded with the collection's fingerprint, the published defaults and the warm
   start (:func:`~metaauto.search.study.seed_study`) -- or resumes it, checking that it searched the same
   collection and re-queueing the trials a stopped search left RUNNING; :meth:`SearchSession.join` joins
   a study another process started (a worker, or the evaluation);
2. :meth:`~SearchSession.start_parent_run` opens the study's MLflow parent run (or re-opens it on resume),
   under which every trial and the final training nest; :meth:`~SearchSession.attach_parent_run` joins it;
3. trials run through :meth:`~SearchSession.optimize` (Optuna's own loop, in this process) or ask and tell
   (:meth:`~SearchSession.ask`, :meth:`~SearchSession.tell` with a :class:`TrialOutcome`), which is how the
   flows and the distributed workers (:mod:`metaauto.search.distributed`) run them elsewhere;
4. :meth:`~SearchSession.conclude` remembers the study in the knowledge base, logs the leaderboard and the
   plots on the parent run and summarises the study (:class:`SearchResult`);
5. :meth:`~SearchSession.train_best` meta-trains the best configuration again, meta-tests, registers and
   promotes it (:mod:`metaauto.search.final`).

:func:`run_search` is the one-call composition of these steps that ``metaauto search`` uses.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import optuna
from mlflow import MlflowClient
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from metaauto.search.final import FinalSettings, train_best
from metaauto.search.knowledge import DEFAULT_K, KnowledgeBase
from metaauto.search.objective import Budget, EpisodeSettings, Objective, TrialOutcome
from metaauto.search.problem import SearchProblem, SearchSettings
from metaauto.search.space import SearchError
from metaauto.search.storage import (GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, is_shared, open_storage,
                                     resolve_storage_url, trial_id)
from metaauto.search.study import (FINISHED, SearchResult, check_fingerprint, make_pruner, remember_study,
                                   requeue_interrupted, seed_study)
from metaauto.search.tracking import PARENT_ATTR, TrialTracker, log_study
from metaauto.tracking.run import TrackedRun
from metaauto.tracking.store import DEFAULT_EXPERIMENT, get_client
from metaauto.tracking.training import TrackedTraining
from metaauto.urls import redact


class SearchSession:
    """One process's handle on a study: its problem, settings, storage, study and MLflow parent run.

    Build it with :meth:`start` (the process that owns the search) or :meth:`join` (a worker, or the
    process that evaluates a finished search); see the module docstring for the steps.
    """

    def __init__(self, problem: SearchProblem, settings: SearchSettings, url: str, storage: optuna.storages.BaseStorage,
                 study: optuna.Study, *, created: bool, joined: bool, track: bool, experiment: str,
                 client: MlflowClient | None) -> None:
        self.problem, self.settings = problem, settings
        #: the storage URL (with credentials: :attr:`SearchResult.storage` is the redacted one)
        self.url = url
        #: the storage this process opened: the study's, for the storage calls Optuna's Study does not offer
        self.storage = storage
        self.study = study
        self.created, self.joined = created, joined
        self.track, self.experiment = track, experiment
        self.client = client or (get_client() if track else None)
        self.parent: TrackedRun | None = None

    # -- 1. the study ----------------------------------------------------------------------------------

    @classmethod
    def start(cls, problem: SearchProblem, settings: SearchSettings | None = None, *, track: bool = True,
              experiment: str = DEFAULT_EXPERIMENT, client: MlflowClient | None = None) -> "SearchSession":
        """Create the study (seeded), or continue it when ``settings.resume``; the sampler is seeded like the search."""
        settings = settings or SearchSettings()
        url, storage = _open(settings)
        name, collection = problem.study_name, problem.collection
        exists = name in optuna.get_all_study_names(storage)
        if exists and not settings.resume:
            raise SearchError(f"study {name!r} already exists; pass --resume to continue it, or --study to name a new one")
        sampler = optuna.samplers.TPESampler(seed=problem.episodes.seed)
        pruner = make_pruner(settings.pruner, problem.budget)
        if exists:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
            check_fingerprint(study, collection)
            if settings.exclusive if settings.exclusive is not None else not is_shared(url):
                requeue_interrupted(study, storage)
        else:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize")
            seed_study(study, collection, problem.space, problem.episodes.ways, problem.episodes.shots,
                       warm_start=settings.warm_start, knowledge=settings.knowledge, warm_k=settings.warm_k)
        return cls(problem, settings, url, storage, study, created=not exists, joined=False, track=track,
                   experiment=experiment, client=client)

    @classmethod
    def join(cls, problem: SearchProblem, settings: SearchSettings | None = None, *, sampler_seed: int | None = None,
             missing: str = "start it with `metaauto search` (no --worker) first", track: bool = True,
             experiment: str = DEFAULT_EXPERIMENT, client: MlflowClient | None = None) -> "SearchSession":
        """Join the existing study of ``problem`` (``missing`` says what to do when there is none)."""
        settings = settings or SearchSettings()
        url, storage = _open(settings)
        name = problem.study_name
        if name not in optuna.get_all_study_names(storage):
            raise SearchError(f"study {name!r} does not exist in {redact(url)}; {missing}")
        study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                  pruner=make_pruner(settings.pruner, problem.budget))
        check_fingerprint(study, problem.collection)
        return cls(problem, settings, url, storage, study, created=False, joined=True, track=track,
                   experiment=experiment, client=client)

    # -- 2. the MLflow parent run ----------------------------------------------------------------------

    def start_parent_run(self, *, tags: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> TrackedRun | None:
        """The study's parent run: created with the search's parameters (and ``tags``/``params`` of the caller)
        the first time, RUNNING again on resume; ``None`` without tracking."""
        if not self.track:
            return None
        parent_id = self.study.user_attrs.get(PARENT_ATTR)
        if parent_id is not None:
            self.client.update_run(parent_id, status="RUNNING")
            self.parent = TrackedRun(self.client, parent_id)
            return self.parent
        name, space, budget = self.problem.study_name, self.problem.space, self.problem.budget
        self.parent = TrackedRun.start(run_name=f"search-{name}", experiment=self.experiment, client=self.client,
                                       tags={"optuna.study": name, "metaauto.kind": "search",
                                             "collection": self.problem.collection.name, **(tags or {})})
        self.study.set_user_attr(PARENT_ATTR, self.parent.run_id)
        self.parent.log_params({"search.algorithms": space.algorithms, "search.pruner": self.settings.pruner,
                                "search.storage": redact(self.url), "search.max_steps": budget.max_steps,
                                "search.trial_seconds": budget.seconds, **(params or {}),
                                **{f"space.{k}": v for k, v in space.describe().items()}})
        return self.parent

    def attach_parent_run(self, run_id: str | None = None) -> TrackedRun | None:
        """Attach to the parent run another process started: ``run_id``, else the one the study records."""
        if not self.track:
            return None
        run_id = run_id or self.study.user_attrs.get(PARENT_ATTR)
        if run_id is None:
            raise SearchError(f"study {self.problem.study_name!r} has no MLflow parent run to attach to "
                              "(it was searched without tracking)")
        self.parent = TrackedRun(self.client, run_id)
        return self.parent

    @contextmanager
    def parent_running(self) -> Iterator[None]:
        """The block that searches: the parent run ends FINISHED after it, or FAILED with its error (the
        owner's parent run only: a joined session leaves it alone)."""
        owner = self.parent if not self.joined else None
        try:
            yield
        except BaseException as exc:
            if owner is not None:
                owner.fail(exc)
            raise
        if owner is not None:
            owner.end("FINISHED")

    # -- 3. trials -------------------------------------------------------------------------------------

    def objective(self, callbacks: Iterable[Any] = ()) -> Objective:
        """The trial function, tracking each trial as a nested run of the parent run when there is one."""
        p = self.problem
        tracker = TrialTracker(self.client, self.parent.run_id, p.study_name, self.experiment) if self.parent else None
        return Objective(p.space, p.collection, p.episodes, p.budget, tracker=tracker, callbacks=callbacks)

    def finished(self) -> int:
        """Trials that count towards ``settings.trials``."""
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def optimize(self, objective: Objective, *, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
        """Run trials in this process until the study has ``settings.trials`` finished ones (or ``settings.timeout``)."""
        trials = self.settings.trials
        callbacks: list[Any] = [MaxTrialsCallback(trials, states=FINISHED), *([on_trial] if on_trial else [])]
        already = self.finished()
        if already < trials:
            self.study.optimize(objective, n_trials=trials if self.joined else trials - already, timeout=self.settings.timeout,
                                catch=(Exception,), callbacks=callbacks, gc_after_trial=True)

    def ask(self) -> optuna.Trial:
        return self.study.ask()

    def tell(self, trial: optuna.Trial | int, outcome: TrialOutcome) -> None:
        if outcome.state == TrialState.COMPLETE:
            self.study.tell(trial, outcome.value)
        else:
            self.study.tell(trial, state=outcome.state)

    def trial(self, number: int) -> optuna.Trial:
        """Trial ``number``, asked by another process, to run here.

        Optuna offers no public way to re-open an asked trial: :class:`optuna.Trial`'s constructor is public
        but documented as not meant for users; it is called here only, with the id from the storage's public
        lookup (:func:`~metaauto.search.storage.trial_id`).
        """
        return optuna.Trial(self.study, trial_id(self.storage, self.study.study_name, number))

    # -- 4. and 5. the end -----------------------------------------------------------------------------

    def result(self) -> SearchResult:
        return SearchResult.from_study(self.study, self.url, self.parent.run_id if self.parent else None)

    def conclude(self) -> SearchResult:
        """Remember the study for warm starts, log its leaderboard, plots and best trial on the parent run, and summarise it."""
        result = self.result()
        p = self.problem
        if result.best_trial is not None:
            remember_study(self.study, p.collection, p.episodes.ways, p.episodes.shots, self.settings.knowledge)
        if self.parent is None:
            return result
        result.plots_skipped = log_study(self.parent, self.study)
        if result.best_trial is not None:
            best = self.study.best_trial
            self.parent.set_tags({"optuna.best_trial": best.number, "optuna.best_algorithm": best.params["algorithm"]})
            self.parent.log_metrics({"search/best_value": best.value,
                                     **{f"search/n_{k.lower()}": v for k, v in result.states.items()}})
        return result

    def best_trial(self) -> FrozenTrial:
        if not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise SearchError(f"study {self.problem.study_name!r} has no complete trial to evaluate")
        return self.study.best_trial

    def train_best(self, final: FinalSettings | None = None) -> TrackedTraining:
        """The best configuration trained again, meta-tested, registered and promoted (:mod:`metaauto.search.final`)."""
        if self.parent is None:
            raise SearchError("the final training is tracked under the study's parent run: start or attach it first")
        return train_best(self.problem, self.best_trial(), self.parent, final or FinalSettings(), self.experiment)

    def run(self, final: FinalSettings | None = None, *, callbacks: Iterable[Any] = (),
            on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> SearchResult:
        """Every step in this process: a joined session (a worker) only runs trials; the owner also concludes
        the study and, when tracked and a trial completed, trains the best configuration."""
        if self.joined:
            self.attach_parent_run()
            self.optimize(self.objective(callbacks), on_trial=on_trial)
            return self.result()
        self.start_parent_run()
        with self.parent_running():
            self.optimize(self.objective(callbacks), on_trial=on_trial)
            result = self.conclude()
            if result.best_trial is not None and self.parent is not None:
                result.final = self.train_best(final)
        return result


def _open(settings: SearchSettings) -> tuple[str, optuna.storages.BaseStorage]:
    url = resolve_storage_url(settings.storage)
    return url, open_storage(url, settings.heartbeat_interval, settings.grace_period)


def run_search(
    collection: Any,
    *,
    ways: int | None = 5,
    shots: int = 1,
    queries: int = 15,
    trials: int = 20,
    timeout: float | None = None,
    algorithms: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    budget: Budget | None = None,
    pruner: str = "hyperband",
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    worker: bool = False,
    backbone: str | None = None,
    seed: int = 0,
    device: str = "auto",
    track: bool = True,
    evaluation: Any = None,
    register_as: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    client: MlflowClient | None = None,
    callbacks: Iterable[Any] = (),
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    warm_start: bool = True,
    knowledge: KnowledgeBase | str | None = None,
    warm_k: int = DEFAULT_K,
) -> SearchResult:
    """Search learners and hyperparameters for ``collection`` in one call: a :class:`SearchSession`'s steps.

    The keywords are those of the value objects it builds, flattened for callers that want one call:
    the episodes (``ways``, ``shots``, ``queries``, ``backbone``, ``seed``, ``device``:
    :class:`EpisodeSettings`), the problem (``algorithms``, ``overrides``, ``budget``, ``study_name``:
    :class:`SearchProblem`), the study (``trials``, ``timeout``, ``pruner``, ``storage``, ``resume``,
    ``heartbeat_interval``, ``grace_period``, ``warm_start``, ``knowledge``, ``warm_k``:
    :class:`SearchSettings`) and the end (``evaluation``, ``register_as``: :class:`FinalSettings`). A
    ``worker`` joins an existing study and only runs trials; the process that created the study (or
    resumes it) reports, evaluates and registers. ``callbacks`` are extra meta-training callbacks of
    every trial; ``on_trial(study, trial)`` is called as each trial ends.
    """
    if register_as and not track:
        raise SearchError("registering the best configuration needs tracking")
    episodes = EpisodeSettings.for_collection(collection, ways, shots, queries, backbone=backbone, seed=seed, device=device)
    problem = SearchProblem.build(collection, episodes, budget=budget, algorithms=algorithms, overrides=overrides,
                                  study_name=study_name)
    settings = SearchSettings(trials=trials, timeout=timeout, pruner=pruner, storage=storage, resume=resume,
                              warm_start=warm_start, knowledge=knowledge, warm_k=warm_k,
                              heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    opened = dict(track=track, experiment=experiment, client=client)
    session = SearchSession.join(problem, settings, **opened) if worker else SearchSession.start(problem, settings, **opened)
    return session.run(FinalSettings(evaluation=evaluation, register_as=register_as), callbacks=callbacks, on_trial=on_trial)
