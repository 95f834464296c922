"""Console-script wrapper: ``python run/run_speed.py --help``."""

import sys

from recbole_hymoe.cli import run_speed_main

if __name__ == "__main__":
    sys.exit(run_speed_main())
