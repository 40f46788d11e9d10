"""Registry commands for the ``metaauto`` CLI (wired into :mod:`metaauto.cli`).

``metaauto rollback NAME`` gives ``champion`` back to the ``previous`` version;
``metaauto promote NAME VERSION`` re-runs the promotion test for a registered version by hand;
``metaauto train ... --register NAME`` registers and promotes through :func:`metaauto.tracking.train_tracked`.
"""

from __future__ import annotations

from typing import Optional

import typer

TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under $METAAUTO_HOME/mlflow)."


def _client(tracking_uri: Optional[str]):  # noqa: ANN202
    from metaauto.tracking.store import get_client

    return get_client(tracking_uri)


def rollback(
    name: str = typer.Argument(..., help="Registered model name."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP),
) -> None:
    """Move the champion alias back to the previous champion."""
    from metaauto.registry import rollback as do_rollback

    result = do_rollback(name, client=_client(tracking_uri))
    after = f"v{result.previous}" if result.previous else "none"
    typer.echo(f"{name}: champion v{result.demoted} -> v{result.champion}; previous -> {after}")


def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Version to promote if it beats the champion."),
    margin: float = typer.Option(0.0, help="Minimum mean improvement per task (accuracy points as fractions, or MSE)."),
    alpha: float = typer.Option(0.05, help="Significance level of the one-sided paired test."),
    test: str = typer.Option("wilcoxon", help="Paired test: wilcoxon or ttest."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP),
) -> None:
    """Promote VERSION to champion if it is measurably better on the same meta-test episodes."""
    from metaauto.registry import promote as do_promote

    decision = do_promote(name, version, client=_client(tracking_uri), margin=margin, alpha=alpha, test=test)
    typer.echo(decision.describe())
    if not decision.promoted:
        raise typer.Exit(1)


def tracking_summary(tracked: "object") -> dict:
    """JSON-ready account of a tracked run, for ``metaauto train``'s report (``--json`` included).

    A thin wrapper kept for the CLI: the account itself is :meth:`metaauto.tracking.TrackedTraining.summary`.
    """
    return tracked.summary().to_dict()
