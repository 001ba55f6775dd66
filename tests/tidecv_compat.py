"""tidecv 1.0.1, the reference our TIDE is tested against, made to run quietly in a test process.

Only tests (and the speed script, which borrows this) import tidecv; its shims live here and nowhere else.
"""
import importlib


class _NoPlotter:
    """tidecv's Plotter restyles matplotlib for the whole process (seaborn's whitegrid, 150 dpi) and creates a data
    directory in the home as soon as ``TIDE()`` is built; we only need tidecv's numbers."""


def import_tidecv():
    tidecv = importlib.import_module("tidecv")
    tidecv.plotting.Plotter = _NoPlotter
    return tidecv
