"""Meta-test evaluation: mean +- 95% CI over many episodes, baselines on the same episodes, curves."""

from metaauto.evaluation.baselines import Baseline, PretrainBaseline, ScratchBaseline, default_baselines
from metaauto.evaluation.curves import AdaptationCurve, adaptation_curve
from metaauto.evaluation.metrics import mean_ci95, paired_difference
from metaauto.evaluation.protocol import Comparison, EvaluationResult, compare, evaluate, iter_episodes
from metaauto.evaluation.report import EvaluationReport, Estimate, MetaTestEpisodes, MetaTestSummary, MethodScore

__all__ = [
    "AdaptationCurve",
    "Baseline",
    "Comparison",
    "EvaluationReport",
    "EvaluationResult",
    "Estimate",
    "MetaTestEpisodes",
    "MetaTestSummary",
    "MethodScore",
    "PretrainBaseline",
    "ScratchBaseline",
    "adaptation_curve",
    "compare",
    "default_baselines",
    "evaluate",
    "iter_episodes",
    "mean_ci95",
    "paired_difference",
]
