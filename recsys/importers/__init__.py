"""Importers: public dataset layouts -> the canonical data folder (see README, 'Data formats').

- :mod:`recsys.importers.movielens`: MovieLens 100K (``u.data``, ``u.item``) and the
  ml-latest CSV layout, joined with optional description files.
- :mod:`recsys.importers.mind`: MIND ``behaviors.tsv`` + ``news.tsv`` with impressions.
- :mod:`recsys.importers.recbole`: RecBole atomic files (``X.inter`` + ``X.item``) and the
  UniSRec split layout (``X.{train,valid,test}.inter`` + ``X.text``/``X.item``).
- :mod:`recsys.importers.sequences`: ``X.inter.json`` (user -> items in order) + ``X.item.json``.
- :mod:`recsys.importers.ordered`: synthetic times for order-only logs (shared by the last two).

Malformed input raises :class:`recsys.errors.DataValidationError` naming the file and line.
"""
