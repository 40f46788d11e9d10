"""Checks on episode requests shared by every collection, so that they fail alike and early."""

from __future__ import annotations

from metaauto.errors import CollectionError


def check_episode(
    collection: str, ways: int | None, shots: int, queries: int, tasks: int, *, classification: bool
) -> int:
    """Validate the integer arguments of ``sample``; returns ``ways`` (0 for regression, where it is unused)."""
    for arg, value, low in (("shots", shots, 1), ("queries", queries, 1), ("tasks", tasks, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise CollectionError(f"collection {collection!r}: {arg} must be an integer >= {low}, got {value!r}")
    if not classification:
        return 0
    if not isinstance(ways, int) or isinstance(ways, bool) or ways < 1:
        raise CollectionError(
            f"collection {collection!r} is a classification collection: ways must be an integer >= 1, got {ways!r}"
        )
    return ways
