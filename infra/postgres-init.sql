-- One PostgreSQL, one database per consumer (the metaauto role owns them all).
CREATE DATABASE mlflow OWNER metaauto;
CREATE DATABASE prefect OWNER metaauto;
CREATE DATABASE optuna OWNER metaauto;
