"""Small synthetic episodes for the learner tests (the real collections are tested elsewhere).

``gaussian_episodes`` is a few-shot classification family whose classes differ only in the first
``informative`` dimensions while the remaining ones carry large class-independent noise: a learner has
to meta-learn which features matter, so accuracy rises well above what a random network gets.
"""

from __future__ import annotations

import torch

from metaauto.tasks.batch import TaskBatch


def gaussian_episodes(
    tasks: int,
    ways: int = 3,
    shots: int = 5,
    queries: int = 10,
    dim: int = 16,
    informative: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TaskBatch:
    gen = torch.Generator().manual_seed(seed)
    means = torch.zeros(tasks, ways, 1, dim, dtype=dtype)
    means[..., :informative] = 2.0 * torch.randn(tasks, ways, 1, informative, generator=gen, dtype=dtype)
    scale = torch.full((dim,), 3.0, dtype=dtype)
    scale[:informative] = 0.5

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = means + scale * torch.randn(tasks, ways, per_class, dim, generator=gen, dtype=dtype)
        y = torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1)
        return x.reshape(tasks, ways * per_class, dim), y.contiguous()

    support_x, support_y = draw(shots)
    query_x, query_y = draw(queries)
    return TaskBatch(support_x, support_y, query_x, query_y, "classification", ways=ways, shots=shots)
