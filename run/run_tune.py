"""Console-script wrapper: ``python run/run_tune.py --help``."""

import sys

from recbole_hymoe.cli import run_tune_main

if __name__ == "__main__":
    sys.exit(run_tune_main())
