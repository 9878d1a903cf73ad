"""A progress bar with an ETA for long evaluations, on stderr, silent where nobody watches it.

One unit of work is one attack at one eps on one batch, so the bar's rate and ETA settle
after the first batch (every batch holds the same mix of cheap and costly attacks).
"""

import os
import sys

from tqdm import tqdm

QUIET_VARIABLE = "ADVLAB_QUIET"


def progress_enabled(progress: bool | None, rank: int = 0) -> bool:
    """Whether to show the bar.

    Never on ranks other than 0 (one bar per job) or when ADVLAB_QUIET is 1/true/yes (CI
    sets it to silence every run, whatever the config says). Otherwise progress=True shows
    it, False hides it, and None (auto) shows it only when stderr is a terminal, so logs and
    redirected output stay free of bar updates.
    """
    if rank != 0 or progress is False or os.environ.get(QUIET_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return False
    return progress is True or sys.stderr.isatty()


def progress_bar(total: int | None, enabled: bool, desc: str = "evaluation") -> tqdm:
    """A tqdm bar over `total` units (None: unknown, the bar then shows the rate but no ETA);
    when not enabled, an object with the same update/close methods that prints nothing."""
    # leave=True: the finished bar stays, with the evaluation's total time.
    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                leave=True)
