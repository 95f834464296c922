"""Time-to-quality benchmark: train each configuration to early stop, record time and metrics.

A spec file (``yaml/experiment/ttq-*.yaml``) names a dataset, shared config files/overrides, a
torch thread count and a list of runs (label, model, overrides; optionally ``seeds``, which
expands the run into one run per seed labelled ``<label> (seed <s>)``, and ``reference``, the
label of the run whose best valid score it is timed against — the first run by default). Each run goes through
:func:`recbole_hymoe.quick_start.run` (RecBole's Trainer, early stopping on valid NDCG@10) into
``<out>/<label>/`` with its checkpoint, config and results; a run whose ``results.json``
exists is not repeated, an interrupted run continues from its last validated epoch (or, at its
epoch cap, is tested and recorded), and a run that reached its epoch cap without early stopping
continues when the cap is raised. The report gives per run: training time (every trained epoch
and its validation, over all continuations), epochs, best valid NDCG@10 and when it was
reached, test metrics, and — against the first run (the reference) — the time each run needed
to reach the reference's best valid NDCG@10; runs expanded over seeds are also summarised as a
group (mean ± std). ``wall_s`` in ``results.json`` adds up the invocations that recorded the run
(an interrupted continuation's time is not in it).
"""

import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from recbole_hymoe.errors import ConfigError
from recbole_hymoe.paths import find_file, portable
from recbole_hymoe.quick_start import run
from recbole_hymoe.resume import state_file
from recbole_hymoe.utils import slug, write_atomic

REPORT_METRICS = ("hit@10", "ndcg@10", "mrr@10")


RUN_KEYS = {"label", "model", "seeds", "reference", "overrides", "threads"}


