"""Command-line entry points (installed as console scripts; ``run/`` holds thin wrappers).

Each takes its own flags plus any ``--key=value`` config override, and fails on bad input
(:data:`~recbole_hymoe.errors.BAD_INPUT`: a config, dataset or atomic-file error) with a one-line
message and exit code 2, never a traceback.
"""

import argparse
import functools
import sys

from recbole_hymoe.config import parse_value
from recbole_hymoe.errors import BAD_INPUT, ConfigError
from recbole_hymoe.paths import find_file
from recbole_hymoe.quick_start import results_table, run


def parse_overrides(tokens):
    """Turn ``["--key=value", "--other", "value"]`` into ``{"key": "value", "other": "value"}``.

    Raises:
        ConfigError: a token is not an option, or an option has no value.
    """
    overrides, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: overrides look like --key=value")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"option --{key} has no value: write --{key}=value")
            value, i = tokens[i + 1], i + 1
        if key in overrides and overrides[key] != value:
            raise ConfigError(f"--{key} given twice with different values ({overrides[key]!r}, {value!r})")
        overrides[key] = value
        i += 1
    return overrides


def parsed_overrides(tokens):
    """:func:`parse_overrides` with each value parsed as :func:`~recbole_hymoe.config.parse_value` does."""
    return {key: parse_value(value) for key, value in parse_overrides(tokens).items()}


def bad_input_exits_2(main):
    """Make console script ``main`` report bad input on stderr and return 2 (prog name: ``main``'s name
    without ``_main``)."""
    prog = main.__name__.removesuffix("_main")

    @functools.wraps(main)
    def checked(argv=None):
        try:
            return main(argv)
        except BAD_INPUT as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2

    return checked


def config_files(text):
    """The files of ``--config_files`` (space-separated); ``yaml/…`` also names the package's own."""
    return [find_file(path) for path in text.split()] if text else []


DEFAULT_MODEL = "HyMoERec"
DEFAULT_DATASET = "ml-100k"


def _named_in(files, key):
    """The last value of ``key`` in the YAML ``files`` (None if none sets it or a file is missing)."""
    import yaml

    value = None
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                value = (yaml.safe_load(f) or {}).get(key, value)
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # Config reports unreadable files clearly
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole",
        description=(
            "Train and evaluate a recbole-hymoe or RecBole model with RecBole's trainer and "
            "evaluator. Any other --key=value overrides a config key (highest priority)."
        ),
    )
    parser.add_argument("--model", "-m", default=None,
                        help="model name, plugin or RecBole built-in (default: the config files', else HyMoERec)")
    parser.add_argument("--dataset", "-d", default=None,
                        help="dataset name (default: the config files', else ml-100k)")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for distributed training")
    parser.add_argument("--ip", default="localhost", help="master address (distributed)")
    parser.add_argument("--port", default="5678", help="master port (distributed)")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes (distributed)")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node (distributed)")
    return parser


@bad_input_exits_2
def run_recbole_main(argv=None):
    """``run_recbole``: same flags as RecBole's ``run_recbole.py`` plus ``--key=value`` overrides.

    Returns:
        int: 0 on success, 2 for bad input (message on stderr, no traceback).
    """
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    files = config_files(args.config_files)
    result = run(
        model=args.model or _named_in(files, "model") or DEFAULT_MODEL,
        dataset=args.dataset or _named_in(files, "dataset") or DEFAULT_DATASET,
        config_file_list=files or None,
        cmd_args=parse_overrides(rest),  # Config parses the values, as RecBole's command line
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
    )
    if result is not None:
        print("\n" + results_table(result))
        print(f"run folder: {result['run_dir']}")
        print(f"checkpoint: {result['checkpoint']}")
    return 0


