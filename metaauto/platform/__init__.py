"""The platform metaauto runs on: local servers (Prefect + MLflow on SQLite), the PostgreSQL scale-out stack,
their deployments and workers."""