def _integer(value):
    """An int that is not a bool (YAML reads ``true`` as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def load_spec(path):
    """Read and check a time-to-quality spec file (``yaml/experiment/…`` also names the package's).

    Raises:
        ConfigError: a required field is missing or malformed (all problems at once).
    """
    try:
        with open(find_file(path), encoding="utf-8") as f:
            spec = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"spec file not found: {path}") from None
    problems = [f"missing {key!r}" for key in ("dataset", "runs") if key not in spec]
    for i, entry in enumerate(spec.get("runs") or []):
        if not isinstance(entry, dict) or not {"label", "model"} <= set(entry):
            problems.append(f"runs[{i}] needs 'label' and 'model'")
        elif set(entry) - RUN_KEYS:  # e.g. a flow mapping cut at a comma inside an unquoted label
            unknown = ", ".join(map(repr, sorted(map(str, set(entry) - RUN_KEYS))))
            problems.append(f"runs[{i}] ({entry['label']!r}): unknown keys {unknown}; a run has "
                            f"{', '.join(sorted(RUN_KEYS))} (quote a label that holds a comma)")
    labels = [entry.get("label") for entry in spec.get("runs") or [] if isinstance(entry, dict)]
    if len(labels) != len(set(labels)):
        problems.append("run labels must be unique")
    for entry in spec.get("runs") or []:
        if isinstance(entry, dict) and entry.get("reference") not in (None, *labels):
            problems.append(f"run {entry.get('label')!r}: reference {entry['reference']!r} is not a run label")
        seeds = entry.get("seeds") if isinstance(entry, dict) else None
        threads = entry.get("threads") if isinstance(entry, dict) else None
        if threads is not None and not (_integer(threads) and threads >= 1):
            problems.append(f"run {entry.get('label')!r}: threads={threads!r} must be an integer >= 1")
        if seeds is not None and not (isinstance(seeds, list) and seeds and all(map(_integer, seeds))):
            problems.append(f"run {entry.get('label')!r}: seeds={seeds!r} must be a list of integers")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return spec


def expand_seeds(runs):
    """One run per seed for runs with ``seeds``; each run gets its ``group`` (the spec label)."""
    expanded = []
    for entry in runs:
        for seed in entry.get("seeds") or [None]:
            run_entry = {**entry, "group": entry["label"]}
            if seed is not None:
                run_entry["label"] = f"{entry['label']} (seed {seed})"
                run_entry["overrides"] = {**(entry.get("overrides") or {}), "seed": seed}
            expanded.append(run_entry)
    return expanded


def run_time_to_quality(spec_file, out_dir, overrides=None, labels=None):
    """Run (or resume) every run of ``spec_file`` into ``out_dir``; write and return the report.

    Args:
        spec_file (str or Path): the spec.
        out_dir (str or Path): results folder.
        overrides (dict, optional): config overrides for every run (e.g. ``data_path``).
        labels (list[str], optional): run only these runs of the spec (in the spec's order; the
            first of them is the report's reference).

    Returns:
        dict: the report (also ``ttq.json`` and ``ttq.md`` in ``out_dir``).

    Raises:
        ConfigError: a malformed spec, or a label the spec does not have.
    """
    spec = load_spec(spec_file)
    if labels:
        known = [entry["label"] for entry in spec["runs"]]
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise ConfigError(f"{spec_file}: no run labelled {', '.join(map(repr, unknown))}; "
                              f"its runs: {', '.join(map(repr, known))}")
        spec["runs"] = [entry for entry in spec["runs"] if entry["label"] in labels]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    default_threads = torch.get_num_threads()
    results = []
    first = spec["runs"][0]["label"]
    for entry in expand_seeds(spec["runs"]):
        # a run's own thread count (e.g. a slow reference that must fit a sitting) wins over the spec's
        torch.set_num_threads(int(entry.get("threads") or spec.get("threads") or default_threads))
        run_dir = (out_dir / slug(entry["label"])).resolve()
        done = run_dir / "results.json"
        result = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None
        config = {**(spec.get("overrides") or {}), **(entry.get("overrides") or {}), **(overrides or {}),
                  "run_dir": str(run_dir), "show_progress": False}
        if result is None or _has_more(run_dir, result, config.get("epochs")):
            earlier_wall = result.get("wall_s", 0.0) if result else 0.0
            start = time.perf_counter()
            config_files = [find_file(f) for f in spec.get("config_files") or []] or None
            run(entry["model"], spec["dataset"], config_files, config)
            result = json.loads(done.read_text(encoding="utf-8"))  # the run's record, portable paths
            result["wall_s"] = round(earlier_wall + time.perf_counter() - start, 1)
            write_atomic(done, json.dumps(result, indent=2, default=str))
        results.append({"label": entry["label"], "group": entry["group"], "threads": entry.get("threads"),
                        "reference": entry.get("reference", first), **result})
    rows = summarise(results)
    report = {"spec": portable(spec_file), "dataset": spec["dataset"], "threads": spec.get("threads"),
              "rows": rows, "groups": summarise_groups(rows)}
    write_atomic(out_dir / "ttq.json", json.dumps(report, indent=2, default=str))
    write_atomic(out_dir / "ttq.md", ttq_table(report))
    return report


def _has_more(run_dir, result, epochs):
    """Whether a recorded run has more to do: its training went on after ``result`` was written
    (a continuation was interrupted), or it stopped at an epoch cap (not early) below ``epochs``."""
    path = state_file(run_dir)
    if not path.is_file():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    went_on = state["epoch"] + 1 > result["epochs_run"]
    cap_raised = epochs is not None and not state["stopped"] and state["epoch"] + 1 < int(epochs)
    return went_on or cap_raised


def summarise(results):
    """Per-run summary; ``to_reference_s`` = time to reach the reference's best valid score.

    A run's reference is a run group (its ``reference`` label, by default the spec's first run);
    the target is the group's mean best valid score and the reference time its mean time to it.
    """
    groups = {}
    for result in results:
        groups.setdefault(result.get("group", result["label"]), []).append(result)
    rows = []
    for result in results:
        reference = result.get("reference", results[0].get("group", results[0]["label"]))
        members = groups.get(reference, [])  # empty when the reference was not run (yet)
        target = statistics.fmean(m["best_valid_score"] for m in members) if members else None
        reference_times = [_time_to(m["valid_history"], target) for m in members]
        reference_time = statistics.fmean(t for t in reference_times if t is not None) \
            if any(t is not None for t in reference_times) else None
        reached = None if target is None else _time_to(result["valid_history"], target)
        best = next(r for r in result["valid_history"] if r["epoch"] == result["best_epoch"])
        rows.append({
            "label": result["label"],
            "group": result.get("group", result["label"]),
            "threads": result.get("threads"),  # None: the spec's
            "reference": reference,
            "model": result["model"],
            "train_regime": result.get("train_regime"),
            "wall_s": result.get("wall_s"),
            "train_time_s": result["train_time_s"],
            "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"],
            "best_valid_score": result["best_valid_score"],
            "time_to_best_s": best["elapsed_s"],
            "reference_target": target,
            "to_reference_s": reached,
            "to_reference_ratio": None if reached is None or not reference_time else reached / reference_time,
            "test": {m: result["test_result"].get(m) for m in REPORT_METRICS},
            "run_dir": portable(result["run_dir"]),
        })
    return rows


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise_groups(rows):
    """Mean ± std over the runs of each group (a run expanded over seeds), in spec order."""
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    out = []
    for group, members in groups.items():
        reached = [m["to_reference_s"] for m in members if m["to_reference_s"] is not None]
        ratios = [m["to_reference_ratio"] for m in members if m["to_reference_ratio"] is not None]
        out.append({
            "group": group,
            "reference": members[0]["reference"],
            "runs": len(members),
            "best_valid": _mean_std([m["best_valid_score"] for m in members]),
            "test_ndcg@10": _mean_std([m["test"]["ndcg@10"] for m in members]),
            "test_hit@10": _mean_std([m["test"]["hit@10"] for m in members]),
            "train_time_s": _mean_std([m["train_time_s"] for m in members]),
            "epochs_run": _mean_std([m["epochs_run"] for m in members]),
            "reached_reference": f"{len(reached)}/{len(members)}",
            "to_reference_s": _mean_std(reached),
            "to_reference_ratio": _mean_std(ratios),
        })
    return out


def _time_to(history, target):
    """Elapsed training time at the first validation scoring ≥ ``target`` (None if never)."""
    for record in history:
        if record["valid_score"] >= target:
            return record["elapsed_s"]
    return None


def _pm(pair, digits=4):
    mean, std = pair
    return "–" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def own_threads(row):
    """`` (N threads)`` for a run timed with its own thread count, else empty."""
    return f" ({row['threads']} threads)" if row.get("threads") else ""


def ttq_table(report):
    """Markdown tables of a time-to-quality report: one row per run, then one per run group."""
    rows = report["rows"]
    reference = rows[0]
    lines = [
        f"Time to quality on {report['dataset']} ({report.get('threads') or 'default'} torch threads unless a run "
        "says otherwise). "
        f"Reference (unless a run names another): {reference['label']}, best valid NDCG@10 "
        f"{reference['best_valid_score']:.4f} after {reference['time_to_best_s']:.0f} s of training.",
        "",
        "| run | reference | epochs (best) | train s | best valid NDCG@10 | s to best | s to reference's best | × | "
        "test HR@10 | test NDCG@10 | test MRR@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("reference_target", True) is None:
            reached = "reference not run"
        else:
            reached = "not reached" if r["to_reference_s"] is None else f"{r['to_reference_s']:.0f}"
        ratio = "–" if r["to_reference_ratio"] is None else f"{r['to_reference_ratio']:.3f}"
        lines.append(
            f"| {r['label']}{own_threads(r)} | {r.get('reference', reference['label'])} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['train_time_s']:.0f} | {r['best_valid_score']:.4f} | {r['time_to_best_s']:.0f} | {reached} | "
            f"{ratio} | {r['test']['hit@10']:.4f} | {r['test']['ndcg@10']:.4f} | {r['test']['mrr@10']:.4f} |"
        )
    groups = [g for g in report.get("groups") or [] if g["runs"] > 1]
    if groups:
        lines += [
            "",
            "Runs over several seeds, mean ± std (time to the reference's best over the runs that reached it; "
            "× = that time over the reference's own time to its best).",
            "",
            "| runs | n | reference | best valid NDCG@10 | test NDCG@10 | test HR@10 | epochs | train s | "
            "reached | s to reference's best | × |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for g in groups:
            lines.append(
                f"| {g['group']} | {g['runs']} | {g['reference']} | {_pm(g['best_valid'])} | "
                f"{_pm(g['test_ndcg@10'])} | "
                f"{_pm(g['test_hit@10'])} | {_pm(g['epochs_run'], 0)} | {_pm(g['train_time_s'], 0)} | "
                f"{g['reached_reference']} | {_pm(g['to_reference_s'], 0)} | {_pm(g['to_reference_ratio'], 3)} |"
            )
    return "\n".join(lines) + "\n"
