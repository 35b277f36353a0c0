"""Orchestration: config schema, content-addressed stage cache, MLflow tracking, Hydra callbacks."""