@bad_input_exits_2
def run_speed_main(argv=None):
    """``run_speed``: time training steps, evaluation and memory of the regimes and models.

    Returns:
        int: 0 on success, 2 for bad input.
    """
    from recbole_hymoe.bench.speed import VARIANT_SETS, run_speed_benchmark, speed_table, suite_variants
    from recbole_hymoe.bench.suite import Suite

    parser = argparse.ArgumentParser(
        prog="run_speed",
        description="Speed benchmark: RecBole SASRec (prefix), the SASRec-equivalent and HyMoERec in both "
        "training regimes, timed in one process; ratios against RecBole SASRec. Any other "
        "--key=value overrides a config key for every variant.",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--variants", default="default", choices=sorted(VARIANT_SETS),
                        help="default: SASRec/SASRec-equivalent/HyMoERec in both regimes; mamba: the Mamba hosts; "
                        "all_positions: every all-positions model, no prefix run (for ML-1M-sized data)")
    parser.add_argument("--suite", default=None,
                        help="time a benchmark suite's model entries instead of a --variants set (each with its "
                        "config files, overrides and regime), e.g. yaml/bench/capacity-ml1m.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="results/speed", help="folder for speed.json and speed.md")
    parser.add_argument("--only", default=None,
                        help="comma-separated variant labels of the set to run (default: all of them)")
    parser.add_argument("--profile", action="store_true",
                        help="also write torch.profiler operator tables per variant (profile-<variant>.txt)")
    args, rest = parser.parse_known_args(argv)
    variants = suite_variants(Suite.from_file(args.suite)) if args.suite else VARIANT_SETS[args.variants]
    if args.only:
        labels = args.only.split(",")
        unknown = sorted(set(labels) - {v.label for v in variants})
        if unknown:
            source = args.suite or f"the {args.variants!r} set"
            raise ConfigError(f"--only: {unknown} are not variants of {source}; its variants: "
                              f"{[v.label for v in variants]}")
        variants = [v for v in variants if v.label in labels]
    report = run_speed_benchmark(
        args.dataset, config_files(args.config_files) or None, parsed_overrides(rest),
        variants=variants, steps=args.steps, rounds=args.rounds, out_dir=args.out,
        threads=args.threads, profile=args.profile,
    )
    print(speed_table(report))
    print(f"written to {args.out}")
    return 0


@bad_input_exits_2
def run_time_to_quality_main(argv=None):
    """``run_time_to_quality``: train each run of a spec to early stop; report time and quality.

    Returns:
        int: 0 on success, 2 for bad input.
    """
    from recbole_hymoe.bench.quality import run_time_to_quality, ttq_table

    parser = argparse.ArgumentParser(
        prog="run_time_to_quality",
        description="Train every run of a time-to-quality spec (yaml/experiment/ttq-*.yaml) to early stop and "
        "report wall time, epochs, best valid NDCG@10 and test metrics; resumes an interrupted "
        "benchmark. Any other --key=value overrides a config key for every run.",
    )
    parser.add_argument("--spec", required=True, help="spec file")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--runs", default=None,
                        help="labels of the runs to run, separated by '|' (default: all; the first is the reference)")
    args, rest = parser.parse_known_args(argv)
    labels = [label.strip() for label in args.runs.split("|")] if args.runs else None
    report = run_time_to_quality(args.spec, args.out, parsed_overrides(rest), labels)
    print(ttq_table(report))
    print(f"written to {args.out}")
    return 0


