"""Errors raised on bad input.

They subclass :class:`ValueError` so that generic callers (pydantic, Prefect, the CLI) treat them as
"the user gave us something wrong" rather than as a bug. Each message names the file, column, task or
class at fault, because the person reading it usually cannot see the data we saw.
"""

from __future__ import annotations


class MetaautoError(Exception):
    """Base class of the errors metaauto raises on purpose."""


class CollectionError(MetaautoError, ValueError):
    """A task collection cannot be built or sampled as requested (bad file, column, split or episode)."""


class LearnerError(MetaautoError, ValueError):
    """A learner cannot be built for the given model, hyperparameters or task type."""


class TrainingError(MetaautoError, ValueError):
    """Training cannot start or resume as asked (unusable device, mismatched checkpoint, bad config)."""


class DivergenceError(TrainingError):
    """The meta-loss became NaN or infinite: the configuration (learning rates, no clipping) is bad, not the input.

    A distinct type so that a hyperparameter search can prune such a trial instead of failing it,
    without matching the message text.
    """
