"""Fitting: text-model fine-tuning, the LightGBM ranker, evaluation, the MLflow pipeline."""
