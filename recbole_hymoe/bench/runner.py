"""Run a suite: every missing cell, one fresh process each, locally or as Ray tasks; then report.

``executor='local'`` runs the cells one after another, each in its own Python process;
``executor='ray'`` submits them as Ray tasks (a fresh worker per task) to a local Ray sized to
the machine or to an existing cluster (``address``/``RAY_ADDRESS``), with the same Ray
initialisation as the sweeps. A cell whose ``result.json`` exists is never run again, and a cell
interrupted mid-training continues after its last validated epoch, so an interrupted suite
resumes by running the same command.

A cell runs under a lock file in its folder, so the same command started several times (on one
machine or on machines sharing the results folder) shares the work out: each process takes the
next cell no other holds and passes over the busy ones, and no two processes write one cell's
log, checkpoints or training state.
"""

import json
import subprocess
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from recbole_hymoe.bench.cell import RESULT_FILE, model_settings
from recbole_hymoe.bench.report import write_report
from recbole_hymoe.bench.suite import Suite
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import Config
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.paths import portable
from recbole_hymoe.utils import init_ray

EXECUTORS = ("local", "ray", "inline")  # inline: in this process (tests, debugging; no per-cell memory)
# Keys that say where a cell finds its data, not what it computes: they may differ between machines.
LOCATION_KEYS = ("data_path",)
LOCK_FILE = "cell.lock"  # held by the process running the cell
RAN, FAILED, BUSY, DONE = "ran", "failed", "busy", "done"  # what became of a cell a process set out to run


def check_recorded_cells(specs):
    """Refuse cells whose saved result was computed under other settings than the suite gives them now.

    A finished cell is never run again, so after a suite entry's model, config files or overrides
    change, or a default in the model's defaults file, its old result would otherwise stand in the
    table beside cells run under the new settings. Defaults are compared where the cell recorded
    them (``model_settings``; cells recorded before that are checked on the rest); a key added to
    a defaults file after a cell ran is not compared, so a new key's default must keep the old
    behaviour or the cells it changes be withdrawn by hand. (Edits inside a suite's own config
    file are not seen: a suite names its settings files, so changing one is changing every cell
    that reads it.)

    Args:
        specs (list[dict]): cell specs of :meth:`~recbole_hymoe.bench.suite.Suite.cells`.

    Raises:
        ConfigError: naming each such cell, what differs, and the two ways out.
    """
    problems = []
    settings_now = {}  # the cells of one entry differ only in their seed
    for spec in specs:
        result_file = Path(spec["dir"]) / RESULT_FILE
        if not result_file.is_file():
            continue
        recorded = json.loads(result_file.read_text(encoding="utf-8"))
        differences = []
        if "model_settings" in recorded:
            entry = json.dumps([spec["model"], spec["dataset"], spec["config_files"], spec["overrides"]], default=str)
            if entry not in settings_now:
                with clean_argv():
                    config = Config(spec["model"], spec["dataset"], spec["config_files"], spec["overrides"])
                settings_now[entry] = model_settings(config)
            was, now = recorded["model_settings"], settings_now[entry]
            differences += [f"default {key} {was[key]!r} -> {now[key]!r}"
                            for key in sorted(set(was) & set(now)) if was[key] != now[key]]
        if recorded.get("model") != spec["model"]:
            differences.append(f"model {recorded.get('model')!r} -> {spec['model']!r}")
        files = [portable(path) for path in spec["config_files"]]  # as the cell recorded them
        if list(recorded.get("config_files", [])) != files:
            differences.append(f"config_files {recorded.get('config_files')} -> {files}")
        was, now = ({k: v for k, v in overrides.items() if k not in LOCATION_KEYS}
                    for overrides in (recorded.get("overrides", {}), spec["overrides"]))
        differences += [f"{key} {was.get(key)!r} -> {now.get(key)!r}"
                        for key in sorted(set(was) | set(now)) if was.get(key) != now.get(key)]
        if differences:
            problems.append(f"{spec['label']} on {spec['dataset']}, seed {spec['seed']} ({spec['dir']}): "
                            + "; ".join(differences))
    if problems:
        raise ConfigError(
            f"{len(problems)} recorded cell(s) were computed under other settings than the suite now gives them "
            "(recorded -> now); delete their folders to run them again under the new settings, or restore "
            "the suite's entries:\n  " + "\n  ".join(problems))


