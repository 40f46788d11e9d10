"""MLflow side of a search: one parent run per study, one nested run per trial, plots and a leaderboard.

Nesting uses MLflow's own convention, the ``mlflow.parentRunId`` tag, set from the parent run id passed
explicitly (never MLflow's thread-local active run), so worker processes and resumed searches attach
their trials to the same parent: its id is kept in the study's user attributes.
"""

from __future__ import annotations

import math
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow import MlflowClient

from metaauto.engine import TrainConfig
from metaauto.search.space import Candidate
from metaauto.tracking.callback import MlflowCallback
from metaauto.tracking.run import TrackedRun
from metaauto.tracking.store import DEFAULT_EXPERIMENT, ensure_experiment
from metaauto.tracking.training import EvalSettings, run_params

PARENT_TAG = "mlflow.parentRunId"
#: study user attribute holding the parent run id
PARENT_ATTR = "mlflow_parent_run_id"
LEADERBOARD_JSON = "search/leaderboard.json"
LEADERBOARD_CSV = "search/leaderboard.csv"


class TrialTracker:
    """Opens and closes the nested run of each trial under ``parent_run_id``."""

    def __init__(self, client: MlflowClient, parent_run_id: str, study_name: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.client = client
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.experiment = experiment
        self._experiment_id: str | None = None
        self._callbacks: dict[str, MlflowCallback] = {}

    def start(self, trial: optuna.Trial, candidate: Candidate) -> TrackedRun:
        """Create the nested run (the one call a trial waits for); its parameters follow in the background."""
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.experiment)
        run = TrackedRun.start(
            run_name=f"{self.study_name}-trial{trial.number}-{candidate.algorithm}",
            tags={PARENT_TAG: self.parent_run_id, "optuna.study": self.study_name, "optuna.trial": trial.number,
                  "optuna.state": "RUNNING", "algorithm": candidate.algorithm},
            experiment_id=self._experiment_id, client=self.client,
        )
        self.callback(run).send(run.log_params, {"optuna.trial": trial.number, **trial.params})
        return run

    def callback(self, run: TrackedRun) -> MlflowCallback:
        """The run's metric streamer and background sender; :meth:`finish` waits for what it still holds."""
        if run.run_id not in self._callbacks:
            self._callbacks[run.run_id] = MlflowCallback(run)
        return self._callbacks[run.run_id]

    def log_setup(self, run: TrackedRun, learner: Any, collection: Any, config: TrainConfig) -> None:
        params = run_params(learner, collection, config, EvalSettings(baselines=False))
        self.callback(run).send(run.log_params, {k: v for k, v in params.items() if not k.startswith("eval.")})

    def finish(self, run: TrackedRun, trial: optuna.Trial, state: str, reason: str, *, error: BaseException | None = None,
               value: float | None = None, result: Any = None) -> None:
        streamer = self._callbacks.pop(run.run_id, None)
        if streamer is not None:
            streamer.close()
        metrics = {"optuna/value": value} if value is not None else {}
        run.log(metrics=metrics, step=result.final_step if result is not None else 0,
                tags={"optuna.state": state, "metaauto.reason": reason})
        if error is not None:
            run.fail(error)
        else:
            run.end("FINISHED" if state == "COMPLETE" else "KILLED")


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """Every finished trial, best first: number, state, value, reason, algorithm and parameters."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
            continue
        rows.append({
            "trial": t.number, "state": t.state.name, "value": t.value,
            "last_step": t.last_step, "reason": t.user_attrs.get("metaauto.reason"),
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            "run_id": t.user_attrs.get("mlflow.run_id"), **t.params,
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_rank"] = frame["value"].where(frame["state"] == "COMPLETE")
    return frame.sort_values(["_rank", "trial"], ascending=[False, True], na_position="last").drop(columns="_rank").reset_index(drop=True)


def leaderboard_records(board: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (a parameter another algorithm's trials lack is ``None``, not NaN)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in board.to_dict(orient="records")]


#: the study's plots, by their ``optuna.visualization(.matplotlib).plot_<name>`` function
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


def warm_up_plots() -> threading.Thread:
    """Import the plotting stack (matplotlib, plotly, scikit-learn for fANOVA: ~1.5 s) in a daemon thread.

    A search whose trials run in other processes leaves its own process idle until :func:`log_study`;
    doing the imports then takes them off the end of the search's wall time.
    """
    def imports() -> None:
        import matplotlib.pyplot  # noqa: F401
        import optuna.importance  # noqa: F401
        import optuna.visualization  # noqa: F401
        import optuna.visualization.matplotlib  # noqa: F401
        import sklearn.ensemble  # noqa: F401

    thread = threading.Thread(target=imports, name="metaauto-warm-up-plots", daemon=True)
    thread.start()
    return thread


def log_study(run: TrackedRun, study: optuna.Study) -> dict[str, str]:
    """Leaderboard (JSON records and CSV) and plots on the parent run.

    Not an MLflow ``log_table``: that appends to an existing table, so a resumed search would list its
    trials twice; these artifacts are rewritten whole.

    PNGs come from ``optuna.visualization.matplotlib``; interactive HTML from ``optuna.visualization``
    needs plotly. A plot that cannot be drawn (too few complete trials for importances, plotly missing)
    is skipped; the reasons are returned and written to ``search/plots_skipped.json``.
    """
    board = leaderboard(study)
    run.log_json(leaderboard_records(board), LEADERBOARD_JSON)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(LEADERBOARD_CSV).name
        board.to_csv(path, index=False)
        run.client.log_artifact(run.run_id, str(path), str(Path(LEADERBOARD_CSV).parent))

    import optuna.visualization as vis
    from optuna.visualization import matplotlib as vis_mpl

    skipped: dict[str, str] = {}
    with warnings.catch_warnings():
        # known and harmless on small studies: the experimental matplotlib backend, importances over
        # parameters seen in one trial, flat axes of a parameter fixed by the user
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name in PLOTS:
            _plot(run, study, name, vis, vis_mpl, skipped)
    if skipped:
        run.log_json(skipped, "search/plots_skipped.json")
    return skipped


def _plot(run: TrackedRun, study: optuna.Study, name: str, vis: Any, vis_mpl: Any, skipped: dict[str, str]) -> None:
    """One plot as PNG and HTML; a plot Optuna cannot draw yet is recorded in ``skipped`` with the reason."""
    import matplotlib.pyplot as plt

    try:
        axes = getattr(vis_mpl, f"plot_{name}")(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        run.log_figure(figure, f"search/{name}.png")
    except Exception as exc:  # optuna raises ValueError/RuntimeError for studies it cannot plot yet
        plt.close("all")
        skipped[f"{name}.png"] = f"{type(exc).__name__}: {exc}"
    try:
        html = getattr(vis, f"plot_{name}")(study).to_html(include_plotlyjs="cdn")
        run.log_text(html, f"search/{name}.html")
    except Exception as exc:  # plotly missing, or the same reasons as above
        skipped[f"{name}.html"] = f"{type(exc).__name__}: {exc}"
