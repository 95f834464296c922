"""Time-to-quality benchmark: train each configuration to early stop, record time and metrics.

A spec file (``yaml/experiment/ttq-*.yaml``) names a dataset, shared config files/overrides, a
torch thread count and a list of runs (label, model, overrides). Each run goes through
:func:`recbole_hymoe.quick_start.run` (RecBole's Trainer, early stopping on valid NDCG@10) into
``<out>/<label>/`` with its checkpoint, config and results; a run whose ``results.json``
exists is not repeated, an interrupted run continues from its last validated epoch (or, at its
epoch cap, is tested and recorded), and a run that reached its epoch cap without early stopping
continues when the cap is raised. The report gives per run: training time (every trained epoch
and its validation, over all continuations), epochs, best valid NDCG@10 and when it was
reached, test metrics, and — against the first run (the reference) — the time each run needed
to reach the reference's best valid NDCG@10. ``wall_s`` in ``results.json`` adds up the
invocations that recorded the run (an interrupted continuation's time is not in it).
"""

import json
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
    labels = [entry.get("label") for entry in spec.get("runs") or [] if isinstance(entry, dict)]
    if len(labels) != len(set(labels)):
        problems.append("run labels must be unique")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return spec


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
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    results = []
    for entry in spec["runs"]:
        run_dir = (out_dir / slug(entry["label"])).resolve()
        done = run_dir / "results.json"
        result = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None
        config = {**(spec.get("overrides") or {}), **(entry.get("overrides") or {}), **(overrides or {}),
                  "run_dir": str(run_dir), "show_progress": False}
        if result is None or _has_more(run_dir, result, config.get("epochs")):
            earlier_wall = result.get("wall_s", 0.0) if result else 0.0
            start = time.perf_counter()
            config_files = [find_file(f) for f in spec.get("config_files") or []] or None
            result = run(entry["model"], spec["dataset"], config_files, config)
            result["wall_s"] = round(earlier_wall + time.perf_counter() - start, 1)
            write_atomic(done, json.dumps(result, indent=2, default=str))
        results.append({"label": entry["label"], **result})
    report = {"spec": portable(spec_file), "dataset": spec["dataset"], "threads": spec.get("threads"),
              "rows": summarise(results)}
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
    """Per-run summary; ``to_reference_s`` = time to reach the first run's best valid score."""
    target = results[0]["best_valid_score"]
    reference_time = _time_to(results[0]["valid_history"], target)
    rows = []
    for result in results:
        reached = _time_to(result["valid_history"], target)
        best = next(r for r in result["valid_history"] if r["epoch"] == result["best_epoch"])
        rows.append({
            "label": result["label"],
            "model": result["model"],
            "train_regime": result.get("train_regime"),
            "wall_s": result.get("wall_s"),
            "train_time_s": result["train_time_s"],
            "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"],
            "best_valid_score": result["best_valid_score"],
            "time_to_best_s": best["elapsed_s"],
            "to_reference_s": reached,
            "to_reference_ratio": None if reached is None else reached / reference_time,
            "test": {m: result["test_result"].get(m) for m in REPORT_METRICS},
            "run_dir": portable(result["run_dir"]),
        })
    return rows


def _time_to(history, target):
    """Elapsed training time at the first validation scoring ≥ ``target`` (None if never)."""
    for record in history:
        if record["valid_score"] >= target:
            return record["elapsed_s"]
    return None


def ttq_table(report):
    """Markdown table of a time-to-quality report."""
    rows = report["rows"]
    reference = rows[0]
    lines = [
        f"Time to quality on {report['dataset']} ({report.get('threads') or 'default'} torch threads). "
        f"Reference: {reference['label']}, best valid NDCG@10 {reference['best_valid_score']:.4f} after "
        f"{reference['time_to_best_s']:.0f} s of training.",
        "",
        "| run | epochs (best) | train s | best valid NDCG@10 | s to best | s to reference's best | × | "
        "test HR@10 | test NDCG@10 | test MRR@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached = "not reached" if r["to_reference_s"] is None else f"{r['to_reference_s']:.0f}"
        ratio = "–" if r["to_reference_ratio"] is None else f"{r['to_reference_ratio']:.3f}"
        lines.append(
            f"| {r['label']} | {r['epochs_run']} ({r['best_epoch']}) | {r['train_time_s']:.0f} | "
            f"{r['best_valid_score']:.4f} | {r['time_to_best_s']:.0f} | {reached} | {ratio} | "
            f"{r['test']['hit@10']:.4f} | {r['test']['ndcg@10']:.4f} | {r['test']['mrr@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"
