"""`python -m advlab.report RUN_OR_SWEEP_DIR`: (re)write the HTML report of a finished run or sweep from its
results files."""

import argparse
from pathlib import Path

from advlab.report.run import write_run_report
from advlab.report.sweep import write_sweep_report
from advlab.results import Results
from advlab.sweep import job_results, write_sweep_summary

def write_report(path: str | Path) -> Path:
    """From results.json on disk: report.html of a run folder (holds results.json), or of a sweep folder (holds
    */results.json) with its summary files and any missing run report. Returns the report's path."""
    path = Path(path)
    if (path / "results.json").is_file():
        return write_run_report(path, Results.load(path / "results.json"))
    jobs = job_results(path)
    if not jobs:
        raise ValueError(f"{path}: neither a run folder (results.json) nor a sweep folder (*/results.json)")
    write_sweep_summary(path, jobs)
    return write_sweep_report(path, jobs)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m advlab.report", description="(Re)write the HTML report of a run or sweep folder.")
    parser.add_argument("path", help="a run folder (with results.json) or a sweep folder (with */results.json)")
    args = parser.parse_args(argv)
    try:
        out = write_report(args.path)
    except ValueError as error:
        parser.error(str(error))
    print(out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
