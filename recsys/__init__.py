"""Core of the text-aware recommender: schemas, loaders, id maps, splits, metrics, config, CLI.

This package imports nothing from ``features``, ``training`` or ``serving``.
"""

__version__ = "0.1.0"
