"""The JSON-ready account of a tracked training run that ``metaauto train`` and the search report."""

from __future__ import annotations


def tracking_summary(tracked: "object") -> dict:
    """JSON-ready account of a tracked run, for ``metaauto train``'s report (``--json`` included)."""
    from metaauto.tracking.store import tracking_uri

    summary = {"tracking_uri": tracking_uri(), "run_id": tracked.run_id, "model_uri": tracked.model_uri}
    report = tracked.report
    summary["meta_test"] = {
        "metric": report["metric"],
        "tasks": report["episodes"]["tasks"],
        tracked.report["learner"]["name"]: {"mean": report["learner"]["mean"], "ci95": report["learner"]["ci95"]},
        **{name: {"mean": r["mean"], "ci95": r["ci95"]} for name, r in report["baselines"].items()},
    }
    if tracked.version is not None:
        summary["registered"] = {"name": tracked.version.name, "version": tracked.version.version}
    if tracked.decision is not None:
        summary["promotion"] = {**tracked.decision.to_dict(), "description": tracked.decision.describe()}
    return summary
