"""Train and evaluate a model: ``python run/run_recbole.py --model=HyMoERec --dataset=ml-100k``."""

import sys

from recbole_hymoe.cli import run_recbole_main

if __name__ == "__main__":
    sys.exit(run_recbole_main())
