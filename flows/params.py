"""Typed parameters of the flows.

Every flow takes one of these pydantic models, so Prefect renders a real form (titles, descriptions,
bounds, drop-downs for ``Literal`` enums) and rejects bad values before a run starts. They are plain
data (names, numbers), never tensors or studies, so they serialise into flow-run parameters.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from metaauto.backbones import BACKBONES
from metaauto.learners import LEARNERS
from metaauto.search.study import PRUNERS

# the form's drop-downs list the library's own catalogues (pydantic turns a Literal into a JSON-schema enum)
Algorithm = Literal[tuple(LEARNERS)]  # type: ignore[valid-type]
Pruner = Literal[PRUNERS]  # type: ignore[valid-type]
Backbone = Literal[BACKBONES]  # type: ignore[valid-type]


class CollectionParams(BaseModel):
    """Which task collection and which episodes."""

    model_config = ConfigDict(extra="forbid", title="Task collection")

    collection: str = Field("omniglot", title="Collection",
                            description="Registered collection (omniglot, sinusoid, ...) or a path to a .csv/.parquet table.")
    data_dir: Optional[str] = Field(None, title="Data directory",
                                    description="Dataset directory; empty means $METAAUTO_DATA_DIR.")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict, title="Collection options",
                                                         description="Collection options, e.g. {\"task_col\": \"user\"} for a table.")
    ways: int = Field(5, ge=2, le=50, title="Ways", description="Classes per episode (ignored for regression).")
    shots: int = Field(1, ge=1, le=50, title="Shots", description="Labelled support examples per class (per task for regression).")
    queries: int = Field(15, ge=1, le=100, title="Queries", description="Query examples per class (per task for regression).")


class SearchParams(BaseModel):
    """How the Optuna study runs."""

    model_config = ConfigDict(extra="forbid", title="Search")

    trials: int = Field(4, ge=1, le=1000, title="Trials", description="Finished trials the study runs to, in total (resumptions included).")
    algorithms: Optional[list[Algorithm]] = Field(None, title="Algorithms", description="Learners to search; empty means all that fit the task type.")
    max_steps: int = Field(100, ge=1, le=100_000, title="Steps per trial", description="Meta-updates per trial at most.")
    trial_seconds: Optional[float] = Field(None, gt=0, le=86_400, title="Seconds per trial", description="Training seconds per trial at most.")
    val_every: int = Field(50, ge=1, le=10_000, title="Validate every", description="Validate and report to the pruner every N meta-updates.")
    val_tasks: int = Field(50, ge=1, le=5_000, title="Validation tasks", description="Fixed validation episodes.")
    pruner: Pruner = Field("hyperband", title="Pruner")
    warm_start: bool = Field(True, title="Warm start",
                             description="A new study also tries the best configurations of the most similar past studies (knowledge base).")
    storage: Optional[str] = Field(None, title="Study storage",
                                   description="Empty: $METAAUTO_SEARCH_STORAGE if set, else SQLite under the project home (journal file when parallelism > 1); 'journal[:PATH]'; or postgresql://user@host/db.")
    study_name: Optional[str] = Field(None, title="Study name", description="Empty: COLLECTION-{ways}w{shots}s, e.g. omniglot-5w1s. An existing study is resumed.")
    parallelism: int = Field(1, ge=1, le=64, title="Parallel trials", description="Trials run at once on the task runner.")
    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads", title="Task runner",
        description="Where trials run: a thread pool (default), a process pool, or Dask (a local cluster, or the scheduler at Dask address).")
    dask_address: Optional[str] = Field(None, title="Dask address",
                                        description="Dask scheduler to send trials to (tcp://host:8786); empty: a local cluster of 'Parallel trials' workers.")
    gpu_concurrency_limit: Optional[str] = Field(None, title="GPU concurrency limit",
                                                 description="Name of a Prefect global concurrency limit every trial occupies one slot of (e.g. 'gpu'); empty: 'gpu' on CUDA, none on the CPU.")
    trial_retries: int = Field(1, ge=0, le=5, title="Trial retries", description="Prefect retries of a trial task that raised.")
    workers: int = Field(0, ge=0, le=256, title="Worker runs",
                         description="0: trials run inside this flow run. N > 0: submit N worker runs (see Worker kind; metaauto stack up "
                                     "starts the workers); each joins the study on a PostgreSQL storage and pulls trials.")
    dispatch: Literal["task-workers", "deployment"] = Field(
        "task-workers", title="Worker kind",
        description="workers > 0: 'task-workers' submits search-worker task runs to long-lived task workers (no start-up per "
                    "search); 'deployment' submits flow runs of the worker deployment to a work pool (a new process or pod each).")
    worker_deployment: str = Field("search-worker/scaleout", title="Worker deployment",
                                   description="FLOW/DEPLOYMENT whose runs take the trials when workers > 0 and the kind is 'deployment'.")
    stall_seconds: int = Field(900, ge=5, le=604_800, title="Stall timeout",
                               description="workers > 0: fail the search when for this long no trial runs and none finishes (every worker gone).")
    heartbeat_interval: int = Field(30, ge=1, le=3600, title="Heartbeat interval",
                                    description="Seconds between a running trial's heartbeats in a database storage (workers > 0).")
    grace_period: int = Field(120, ge=2, le=86_400, title="Grace period",
                              description="Seconds without a heartbeat after which a worker's trial counts as dead and is retried once.")
    seed: int = Field(0, ge=0, title="Seed", description="Seeds the sampler, initialisations and episodes.")
    device: str = Field("auto", title="Device", description="auto, cpu, cuda, cuda:1, ...")
    backbone: Optional[Backbone] = Field(None, title="Backbone", description="Empty: conv4 for images, mlp otherwise.")


class EvalParams(BaseModel):
    """The final meta-test and the registry."""

    model_config = ConfigDict(extra="forbid", title="Evaluation and promotion")

    final_steps: Optional[int] = Field(None, ge=1, le=100_000, title="Final training steps",
                                       description="Meta-updates of the best configuration's final training; empty: the trial budget.")
    final_seconds: Optional[float] = Field(None, gt=0, le=86_400, title="Final training seconds",
                                           description="Training seconds of the best configuration's final training at most; empty: the trial budget.")
    tasks: int = Field(600, ge=1, le=10_000, title="Meta-test tasks", description="Meta-test episodes, shared by the learner and the baselines.")
    baselines: bool = Field(True, title="Baselines", description="Score the scratch and pre-train baselines on the same episodes.")
    pretrain_steps: int = Field(1000, ge=1, le=100_000, title="Pre-train steps", description="Pre-training steps of the pre-train baseline.")
    # 50 Adam steps: on Omniglot 5-way 1-shot the scratch network scores the same as after 100
    # (0.735 vs 0.736 on 30 meta-test tasks) in half the time, which keeps the main job under 15 minutes
    scratch_steps: int = Field(50, ge=1, le=10_000, title="Scratch steps", description="Training steps of the scratch baseline on each support set.")
    register_as: Optional[str] = Field("omniglot-5w1s", title="Registered model",
                                       description="Register the best configuration as this model and promote it to @champion if it wins; empty: do not register.")
    test: Literal["wilcoxon", "ttest"] = Field("wilcoxon", title="Promotion test", description="One-sided paired test against the champion.")
    alpha: float = Field(0.05, gt=0, lt=1, title="Significance level")
    margin: float = Field(0.0, ge=0, title="Margin", description="Minimum mean improvement per task to promote.")


class TransferParams(BaseModel):
    """Adapting the champion to a new collection."""

    model_config = ConfigDict(extra="forbid", title="Transfer")

    model_uri: str = Field("models:/omniglot-5w1s@champion", title="Model URI", description="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model.")
    target: CollectionParams = Field(default_factory=CollectionParams, title="Target collection",
                                     description="The new collection whose few labelled support examples the model adapts to.")
    split: Literal["train", "val", "test"] = Field("test", title="Split", description="Split of the target collection the episodes come from.")
    tasks: int = Field(100, ge=1, le=10_000, title="Tasks", description="Episodes scored (the same ones for the model and the baselines).")
    baselines: bool = Field(True, title="Baselines")
    pretrain_steps: int = Field(300, ge=1, le=100_000, title="Pre-train steps")
    scratch_steps: int = Field(100, ge=1, le=10_000, title="Scratch steps")
    seed: int = Field(0, ge=0, title="Seed")
    device: str = Field("auto", title="Device")
    domain_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, title="Domain options",
        description="Options of the domain report (MovieLens: pooled_epochs, finetune_steps, mf_rank, mf_iterations, ...); "
                    "tasks is the number of users (MovieLens) or support draws (heart disease).")


class PipelineParams(BaseModel):
    """The main job: ingest, search, evaluate and promote, then (optionally) transfer."""

    model_config = ConfigDict(extra="forbid", title="Meta-pipeline")

    data: CollectionParams = Field(default_factory=CollectionParams, title="Collection")
    search: SearchParams = Field(default_factory=SearchParams, title="Search")
    evaluation: EvalParams = Field(default_factory=EvalParams, title="Evaluation and promotion")
    transfer: Optional[TransferParams] = Field(None, title="Transfer (optional)",
                                               description="Adapt the champion to another collection after promotion; empty: skip.")
    experiment: str = Field("metaauto", title="MLflow experiment")
