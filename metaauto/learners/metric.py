"""Metric-based learners: classify queries by comparing embeddings with the support set.

Every task's support and query examples are embedded together, and all tasks of a meta-batch in one
vectorised call of the model (``torch.func.vmap`` over the task dimension with shared weights, which
folds into one large forward). Embedding per task rather than as one pooled batch matters for
backbones whose BatchNorm uses batch statistics (``conv4``): each task is normalised with its own
statistics, so a task's loss never depends on which other tasks share its meta-batch, and training,
``adapt()`` and evaluation see the same function. The per-task work that remains (prototypes,
attention, relation scores) is small batched tensor algebra.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from metaauto.errors import LearnerError
from metaauto.learners.base import EpisodeOutput, Learner
from metaauto.learners.episodes import check_task_type, episode_ways, per_task_metric
from metaauto.tasks.batch import TaskBatch


class MetricLearner(Learner):
    """Shared machinery: batched embedding, scoring, and the per-task metric."""

    family: ClassVar[str] = "metric"
    task_types: ClassVar[tuple[str, ...]] = ("classification",)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, vectorize: bool | str = "auto", chunk_size: int | str | None = "auto") -> None:
        super().__init__(model, vectorize=vectorize, chunk_size=chunk_size)

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        return (*cls.defaults, "vectorize", "chunk_size")

    def execution_hparams(self) -> dict[str, Any]:
        """Execution options that differ from the default, so that a saved learner rebuilds the same way."""
        options = {"vectorize": self.vectorize, "chunk_size": self.chunk_size}
        return {k: v for k, v in options.items() if v != "auto"}

    def embed(self, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings ``[tasks, S, D]`` and ``[tasks, Q, D]``, each task's examples embedded together."""
        shots = support_x.shape[1]
        inputs = torch.cat([support_x, query_x], dim=1)

        def vectorized() -> torch.Tensor:
            state = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
            chunk_size = self.vmap_chunk_size(inputs.device)
            return vmap(lambda x: functional_call(self.model, state, (x,)), chunk_size=chunk_size)(inputs)

        def looped() -> torch.Tensor:
            return torch.stack([self.model(x) for x in inputs])

        embeddings = self._run_tasks(vectorized, looped).flatten(2)
        return embeddings[:, :shots], embeddings[:, shots:]

    @abc.abstractmethod
    def scores(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """Per-class scores ``[tasks, Q, ways]`` (argmax is the prediction)."""

    def episode_loss(self, scores: torch.Tensor, query_y: torch.Tensor, ways: int) -> torch.Tensor:
        """Mean over tasks of the mean query loss; cross-entropy on scores read as logits by default."""
        return F.cross_entropy(scores.flatten(0, 1), query_y.flatten())

    def forward_episodes(self, batch: TaskBatch, *, inner_steps: int | None = None) -> EpisodeOutput:
        """Score every query of every task; ``inner_steps`` has no meaning here and is ignored."""
        check_task_type(self.name, self.task_types, batch)
        ways = episode_ways(batch)
        support, query = self.embed(batch.support_x, batch.query_x)
        scores = self.scores(support, batch.support_y, query, ways)
        return EpisodeOutput(
            loss=self.episode_loss(scores, batch.query_y, ways),
            query_output=scores.detach(),
            per_task_metric=per_task_metric(scores, batch.query_y, "classification"),
        )

    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor, *, inner_steps: int | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A predictor for one task; support and query are embedded together, as in ``forward_episodes``."""
        if support_y.is_floating_point():
            raise LearnerError(f"learner {self.name!r} solves classification tasks only; got float (regression) targets")
        ways = int(support_y.max().item()) + 1

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            support, query = self.embed(support_x.unsqueeze(0), query_x.unsqueeze(0))
            return self.scores(support, support_y.unsqueeze(0), query, ways)[0]

        return predict

    @staticmethod
    def class_sums(support: torch.Tensor, support_y: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class sums of support embeddings ``[tasks, ways, D]`` and counts ``[tasks, ways, 1]``."""
        onehot = F.one_hot(support_y, ways).to(support.dtype)
        return onehot.transpose(1, 2) @ support, onehot.sum(dim=1).unsqueeze(-1)


class ProtoNet(MetricLearner):
    """Prototypical networks: logits are negative (squared Euclidean) distances to class means.

    ``distance="cosine"`` uses the cosine similarity to the prototypes as logits instead.
    """

    name = "protonet"
    #: Snell et al. 2017, "Prototypical Networks": squared Euclidean distance (their Omniglot runs
    #: train with 60-way episodes and Adam at 1e-3, halved every 2000 episodes).
    defaults = {"distance": "euclidean"}

    def __init__(
        self, model: nn.Module, *, distance: str = "euclidean", vectorize: bool | str = "auto",
        chunk_size: int | str | None = "auto",
    ) -> None:
        super().__init__(model, vectorize=vectorize, chunk_size=chunk_size)
        if distance not in ("euclidean", "cosine"):
            raise LearnerError(f"protonet distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.distance = distance

    def hparams(self) -> dict[str, Any]:
        return {"distance": self.distance, **self.execution_hparams()}

    def scores(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        sums, counts = self.class_sums(support, support_y, ways)
        prototypes = sums / counts.clamp_min(1)
        if self.distance == "cosine":
            return F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)
        return -(query.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(dim=-1)


class MatchingNet(MetricLearner):
    """Matching networks with cosine attention over the support set.

    A query's class distribution is the softmax-of-cosine attention over the support examples summed per
    class; ``query_output`` holds its logarithm and the loss is the negative log-likelihood. The
    full-context embeddings (the LSTMs of Vinyals et al.) are not included: both sets use the model's
    embedding as is.
    """

    name = "matchingnet"
    #: Vinyals et al. 2016, "Matching Networks for One Shot Learning": cosine attention kernel.
    defaults: ClassVar[dict[str, Any]] = {}

    def hparams(self) -> dict[str, Any]:
        return self.execution_hparams()

    def scores(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)  # [T, Q, S]
        log_attention = F.log_softmax(cosine, dim=-1)
        # log of the attention mass per class, computed in log space so no probability underflows to log(0)
        class_mask = F.one_hot(support_y, ways).transpose(1, 2).unsqueeze(1)  # [T, 1, W, S]
        masked = log_attention.unsqueeze(2).masked_fill(class_mask == 0, float("-inf"))
        return torch.logsumexp(masked, dim=-1)

    def episode_loss(self, scores: torch.Tensor, query_y: torch.Tensor, ways: int) -> torch.Tensor:
        return F.nll_loss(scores.flatten(0, 1), query_y.flatten())


class RelationNet(MetricLearner):
    """Relation networks: a learned relation module scores each (class, query) pair of embeddings.

    The class representation is the sum of its support embeddings (Sung et al. 2018). The relation
    module, registered on the learner as ``learner.relation``, is ``Linear(2D, hidden) -> LayerNorm ->
    ReLU -> Linear(hidden, 1)`` over concatenated flat embeddings and outputs a relation logit (the
    paper's conv relation blocks work on feature maps; with flat embeddings only its fully connected
    part applies, and the paper's BatchNorm becomes a per-pair LayerNorm so that no pair's score depends
    on the other pairs and ``torch.func`` transforms stay valid).

    Why the normalisation: without it a narrow head (the paper's 8 units) over a conv4 embedding
    (non-negative, 64 wide) starts with most ReLUs dead or saturating the sigmoid; the MSE gradient
    then vanishes and the module collapses to the constant ``1/ways`` (accuracy stuck at chance, loss
    ``(ways-1)/ways**2``). Normalising the hidden pre-activations keeps about half of them active.

    ``loss="mse"`` (the paper's): scores are ``sigmoid(logit)`` in (0, 1) regressed onto one-hot targets.
    ``loss="cross_entropy"``: scores are the logits themselves, trained with softmax cross-entropy
    over the classes; it usually trains faster. The prediction (argmax) is the same function of the
    logits either way.
    """

    name = "relationnet"
    #: Sung et al. 2018, "Learning to Compare": FC layers of 8 and 1 units, MSE loss (Adam, 1e-3).
    defaults = {"hidden": 8}
    losses: ClassVar[tuple[str, ...]] = ("mse", "cross_entropy")

    def __init__(
        self, model: nn.Module, *, hidden: int = 8, embedding_dim: int | None = None, loss: str = "mse",
        vectorize: bool | str = "auto", chunk_size: int | str | None = "auto",
    ) -> None:
        super().__init__(model, vectorize=vectorize, chunk_size=chunk_size)
        if embedding_dim is None:
            embedding_dim = getattr(model, "out_dim", None)
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise LearnerError(
                f"relationnet needs the width of the model's embedding to size its relation module, and "
                f"{type(model).__name__} has no integer out_dim attribute; pass embedding_dim="
            )
        if isinstance(hidden, bool) or int(hidden) != hidden or hidden < 1:
            raise LearnerError(f"relationnet hidden must be a positive integer, got {hidden!r}")
        if loss not in self.losses:
            raise LearnerError(f"relationnet loss must be one of {', '.join(map(repr, self.losses))}, got {loss!r}")
        self.hidden, self.embedding_dim, self.loss = int(hidden), embedding_dim, loss
        self.relation = nn.Sequential(
            nn.Linear(2 * embedding_dim, self.hidden), nn.LayerNorm(self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
        )

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        return ("hidden", "embedding_dim", "loss", "vectorize", "chunk_size")

    def hparams(self) -> dict[str, Any]:
        options = {"hidden": self.hidden, "embedding_dim": self.embedding_dim}
        if self.loss != "mse":  # only when it differs, so learners saved before the option load unchanged
            options["loss"] = self.loss
        return {**options, **self.execution_hparams()}

    def scores(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        if query.shape[-1] != self.embedding_dim:
            raise LearnerError(
                f"the model embeds examples into {query.shape[-1]} values but the relation module was built "
                f"for embedding_dim={self.embedding_dim}"
            )
        classes, _ = self.class_sums(support, support_y, ways)  # [T, W, D]
        tasks, queries, dim = query.shape
        pairs = torch.cat(
            [classes.unsqueeze(1).expand(tasks, queries, ways, dim), query.unsqueeze(2).expand(tasks, queries, ways, dim)],
            dim=-1,
        )
        logits = self.relation(pairs).squeeze(-1)
        return logits if self.loss == "cross_entropy" else torch.sigmoid(logits)

    def episode_loss(self, scores: torch.Tensor, query_y: torch.Tensor, ways: int) -> torch.Tensor:
        if self.loss == "cross_entropy":
            return super().episode_loss(scores, query_y, ways)
        return F.mse_loss(scores, F.one_hot(query_y, ways).to(scores.dtype))
