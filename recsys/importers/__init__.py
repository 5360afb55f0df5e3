"""Importers: public dataset layouts -> the canonical data folder (see README, 'Data formats').

- :mod:`recsys.importers.movielens`: MovieLens 100K (``u.data``, ``u.item``) and the
  ml-latest CSV layout, joined with optional description files.
- :mod:`recsys.importers.mind`: MIND ``behaviors.tsv`` + ``news.tsv`` with impressions.

Malformed input raises :class:`recsys.errors.DataValidationError` naming the file and line.
"""
