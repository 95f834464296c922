"""Console-script wrapper: ``python run/run_time_to_quality.py --help``."""

import sys

from recbole_hymoe.cli import run_time_to_quality_main

if __name__ == "__main__":
    sys.exit(run_time_to_quality_main())
