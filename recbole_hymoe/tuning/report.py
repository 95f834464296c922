"""Sweep report: CSV of all trials, ranked markdown table, ``best.yaml``, plots, best trial's test.

Written from Ray's result grid; trials are ranked by their best validation score (the
protocol's valid metric), never by test metrics. The best trial's best checkpoint is then
evaluated once on the test split with RecBole's own loader and evaluator.
"""

import csv
import io
import json
import math
import numbers
from pathlib import Path

import yaml

from recbole_hymoe.bench.stats import mean_std
from recbole_hymoe.paths import portable
from recbole_hymoe.quick_start import best_record
from recbole_hymoe.tuning.space import METRIC_COLUMNS, SEED_KEY
from recbole_hymoe.tuning.trainable import SKIPPED_SCORE, STATUS_FILE
from recbole_hymoe.utils import write_atomic


def _stop_reason(status, epochs, max_epochs):
    reason = status.get("reason", "running")
    if reason != "running":
        return reason
    return "completed max epochs" if epochs >= max_epochs else "stopped by the scheduler (ASHA)"


def trial_rows(results, space, max_epochs, trials_dir):
    """One summary dict per trial of a Ray ``ResultGrid`` (artifacts in ``trials_dir/<trial id>``)."""
    rows = []
    for result in results:
        if result.config is None or result.path is None:  # never started (e.g. the sweep was interrupted)
            rows.append({"trial": "(not started)", "stop_reason": "not started", "epochs": 0,
                         "best_valid_score": None, "wall_s": 0.0, "path": None})
            continue
        params = {key: result.config.get(key) for key in searched_keys(space)}
        frame = result.metrics_dataframe
        status = {}
        trial_id = (result.metrics or {}).get("trial_id")
        status_file = Path(trials_dir) / str(trial_id) / STATUS_FILE
        if status_file.is_file():
            status = json.loads(status_file.read_text(encoding="utf-8"))
        row = {"trial": trial_id, **params}
        if result.error is not None:
            row.update(stop_reason=f"error: {type(result.error).__name__}", epochs=0, best_valid_score=None)
        elif status.get("reason") == "skipped":
            row.update(stop_reason=f"skipped (invalid combination: {status['detail'].splitlines()[-1].strip()})",
                       epochs=0, best_valid_score=None)
        else:
            # A resumed trial replays the epochs after the last checkpoint Ray had recorded (Ctrl-C can
            # land between a report and its checkpoint's registration), so Ray's log may hold an epoch
            # twice: the later report is the one the trial's saved best model belongs to.
            epochs = (frame[frame["epoch"] >= 0].drop_duplicates("epoch", keep="last").sort_values("epoch")
                      if frame is not None and "epoch" in frame else None)
            if epochs is None or epochs.empty:
                row.update(stop_reason="no epoch finished", epochs=0, best_valid_score=None)
            else:
                best = best_record(epochs.to_dict("records"))  # the epoch whose checkpoint was kept
                run = int(epochs["epoch"].max()) + 1
                row.update(
                    stop_reason=_stop_reason(status, run, max_epochs),
                    epochs=run,
                    best_epoch=int(best["epoch"]),
                    best_valid_score=float(best["valid_score"]),
                    **{name: float(best[name]) for name in METRIC_COLUMNS if name in best},
                )
                if "moe_usage_entropy" in best:
                    row["moe_usage_entropy"] = float(best["moe_usage_entropy"])
                row["best_model"] = status.get("best_model")
        last = result.metrics or {}
        row["wall_s"] = round(float(last.get("time_total_s", 0.0)), 1)
        row["path"] = str(result.path)
        rows.append(row)
    rows.sort(key=lambda r: -math.inf if r.get("best_valid_score") is None else -r["best_valid_score"])
    return rows


def searched_keys(space):
    """The keys a trial's row records: the space's, then the seed when the sweep repeats seeds."""
    return [*space.space, *([SEED_KEY] if space.seeds else [])]


