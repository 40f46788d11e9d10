"""The downstream side: load a registered meta-model, adapt it to a task (scikit-learn estimators), serve it
(MLflow pyfunc)."""
