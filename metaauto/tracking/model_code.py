"""Entry point of metaauto's pyfunc models ("models from code").

MLflow copies this file into every logged model and runs it on load; it names the model class instead
of pickling an instance. The class reads the learner's safetensors weights and JSON config from the
model's ``learner`` artifact (see :class:`metaauto.downstream.pyfunc.MetaLearnerPyfunc`).
"""

import mlflow

from metaauto.downstream.pyfunc import MetaLearnerPyfunc

mlflow.models.set_model(MetaLearnerPyfunc())
