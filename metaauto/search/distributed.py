"""Several processes, on any machines, share one study on a database storage: the trial-claiming protocol.

A process that runs trials of a study others also run (:func:`work`: a ``search-worker`` run, on any
machine) loops:

1. under a PostgreSQL advisory lock on the study (:func:`study_lock`, so two workers never both take the
   last trial), fail the trials whose heartbeat stopped -- their worker died; the storage's
   :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues each again once -- and count the
   trials the study has *claimed* (:func:`claimed`): finished ones -- a failed trial that was re-queued
   does not count -- and running ones; if fewer than ``trials``, ask for one (:func:`next_trial`);
2. run it while a heartbeat thread keeps it alive in the storage (:func:`heartbeat`), and tell the study
   how it ended;
3. when nothing is left to ask but other workers' trials still run, wait: if one of them dies, its retry
   is queued here and this worker runs it.

So every trial runs exactly once (a dead worker's trial once more, under a new number), the study ends
with exactly ``trials`` claimed trials, and adding a worker adds a trial at a time. Whoever waits for the
workers watches the same counts (:func:`progress`) and notices when no trial has run for a while
(:class:`StallClock`).

Optuna's public API only: :func:`optuna.storages.fail_stale_trials` and
:meth:`~optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number` (both marked experimental;
constraints.txt pins Optuna), and the heartbeat methods of the :class:`~optuna.storages.RDBStorage` this
process opened itself (``record_heartbeat``, ``get_heartbeat_interval``), with trial ids from
:func:`~metaauto.search.storage.trial_id`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from metaauto.search.objective import TrialOutcome
from metaauto.search.storage import database_url, is_shared, trial_id

if TYPE_CHECKING:
    from metaauto.search.session import SearchSession

#: trial user attribute: ``host:pid`` of the process that ran the trial
WORKER_ATTR = "metaauto.worker"


def supports_workers(url: str) -> bool:
    """Whether workers on other machines can share the study: a database storage (a journal file has no heartbeats)."""
    return is_shared(url) and not url.startswith("journal")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claimed(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """``(finished, running)`` as the trial budget counts them: a failed trial whose retry is queued is not finished."""
    with warnings.catch_warnings():  # retried_trial_number is marked experimental; constraints.txt pins Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials} - {None}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.FAIL and t.number not in retried)]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return finished, running


_lock_engines: dict[str, Any] = {}


@contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """A PostgreSQL session advisory lock keyed on the study name; no lock on other storages (one machine, races tolerated)."""
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    import sqlalchemy

    engine = _lock_engines.get(url)
    if engine is None:
        engine = _lock_engines[url] = sqlalchemy.create_engine(database_url(url), poolclass=sqlalchemy.pool.NullPool)
    key = {"key": f"metaauto-study:{study_name}"}
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:key))"), key)
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
            connection.commit()


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and, through the storage's callback, queue again once) the trials whose heartbeat went stale.
    Callers hold :func:`study_lock`: two processes must not both retry one dead trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def reap(study: optuna.Study, url: str) -> None:
    """:func:`fail_dead_trials` under the study's lock."""
    with study_lock(url, study.study_name):
        fail_dead_trials(study)


def next_trial(study: optuna.Study, url: str, trials: int) -> tuple[optuna.Trial | None, int]:
    """``(trial to run or None, trials still running elsewhere)`` -- the locked step 1 of the module docstring."""
    with study_lock(url, study.study_name):
        fail_dead_trials(study)
        finished, running = claimed(study.get_trials(deepcopy=False))
        if len(finished) + len(running) >= trials:
            return None, len(running)
        with warnings.catch_warnings():  # ask() warns that heartbeats are meant for optimize(): we run our own thread
            warnings.simplefilter("ignore")
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, worker_name())
        return trial, len(running)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: int) -> Iterator[None]:
    """Record the heartbeat of trial id ``trial`` every interval while the block runs (database storages with
    heartbeats only; elsewhere nothing)."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial)
            if stop.wait(timeout=interval):
                return

    thread = threading.Thread(target=beat, name=f"metaauto-heartbeat-{trial}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def work(session: "SearchSession", run: Callable[[optuna.Trial], TrialOutcome], *, wait: float = 2.0,
         on_outcome: Callable[[optuna.Trial, TrialOutcome], None] | None = None) -> list[TrialOutcome]:
    """Claim, run and tell trials of ``session``'s study until it has ``session.settings.trials`` (the loop of
    the module docstring). ``run(trial)`` runs one (raising when it failed); returns what this process ran."""
    study, ran = session.study, []
    while True:
        trial, elsewhere = next_trial(study, session.url, session.settings.trials)
        if trial is None:
            if not elsewhere:
                return ran
            time.sleep(wait)  # a running trial may die and come back as a retry
            continue
        with heartbeat(session.storage, trial_id(session.storage, study.study_name, trial.number)):
            try:
                outcome = run(trial)
            except Exception as exc:  # the Objective already recorded why; the study goes on
                outcome = TrialOutcome.failed(trial.number, exc)
        session.tell(trial, outcome)
        ran.append(outcome)
        if on_outcome is not None:
            on_outcome(trial, outcome)


@dataclass(frozen=True)
class Progress:
    """Claimed trials: how many finished, and the numbers of those running."""

    finished: int
    running: tuple[int, ...]

    def complete(self, trials: int) -> bool:
        return self.finished >= trials and not self.running


def progress(study: optuna.Study) -> Progress:
    finished, running = claimed(study.get_trials(deepcopy=False))
    return Progress(len(finished), tuple(t.number for t in running))


class StallClock:
    """Seconds since a trial last ran (a live trial keeps its heartbeat fresh, or :func:`reap` fails it) or
    finished: how long a study waiting on workers has seen no worker at work."""

    def __init__(self) -> None:
        self._seen: Progress | None = None
        self._since = time.monotonic()

    def idle(self, now: Progress) -> float:
        if now.running or now != self._seen:
            self._seen, self._since = now, time.monotonic()
        return time.monotonic() - self._since
