"""The HTML report of a brainlens run.

:func:`build_report` is the single entry point (the Snakemake rule ``report`` calls it):
it reads the workflow's result tables and writes one self-contained page with its
figures, organised as

1. header: question, headline numbers, one-paragraph summary;
2. dataset and QC (:mod:`~brainlens.report.dataset`);
3. folds (:mod:`~brainlens.report.dataset`);
4. model performance (:mod:`~brainlens.report.performance`);
5. attribution maps (:mod:`~brainlens.report.attribution`, :mod:`~brainlens.report.brainmaps`);
6. regions (:mod:`~brainlens.report.attribution`);
7. "is the map meaningful?" (:mod:`~brainlens.report.meaning`).

HTML helpers live in :mod:`~brainlens.report.html`, figures in
:mod:`~brainlens.report.plots`, file reading in :mod:`~brainlens.report.io`.
"""

from brainlens.report.build import build_report

__all__ = ["build_report"]
