"""A self-contained HTML report of a run or of a multirun sweep, rendered from Results objects.

    python -m advlab.report outputs/fgsm_defense/DATE        # a run: writes report.html there
    python -m advlab.report multirun/fgsm_defense/DATE       # a sweep: its summary, its report and every run's

A run writes its report from memory right after it ends (write_run_report); Hydra's callback
SweepSummary (registered in conf/config.yaml) writes a sweep's summary (advlab.sweep) and report
when the multirun ends; the command line reads results.json with Results.load.

One file that opens anywhere, offline, and can be mailed or archived: figures are
embedded as base64 data URIs, the style is inline, nothing is fetched. Every piece
of text from results.json is escaped, so a run name or override cannot inject markup.
A few lines of inline script record, once the page has loaded, how many images
decoded and how many tables there are (body data-images="loaded/total",
data-tables="N"), so a headless browser can check the page really renders.
"""

from advlab.report.cli import main, write_report
from advlab.report.page import REPORT
from advlab.report.run import run_report, write_run_report
from advlab.report.sweep import SweepSummary, sweep_heatmaps, sweep_report, write_sweep_files, write_sweep_report

__all__ = ["REPORT", "main", "write_report", "run_report", "write_run_report", "sweep_report", "write_sweep_report",
           "write_sweep_files", "sweep_heatmaps", "SweepSummary"]
