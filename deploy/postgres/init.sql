-- Run once by the postgres image on an empty volume: one database for Dagster, one for MLflow.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
