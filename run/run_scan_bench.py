"""Console-script wrapper: ``python run/run_scan_bench.py --help``."""

import sys

from recbole_hymoe.cli import run_scan_bench_main

if __name__ == "__main__":
    sys.exit(run_scan_bench_main())
