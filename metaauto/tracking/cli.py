"""Transitional: ``tracking_summary`` moved to :mod:`metaauto.tracking.summary` and the typer commands to
:mod:`metaauto.cli.models`. ``metaauto.search.study`` and ``flows/evaluate.py`` still import it from here
until the search branch of issue 13 lands; delete this module then."""

from metaauto.tracking.summary import tracking_summary

__all__ = ["tracking_summary"]
