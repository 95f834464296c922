"""Sweep report: CSV of all trials, ranked markdown table, ``best.yaml``, plots, best trial's test.

Written from Ray's result grid; trials are ranked by their best validation score (the
protocol's valid metric), never by test metrics. The best trial's best checkpoint is then
evaluated once on the test split with RecBole's own loader and evaluator.
"""

import csv
import io
import json
import math
from pathlib import Path

import yaml

from recbole_hymoe.paths import portable
from recbole_hymoe.tuning.trainable import SKIPPED_SCORE, STATUS_FILE
from recbole_hymoe.utils import write_atomic

METRIC_COLUMNS = ("valid_hit@10", "valid_ndcg@10", "valid_mrr@10", "valid_hit@5", "valid_ndcg@5")


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
        params = {key: result.config.get(key) for key in space.space}
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
            epochs = (frame[frame["epoch"] >= 0].drop_duplicates("epoch", keep="last")
                      if frame is not None and "epoch" in frame else None)
            if epochs is None or epochs.empty:
                row.update(stop_reason="no epoch finished", epochs=0, best_valid_score=None)
            else:
                best = epochs.loc[epochs["valid_score"].idxmax()]
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


def _csv(rows):
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(rows, space, base, best_test):
    keys = list(space.space)
    header = ["rank", *keys, "best valid " + base["valid_metric"], "epochs (best)", "stop reason", "wall s"]
    lines = [
        f"Sweep of {base['model']} on {base['dataset']} ({portable(space.source)}); ranked by best validation "
        f"{base['valid_metric']}; test metrics only for the best trial.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for rank, row in enumerate(rows, 1):
        score = "–" if row.get("best_valid_score") is None else f"{row['best_valid_score']:.4f}"
        epochs = f"{row['epochs']} ({row['best_epoch']})" if "best_epoch" in row else str(row.get("epochs", 0))
        values = [str(row.get(k)) for k in keys]
        lines.append(f"| {rank} | " + " | ".join(values) + f" | {score} | {epochs} | {row['stop_reason']} | "
                     f"{row['wall_s']} |")
    if best_test:
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
    """PNG plots for the HyMoERec paper's experiments, when the sweep varies their keys.

    HR@10 vs warm-up steps; NDCG@10 and expert-usage entropy vs λ_lb; an E × K heatmap of
    NDCG@10. Returns the written file names.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("best_valid_score") is not None]
    written = []
    if not done:
        return written

    def points(key, metric):
        pairs = sorted((float(r[key]), r[metric]) for r in done if r.get(metric) is not None and r.get(key) is not None)
        return [p[0] for p in pairs], [p[1] for p in pairs]

    if "moe_warmup_steps" in space.space:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(*points("moe_warmup_steps", "valid_hit@10"), "o-")
        ax.set(xlabel="warm-up steps T", ylabel="best valid HR@10", title="HR@10 vs warm-up")
        fig.tight_layout()
        fig.savefig(out_dir / "hr10_vs_warmup.png", dpi=120)
        plt.close(fig)
        written.append("hr10_vs_warmup.png")
    if "moe_balance_weight" in space.space:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(*points("moe_balance_weight", "valid_ndcg@10"), "o-", color="tab:blue")
        ax.set(xlabel="λ_lb (moe_balance_weight)", ylabel="best valid NDCG@10")
        twin = ax.twinx()
        twin.plot(*points("moe_balance_weight", "moe_usage_entropy"), "s--", color="tab:orange")
        twin.set_ylabel("expert-usage entropy (nats)")
        ax.set_title("NDCG@10 and expert entropy vs λ_lb")
        fig.tight_layout()
        fig.savefig(out_dir / "ndcg10_entropy_vs_balance.png", dpi=120)
        plt.close(fig)
        written.append("ndcg10_entropy_vs_balance.png")
    if "moe_num_experts" in space.space and "moe_top_k" in space.space:
        experts = sorted({int(r["moe_num_experts"]) for r in done})
        tops = sorted({int(r["moe_top_k"]) for r in done})
        grid = [[math.nan] * len(experts) for _ in tops]
        for r in done:
            value = r.get("valid_ndcg@10")
            if value is not None:
                grid[tops.index(int(r["moe_top_k"]))][experts.index(int(r["moe_num_experts"]))] = value
        fig, ax = plt.subplots(figsize=(5, 3.5))
        image = ax.imshow(grid, cmap="viridis", origin="lower")
        ax.set_xticks(range(len(experts)), experts)
        ax.set_yticks(range(len(tops)), tops)
        ax.set(xlabel="experts E", ylabel="top-K", title="best valid NDCG@10 (E × K)")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.4f}", ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(image)
        fig.tight_layout()
        fig.savefig(out_dir / "ndcg10_experts_topk.png", dpi=120)
        plt.close(fig)
        written.append("ndcg10_experts_topk.png")
    return written


def write_report(results, space, base, config_files, overrides, out_dir, trials_dir, evaluate_best=True):
    """Write ``trials.csv``, ``results.md``, ``best.yaml``, plots and ``report.json`` in ``out_dir``."""
    rows = trial_rows(results, space, base["epochs"], trials_dir)
    finished = [r for r in rows if r.get("best_valid_score") not in (None, SKIPPED_SCORE)]
    best = finished[0] if finished else None
    best_test = test_best_trial(best) if (evaluate_best and best and best.get("best_model")) else None
    write_atomic(out_dir / "trials.csv", _csv(rows))
    write_atomic(out_dir / "results.md", _markdown(rows, space, base, best_test))
    if best:
        write_atomic(out_dir / "best.yaml", yaml.safe_dump(best_yaml(best, space, base, config_files, overrides),
                                                          sort_keys=True))
    plots = plot_sweep(rows, space, out_dir)
    report = {"trials": rows, "best": best, "best_test": best_test, "plots": plots}
    write_atomic(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    return report
