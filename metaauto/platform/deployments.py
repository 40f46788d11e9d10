"""Every Prefect deployment of the product, declared once: a pattern plus a table of overrides.

The pattern: each flow of ``flows/`` gets a deployment ``<flow>/on-demand`` tagged ``metaauto``, with the
flow's own typed defaults as parameters (the UI shows them pre-filled in the run form) and the flow's
docstring as description. The overrides: ``meta-pipeline/nightly`` runs on a schedule (the main job),
and ``search-worker/scaleout`` sits on the stack's process work pool (one worker's share of a study per
flow run; ``search-learners`` submits it) and is not served by ``metaauto serve``.

Three consumers read the table:

* ``metaauto serve`` (:func:`served`): the served deployments, executed by that process;
* ``metaauto stack up|configure`` (:func:`apply_worker_deployment`): ``search-worker/scaleout`` on a pool;
* ``prefect deploy --all`` through ``prefect.yaml`` at the repository root, written by :func:`prefect_yaml`
  (``python -m metaauto.platform.deployments > prefect.yaml``; a test keeps the two equal), against
  the user's own work pools: the ones without a pool here take ``PREFECT_DEFAULT_WORK_POOL_NAME``.

The library never imports ``flows``: flows are named by entrypoint (``flows/pipeline.py:meta_pipeline``)
and loaded through Prefect (:func:`load_flow`) when a process has to hold the flow object.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from metaauto.errors import MetaautoError

#: the nightly schedule of the main job (UTC)
NIGHTLY_CRON = "0 2 * * *"
MAIN_FLOW = "meta-pipeline"
WORKER_FLOW = "search-worker"
#: the process work pool of ``metaauto stack`` (``--pool``)
DEFAULT_POOL = "metaauto-trials"


@dataclass(frozen=True)
class Deployment:
    """One deployment: which flow (by entrypoint), how it is named, scheduled, parametrised and placed."""

    flow: str  # the flow's name, as its @flow(name=...) says
    entrypoint: str  # path/to/file.py:function, relative to the repository root
    name: str = "on-demand"
    cron: Optional[str] = None
    parameters: dict[str, Any] = field(default_factory=dict)
    work_pool: Optional[str] = None  # None: served in-process, or the user's default pool
    tags: tuple[str, ...] = ("metaauto",)
    description: Optional[str] = None  # None: the flow's docstring
    served: bool = True  # run by `metaauto serve`

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


#: flow name -> entrypoint, in the order `metaauto serve` registers them (main job last)
FLOWS: dict[str, str] = {
    "ingest-collection": "flows/ingest.py:ingest_collection",
    "search-learners": "flows/search.py:search_learners",
    "evaluate-and-promote": "flows/evaluate.py:evaluate_and_promote",
    "transfer-to-domain": "flows/transfer.py:transfer_to_domain",
    MAIN_FLOW: "flows/pipeline.py:meta_pipeline",
    WORKER_FLOW: "flows/worker.py:search_worker",
}

OVERRIDES: dict[str, dict[str, Any]] = {
    MAIN_FLOW: dict(name="nightly", cron=NIGHTLY_CRON,
                    description="The main job: ingest, search, evaluate and promote, nightly on the default collection."),
    WORKER_FLOW: dict(name="scaleout", work_pool=DEFAULT_POOL, tags=("metaauto", "scaleout"), served=False,
                      description="Joins a study and runs its trials until it has them all "
                                  "(submitted by search-learners with workers > 0)."),
}

DEPLOYMENTS: tuple[Deployment, ...] = tuple(
    Deployment(flow=name, entrypoint=entrypoint, **OVERRIDES.get(name, {})) for name, entrypoint in FLOWS.items()
)


def deployment(flow: str) -> Deployment:
    return next(d for d in DEPLOYMENTS if d.flow == flow)


def checkout() -> Path:
    """The source checkout whose ``flows/`` the deployments run (their working directory)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "flows" / "__init__.py").is_file():
        raise MetaautoError(f"{root} has no flows/ package: deployments run the flows of a source checkout")
    return root


def load_flow(entrypoint: str) -> Any:
    """The flow at ``entrypoint`` (``flows/x.py:function``), imported as a module of the ``flows`` package."""
    from prefect.flows import load_flow_from_entrypoint

    path, _, function = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    if importlib.util.find_spec(module.partition(".")[0]) is None:  # a checkout installed before flows/ existed
        sys.path.insert(0, str(checkout()))
    try:
        return load_flow_from_entrypoint(f"{module}.{function}", use_placeholder_flow=False)
    except (ImportError, AttributeError) as exc:
        raise MetaautoError(f"cannot load the flow {entrypoint} ({exc}); run from the repository root") from exc


def served(nightly_cron: Optional[str] = NIGHTLY_CRON) -> list[Any]:
    """The deployments ``metaauto serve`` runs, built from their flows (``nightly_cron=None``: no schedule)."""
    built = []
    for spec in DEPLOYMENTS:
        if not spec.served:
            continue
        if spec.flow == MAIN_FLOW:
            spec = replace(spec, cron=nightly_cron)
        built.append(load_flow(spec.entrypoint).to_deployment(
            name=spec.name, cron=spec.cron, parameters=spec.parameters or None, tags=list(spec.tags),
            description=spec.description))
    return built


def apply_worker_deployment(api: str, pool: str) -> str:
    """Create (or update) ``search-worker/scaleout`` on the Prefect server at ``api``, on work pool ``pool``,
    running the flow from this checkout; returns its full name."""
    from prefect import Flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    spec = deployment(WORKER_FLOW)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        source = Flow.from_source(source=str(checkout()), entrypoint=spec.entrypoint)
        # not flow.deploy(): in Prefect 3.8.8 it asks the server for the pool's workers with limit=None, which the
        # server rejects (422); the deployment it would create is this one (a set_working_directory pull step)
        built = source.to_deployment(name=spec.name, work_pool_name=pool, tags=list(spec.tags),
                                     parameters=spec.parameters or None, description=spec.description)
        built.apply(work_pool_name=pool)
    return spec.full_name


def prefect_yaml() -> str:
    """``prefect.yaml`` for ``prefect deploy --all`` (no pull step: Prefect sets the working directory to
    the checkout deployed from; build an image and add one for Kubernetes pools)."""
    import prefect
    import yaml

    entries = []
    for spec in DEPLOYMENTS:
        entry: dict[str, Any] = {"name": spec.name, "entrypoint": spec.entrypoint, "tags": list(spec.tags)}
        if spec.description:
            entry["description"] = spec.description
        entry["parameters"] = dict(spec.parameters)
        entry["schedules"] = [{"cron": spec.cron, "timezone": "UTC"}] if spec.cron else []
        entry["work_pool"] = {"name": spec.work_pool}
        entries.append(entry)
    header = ("# Generated by `python -m metaauto.platform.deployments > prefect.yaml` from the table in\n"
              "# metaauto/platform/deployments.py (tests/test_deployments.py checks that they agree).\n"
              "# `prefect deploy --all` from the repository root creates these deployments; those with no work\n"
              "# pool go to PREFECT_DEFAULT_WORK_POOL_NAME (e.g. a Kubernetes pool, infra/README.md).\n")
    document = {"name": "metaauto", "prefect-version": prefect.__version__.split("+")[0], "build": None,
                "push": None, "deployments": entries}
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


if __name__ == "__main__":  # pragma: no cover - regenerates prefect.yaml
    sys.stdout.write(prefect_yaml())
