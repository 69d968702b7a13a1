"""Projections: views of the event log for the UI, the REST API and auditors.

:class:`Projector` folds stored records into unit and run views (rebuildable from zero by
replaying the log); :func:`csv_rows` and :func:`jsonl_lines` stream one run's exports.
"""

from pectus.projections.export import csv_rows, jsonl_lines
from pectus.projections.views import Delta, Projector

__all__ = ["Delta", "Projector", "csv_rows", "jsonl_lines"]
