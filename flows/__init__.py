"""Prefect flows wiring the mnist_pipeline stages together."""
