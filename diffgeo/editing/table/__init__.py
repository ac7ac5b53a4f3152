"""The edit-quality table: every edit method on every factor of the embedded models, with the field's
columns (success, preservation, validity, SSIM, transfer, time), chosen on calibration samples and
measured on held-out ones. Tasks and scoring: :mod:`~diffgeo.editing.table.tasks`; methods:
:mod:`~diffgeo.editing.table.methods`; the run and its files: :mod:`~diffgeo.editing.table.run`.

>>> from diffgeo.editing.table import TASKS, METHODS
>>> len(TASKS["shapes"]), "loco" in METHODS
(5, True)
"""

from diffgeo.editing.table.methods import METHODS, Candidate
from diffgeo.editing.table.run import FRACTIONS, EditQualityRow, EditQualityTable, run_task, save_strips
from diffgeo.editing.table.tasks import TASKS, TOLERANCE, Samples, Task, pick_samples, read, score, task

__all__ = ["TASKS", "TOLERANCE", "METHODS", "FRACTIONS", "Candidate", "EditQualityRow", "EditQualityTable", "Samples",
           "Task", "pick_samples", "read", "score", "task", "run_task", "save_strips"]