def points(rows, space):
    """Trials of a sweep with ``seeds`` grouped by their searched values, best mean first.

    Returns:
        list[dict]: per point its searched values, ``seeds`` (finished trials), mean and standard
        deviation over seeds of the best validation score, of each metric column and of the
        epochs (``<name>`` and ``<name>_std``), and its ``trials``.
    """
    groups = {}
    for row in rows:
        if row.get("best_valid_score") in (None, SKIPPED_SCORE):
            continue
        key = tuple(_value(row, k) for k in space.space)
        groups.setdefault(key, []).append(row)
    found = []
    for key, members in groups.items():
        point = dict(zip(space.space, (members[0][k] for k in space.space)))
        point["seeds"] = len(members)
        for name in ("best_valid_score", *METRIC_COLUMNS, "moe_usage_entropy", "epochs"):
            values = [m[name] for m in members if m.get(name) is not None]
            if values:
                point[name], point[f"{name}_std"] = mean_std(values)
        point["trials"] = [m["trial"] for m in members]
        found.append(point)
    found.sort(key=lambda p: -p["best_valid_score"])
    return found


def _csv(rows):
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _table_head(title, header):
    """A title line and a markdown table's header rows."""
    return [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def _points_markdown(found, space, base):
    keys = list(space.space)
    lines = _table_head(
        f"Points (each searched combination over the seeds {space.seeds}), ranked by the mean over seeds of the "
        f"best validation {base['valid_metric']}:",
        ["rank", *keys, "seeds", "best valid " + base["valid_metric"] + " (mean ± std)", "epochs (mean)"])
    for rank, point in enumerate(found, 1):
        values = [str(point.get(k)) for k in keys]
        lines.append(f"| {rank} | " + " | ".join(values) + f" | {point['seeds']} | {point['best_valid_score']:.4f} ± "
                     f"{point['best_valid_score_std']:.4f} | {point['epochs']:.1f} |")
    return lines


def _markdown(rows, space, base, best_test, found=None):
    keys = searched_keys(space)
    lines = _table_head(
        f"Sweep of {base['model']} on {base['dataset']} ({portable(space.source)}); ranked by best validation "
        f"{base['valid_metric']}; test metrics only for the best trial.",
        ["rank", *keys, "best valid " + base["valid_metric"], "epochs (best)", "stop reason", "wall s"])
    for rank, row in enumerate(rows, 1):
        score = "–" if row.get("best_valid_score") is None else f"{row['best_valid_score']:.4f}"
        epochs = f"{row['epochs']} ({row['best_epoch']})" if "best_epoch" in row else str(row.get("epochs", 0))
        values = [str(row.get(k)) for k in keys]
        lines.append(f"| {rank} | " + " | ".join(values) + f" | {score} | {epochs} | {row['stop_reason']} | "
                     f"{row['wall_s']} |")
    if found:
        lines = _points_markdown(found, space, base) + ["", "Trials:", ""] + lines
    if best_test and found:
        metrics = ", ".join(f"{k} {v:.4f} ± {best_test[k + '_std']:.4f}" for k, v in best_test.items()
                            if not k.endswith("_std"))
        lines += ["", f"Best point on test (each seed's best-validation checkpoint, mean ± std): {metrics}."]
    elif best_test:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in best_test.items())
        lines += ["", f"Best trial on test: {metrics}."]
    return "\n".join(lines) + "\n"


def best_yaml(best, space, base, config_files, overrides):
    """Config that ``run_recbole --config_files=best.yaml`` accepts: files, base, best params."""
    merged = {}
    for path in config_files or []:
        with open(path, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f) or {})
    merged.update(overrides)
    merged.update({key: best[key] for key in space.space})
    merged["model"], merged["dataset"] = base["model"], base["dataset"]
    return merged


