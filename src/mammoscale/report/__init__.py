"""After the cells: the tables, the figures and the standalone report that judges the paper's claims.

- :mod:`~mammoscale.report.tables`: ``runs.csv`` (every configured cell), ``speedups.csv``,
  ``pipeline.csv``;
- :mod:`~mammoscale.report.claims`: the published claims as data, and a verdict for each;
- :mod:`~mammoscale.report.captions`: the figures by name, caption and category (no matplotlib);
- :mod:`~mammoscale.report.figures`: the seven figures; :mod:`~mammoscale.report.plots`: their
  common drawing conventions and :func:`~mammoscale.report.plots.save`;
- :mod:`~mammoscale.report.page`: the self-contained HTML report;
- :mod:`~mammoscale.report.snapshot`: all of it from whatever has finished so far.

Imports: pandas, numpy, matplotlib and seaborn (figures only), and :mod:`~mammoscale.files`,
:mod:`~mammoscale.plan`, :mod:`~mammoscale.stats`; never torch. Its source, and that of what it
imports, is the digest the post-cell rules carry (:mod:`mammoscale.plan.digest`).
"""
