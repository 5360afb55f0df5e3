"""Serving: recommendations from a model bundle, the MLflow pyfunc wrapper, batch ranking."""