def test_best_trial(best):
    """Test metrics of the best trial's best-validation checkpoint (RecBole's loader/evaluator,
    the protocol's history exclusion)."""
    from recbole.utils import get_trainer

    from recbole_hymoe.quick_start import load_data_and_model

    config, model, _, _, _, test_data = load_data_and_model(best["best_model"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dict(trainer.evaluate(test_data, load_best_model=False))


def plot_sweep(rows, space, out_dir):
    """Write the PNG plots the sweep file asks for (:attr:`SearchSpace.plots`); return their names.

    A line plot shows each metric of the best epoch against one searched key (a second metric on
    a twin axis); a heatmap shows one metric over two searched keys. Keys whose values are not
    all numbers are plotted as categories.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("best_valid_score") is not None]
    written = []
    if not done:
        return written
    for plot in space.plots:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if "y" in plot:
            _heatmap(fig, ax, done, plot)
        else:
            _lines(ax, done, plot)
        fig.tight_layout()
        fig.savefig(out_dir / plot["file"], dpi=120)
        plt.close(fig)
        written.append(plot["file"])
    return written


def _value(row, key):
    """A row's value of ``key`` as a plot coordinate (lists and the like by their text)."""
    value = row.get(key)
    return value if value is None or isinstance(value, (numbers.Real, str)) else str(value)


def _axis(values):
    """Sorted distinct ``values`` and their plot positions (the values, or 0, 1, … for categories)."""
    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    numeric = all(isinstance(v, numbers.Real) for v in distinct)
    positions = {v: (float(v) if numeric else i) for i, v in enumerate(distinct)}
    return distinct, positions, numeric


def _lines(ax, done, plot):
    key = plot["x"]
    distinct, positions, numeric = _axis(_value(r, key) for r in done if r.get(key) is not None)
    axes = [ax, ax.twinx()][:len(plot["metrics"])]
    for axis, metric, style, color in zip(axes, plot["metrics"], ("o-", "s--"), ("tab:blue", "tab:orange")):
        found = sorted(((positions[_value(r, key)], r[metric], r.get(f"{metric}_std")) for r in done
                        if r.get(key) is not None and r.get(metric) is not None), key=lambda f: f[:2])
        x, y, err = [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]
        if all(e is not None for e in err):  # points over seeds: mean ± std
            axis.errorbar(x, y, yerr=err, fmt=style, color=color, capsize=3)
            axis.set_ylabel(f"best epoch's {metric} (mean ± std over seeds)")
        else:
            axis.plot(x, y, style, color=color)
            axis.set_ylabel(f"best epoch's {metric}")
    if not numeric:
        ax.set_xticks([positions[v] for v in distinct], [str(v) for v in distinct])
    ax.set(xlabel=key, title=f"{' and '.join(plot['metrics'])} vs {key}")


def _heatmap(fig, ax, done, plot):
    x_key, y_key, metric = plot["x"], plot["y"], plot["metric"]
    xs, _, _ = _axis(_value(r, x_key) for r in done if r.get(x_key) is not None)
    ys, _, _ = _axis(_value(r, y_key) for r in done if r.get(y_key) is not None)
    grid = [[math.nan] * len(xs) for _ in ys]  # [len(ys), len(xs)]
    for r in done:
        x, y = _value(r, x_key), _value(r, y_key)
        if r.get(metric) is not None and x in xs and y in ys:
            grid[ys.index(y)][xs.index(x)] = r[metric]
    image = ax.imshow(grid, cmap="viridis", origin="lower")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set(xlabel=x_key, ylabel=y_key, title=f"best epoch's {metric}")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.4f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image)


def _test_point(point, rows):
    """Mean and standard deviation over seeds of each test metric of a point's trials."""
    by_trial = {row["trial"]: row for row in rows}
    tests = [test_best_trial(by_trial[t]) for t in point["trials"] if by_trial[t].get("best_model")]
    summary = {}
    for metric in tests[0] if tests else []:
        summary[metric], summary[f"{metric}_std"] = mean_std(t[metric] for t in tests)
    return summary or None


def write_report(results, space, base, config_files, overrides, out_dir, trials_dir, evaluate_best=True):
    """Write ``trials.csv``, ``results.md``, ``best.yaml``, plots and ``report.json`` in ``out_dir``.

    With ``seeds`` the best is the point with the best mean validation score over its seeds, its
    test metrics are the mean ± std of its seeds' best checkpoints, and the plots show means with
    standard-deviation bars.
    """
    rows = trial_rows(results, space, base["epochs"], trials_dir)
    found = points(rows, space) if space.seeds else None
    finished = [r for r in rows if r.get("best_valid_score") not in (None, SKIPPED_SCORE)]
    best = (found[0] if found else None) if space.seeds else (finished[0] if finished else None)
    best_test = None
    if evaluate_best and best:
        best_test = (_test_point(best, rows) if space.seeds
                     else (test_best_trial(best) if best.get("best_model") else None))
    write_atomic(out_dir / "trials.csv", _csv(rows))
    write_atomic(out_dir / "results.md", _markdown(rows, space, base, best_test, found))
    if best:
        best_config = best_yaml(best, space, base, config_files, overrides)
        write_atomic(out_dir / "best.yaml", yaml.safe_dump(best_config, sort_keys=True))
    plots = plot_sweep(found if space.seeds else rows, space, out_dir)
    report = {"trials": rows, "points": found, "best": best, "best_test": best_test, "plots": plots}
    write_atomic(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    return report
