"""Meta-learners over any ``torch.nn.Module``: gradient-based (one composable learner) and metric-based."""

from metaauto.learners.base import EpisodeOutput, Learner
from metaauto.learners.gradient import ANIL, FOMAML, GradientLearner, MetaSGD, Reptile
from metaauto.learners.metric import MatchingNet, MetricLearner, ProtoNet, RelationNet
from metaauto.learners.catalog import LEARNERS, available_learners, learner_defaults, make_learner
from metaauto.learners.serialization import load_learner, read_learner_info, save_learner

__all__ = [
    "ANIL",
    "FOMAML",
    "LEARNERS",
    "EpisodeOutput",
    "GradientLearner",
    "Learner",
    "MatchingNet",
    "MetaSGD",
    "MetricLearner",
    "ProtoNet",
    "RelationNet",
    "Reptile",
    "available_learners",
    "learner_defaults",
    "load_learner",
    "make_learner",
    "read_learner_info",
    "save_learner",
]
