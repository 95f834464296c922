"""Console-script wrapper: ``python run/run_bench.py --help``."""

import sys

from recbole_hymoe.cli import run_bench_main

if __name__ == "__main__":
    sys.exit(run_bench_main())