def run_scan_bench_main(argv=None):
    """``run_scan_bench``: the package's CPU selective scan against mambapy's parallel scan.

    Returns:
        int: 0.
    """
    from recbole_hymoe.bench.scan import run_scan_benchmark, scan_table

    parser = argparse.ArgumentParser(
        prog="run_scan_bench",
        description="Time one forward+backward of the selective scan (all inputs) for the package's CPU "
        "kernels and mambapy's parallel scan, and check the kernels against a float64 oracle.",
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--channels", type=int, default=128, help="expand * hidden size")
    parser.add_argument("--state", type=int, default=32)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results/scan", help="folder for scan.json and scan.md")
    args = parser.parse_args(argv)
    report = run_scan_benchmark(args.batch, args.length, args.channels, args.state,
                                tuple(int(t) for t in args.threads.split(",")), args.rounds, args.out)
    print(scan_table(report))
    print(f"written to {args.out}")
    return 0


@bad_input_exits_2
def run_tune_main(argv=None):
    """``run_tune``: a Ray Tune sweep over a sweep file's space (see yaml/tune/).

    Returns:
        int: 0 on success, 2 for bad input.
    """
    from pathlib import Path

    from recbole_hymoe.tuning import run_tune

    parser = argparse.ArgumentParser(
        prog="run_tune",
        description="Ray Tune sweep: trials report validation metrics every epoch, ASHA stops weak ones, "
        "the best is chosen on validation and tested once. Any other --key=value fixes a config key "
        "for every trial.",
    )
    parser.add_argument("--space", required=True, help="sweep file (yaml/tune/*.yaml)")
    parser.add_argument("--model", "-m", default=None, help="model (default: the sweep file's)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset (default: the sweep file's)")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--out", default=None, help="results folder (default: results/tune/<sweep file name>)")
    parser.add_argument("--scheduler", choices=["asha", "fifo"], default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (ASHA's max_t)")
    parser.add_argument("--grace-period", type=int, default=None, help="ASHA: epochs before a trial may be stopped")
    parser.add_argument("--reduction-factor", type=float, default=None, help="ASHA: keep 1/factor at each rung")
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--search", choices=["grid", "random", "tpe"], default=None)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as fit)")
    parser.add_argument("--max-failures", type=int, default=1, help="retries of a crashed trial")
    parser.add_argument("--address", default=None, help="existing Ray cluster (default: RAY_ADDRESS, else local)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    args, rest = parser.parse_known_args(argv)
    out = args.out or str(Path("results") / "tune" / Path(args.space).stem)
    report = run_tune(
        args.space, args.model, args.dataset, config_files(args.config_files) or None,
        parsed_overrides(rest), out, scheduler=args.scheduler, max_epochs=args.max_epochs,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, num_samples=args.num_samples,
        search=args.search, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures, address=args.address,
        num_cpus=args.num_cpus, resume=args.resume,
    )
    print((Path(out) / "results.md").read_text(encoding="utf-8"))
    print(f"written to {out}: trials.csv, results.md, best.yaml, report.json, {', '.join(report['plots'])}")
    unfinished = [t for t in report["trials"] if t["stop_reason"] in ("not started", "running", "no epoch finished")]
    if unfinished:
        print(f"{len(unfinished)} trial(s) did not finish; run the same command with --resume to finish them")
    return 0


@bad_input_exits_2
def run_bench_main(argv=None):
    """``run_bench``: a benchmark suite (models × datasets × seeds), then its report.

    Returns:
        int: 0 when every cell succeeded, 1 when some failed, 2 for bad input.
    """
    from pathlib import Path

    from recbole_hymoe.bench.report import write_report
    from recbole_hymoe.bench.runner import EXECUTORS, check_recorded_cells, run_suite
    from recbole_hymoe.bench.suite import Suite

    parser = argparse.ArgumentParser(
        prog="run_bench",
        description="Run every missing cell of a benchmark suite (yaml/bench/*.yaml) and write its report: "
        "tables with mean ± std over seeds, relative gains, paired Wilcoxon p-values, timings and "
        "plots. Any other --key=value overrides a config key for every cell.",
    )
    parser.add_argument("--suite", required=True, help="suite file")
    parser.add_argument("--out", default=None, help="results folder (default: results/bench/<suite name>)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one process per cell, in turn; ray: Ray tasks (local or --address)")
    parser.add_argument("--datasets", default=None, help="comma-separated datasets instead of the suite's")
    parser.add_argument("--models", default=None,
                        help="comma-separated model labels of the suite to run (default: all); the report covers all")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds to run (default: each model's); the report covers all")
    parser.add_argument("--cpus-per-cell", type=float, default=1)
    parser.add_argument("--address", default=None, help="existing Ray cluster (default: RAY_ADDRESS, else local)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from saved cells")
    args, rest = parser.parse_known_args(argv)
    overrides = parsed_overrides(rest)
    datasets = args.datasets.split(",") if args.datasets else None
    if args.report_only:
        suite = Suite.from_file(args.suite)
        if datasets:
            suite.datasets = datasets
        out = Path(args.out or Path("results") / "bench" / suite.name)
        check_recorded_cells(suite.cells(out, overrides))
        summary = {"failed": [], "busy": [], "report": write_report(suite, out)}
    else:
        labels = args.models.split(",") if args.models else None
        try:
            seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: comma-separated integers expected, e.g. 2023,2024") from None
        summary = run_suite(args.suite, args.out, args.executor, args.cpus_per_cell, args.address,
                            args.num_cpus, overrides, datasets, labels=labels, seeds=seeds)
        out = Path(args.out or Path("results") / "bench" / Suite.from_file(args.suite).name)
    print((out / "results.md").read_text(encoding="utf-8"))
    if not args.report_only:
        print(f"cells run: {summary['ran']}, already done: {summary['skipped']}, failed: {len(summary['failed'])}, "
              f"run by another process: {len(summary['busy'])}")
    for folder in summary["failed"]:
        print(f"failed cell (see its cell.log): {folder}", file=sys.stderr)
    for folder in summary["busy"]:
        print(f"passed over, another process is running it: {folder}", file=sys.stderr)
    print(f"written to {out}: results.md, cells.csv, cells.json, summary.json, "
          f"{', '.join(summary['report']['plots'])}")
    return 1 if summary["failed"] else 0
