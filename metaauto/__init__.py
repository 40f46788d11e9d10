"""metaauto: pipeline-orchestrated AutoML for meta-learning.

The library is layered so that each layer can be used alone: ``metaauto.tasks`` (task collections),
``metaauto.learners`` and ``metaauto.backbones`` (model-agnostic learners on ``torch.func``),
``metaauto.engine`` (meta-training) and ``metaauto.evaluation`` (meta-test figures with baselines).
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy, so `import metaauto` stays light (no torch/MLflow)
    if name == "load":
        from metaauto.downstream.loading import load

        return load
    raise AttributeError(f"module 'metaauto' has no attribute {name!r}")
