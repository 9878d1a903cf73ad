"""python -m advlab.report RUN_OR_SWEEP_DIR"""

from advlab.report.cli import main

if __name__ == "__main__":
    main()