def run_claimed(spec, run):
    """Run one cell under its lock, unless another process holds it or has finished it meanwhile.

    Args:
        spec (dict): the cell's spec.
        run (callable): runs the cell from its spec; returns True on success.

    Returns:
        str: ``RAN``, ``FAILED``, ``BUSY`` (another process holds the cell) or ``DONE`` (its result
        was written after this process listed it).
    """
    cell_dir = Path(spec["dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cell_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return BUSY
    try:
        if (cell_dir / RESULT_FILE).is_file():
            return DONE
        return RAN if run(spec) else FAILED
    finally:
        lock.release()


def _run_local(spec):
    spec_file = Path(spec["dir"]) / "spec.json"  # the folder exists: run_claimed made it
    spec_file.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    log = Path(spec["dir"]) / "cell.log"
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run([sys.executable, "-m", "recbole_hymoe.bench.cell", str(spec_file)],
                              stdout=out, stderr=subprocess.STDOUT)
    return done.returncode


def _run_ray(specs, cpus_per_cell, address, num_cpus):
    import ray

    init_ray(address, num_cpus)

    @ray.remote(num_cpus=cpus_per_cell, max_calls=1)  # a fresh worker per cell: clean memory figures
    def cell_task(spec):
        from recbole_hymoe.bench.cell import run_cell

        return run_claimed(spec, lambda s: run_cell(s) is not None)

    pending = {cell_task.remote(spec): spec for spec in specs}
    outcomes = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ready[0])
        try:
            outcomes[spec["dir"]] = ray.get(ready[0])
        except Exception:  # noqa: BLE001 - a failed cell is reported (traceback in Ray's log), the others go on
            outcomes[spec["dir"]] = FAILED
    return outcomes


def run_suite(suite_file, out_dir=None, executor="local", cpus_per_cell=1, address=None, num_cpus=None,
              overrides=None, datasets=None, report=True, labels=None, seeds=None):
    """Run every cell of ``suite_file`` that has no result yet, then write the report.

    Args:
        suite_file (str): the suite.
        out_dir (str, optional): results folder (default ``results/bench/<suite name>``).
        executor (str): ``local`` or ``ray``.
        cpus_per_cell (float): Ray CPUs per cell.
        address (str, optional): Ray cluster address.
        num_cpus (int, optional): CPUs of a local Ray.
        overrides (dict, optional): config overrides for every cell (e.g. ``data_path``).
        datasets (list[str], optional): run on these datasets instead of the suite's.
        labels (list[str], optional): run only the cells of these model labels (the report covers all).
        seeds (list[int], optional): run only the cells of these seeds.
        report (bool): write the report afterwards.

    Returns:
        dict: ``ran``, ``skipped`` (already done), ``failed`` and ``busy`` (cell folders; busy: held
        by another process) and the ``report``.
    """
    suite = Suite.from_file(suite_file)
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {EXECUTORS}")
    if datasets:
        suite.datasets = list(datasets)
    if labels:
        unknown = sorted(set(labels) - {entry["label"] for entry in suite.models})
        if unknown:
            raise ConfigError(f"models {unknown} are not labels of suite {suite.name!r}; its labels: "
                              f"{[entry['label'] for entry in suite.models]}")
    if seeds:
        unknown = sorted(set(seeds) - {seed for entry in suite.models if not labels or entry["label"] in labels
                                       for seed in suite.seeds_of(entry)})
        if unknown:
            raise ConfigError(f"seeds {unknown} are not seeds of the {'named models' if labels else 'models'} "
                              f"of suite {suite.name!r}; the suite's seeds: {suite.seeds}")
    overrides = dict(overrides or {})
    suite.check(overrides)  # every problem, before anything runs
    out_dir = Path(out_dir or Path("results") / "bench" / suite.name)
    specs = suite.cells(out_dir, overrides)
    check_recorded_cells(specs)  # all of them: the report tables every cell
    specs = [spec for spec in specs
             if (not labels or spec["label"] in labels) and (not seeds or spec["seed"] in seeds)]
    for spec in specs:  # a relative data_path is recorded as given and resolved from here by the cell
        spec["cwd"] = str(Path.cwd())
    todo = [s for s in specs if not (Path(s["dir"]) / RESULT_FILE).is_file()]
    if executor == "ray" and todo:
        outcomes = _run_ray(todo, cpus_per_cell, address, num_cpus)
    elif executor == "inline":
        from recbole_hymoe.bench.cell import run_cell

        outcomes = {spec["dir"]: run_claimed(spec, lambda s: run_cell(s) is not None) for spec in todo}
    else:
        outcomes = {spec["dir"]: run_claimed(spec, lambda s: _run_local(s) == 0) for spec in todo}
    summary = {"ran": sum(outcome == RAN for outcome in outcomes.values()),
               "skipped": len(specs) - len(todo) + sum(outcome == DONE for outcome in outcomes.values()),
               **{key: [cell for cell, outcome in outcomes.items() if outcome == key] for key in (FAILED, BUSY)}}
    if report:
        summary["report"] = write_report(suite, out_dir)
    return summary
