"""Suite report from saved cell results (re-runnable without training anything).

Per dataset: a markdown table with test metrics as mean ± std over seeds; the relative gain of
each model's NDCG@10 and the paired Wilcoxon signed-rank p-value over users (all seeds pooled,
same seed pairing) of its per-user test NDCG@10 against the suite's reference and against the
model's own host (a suite entry's ``host``), and against the best baseline in the JSON summary;
the published figure an entry names; epochs to best, whether early stopping ended every cell
(a cell whose best epoch lies within ``stopping_step`` of its last epoch was cut by the cap
and is flagged), timing and memory columns; CSV and JSON of every cell; PNG plots of the
validation learning curves, each multi-term loss's terms over epochs and, for MoE models, expert
usage by item-popularity tier and over epochs; for suites whose entries name a ``family``, a
capacity table and plot (test NDCG@10 against parameters and against matrix work per training
step, from ``run_speed --suite``'s ``speed.json`` in the same folder).
"""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from recbole.utils import ModelType, get_model

from recbole_hymoe import registry
from recbole_hymoe.bench.cell import PER_USER_FILE, RESULT_FILE
from recbole_hymoe.bench.stats import mean_std, paired_wilcoxon, relative_gain, welch_t
from recbole_hymoe.paths import portable
from recbole_hymoe.utils import write_atomic

TABLE_METRICS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr@10")
KEY_METRIC = "ndcg@10"
# Written by ``run_speed --suite=<suite> --out=<the suite's results folder>``: per entry label, the
# matrix work of a training step and the epoch time the capacity table shows.
SPEED_FILE = "speed.json"


def load_cells(suite, out_dir):
    """Saved results of the suite's cells (missing ones are left out), each with its per-user arrays."""
    cells = []
    for spec in suite.cells(out_dir):
        folder = Path(spec["dir"])
        if not (folder / RESULT_FILE).is_file():
            continue
        result = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
        with np.load(folder / PER_USER_FILE) as per_user:
            result["per_user"] = {k: per_user[k] for k in per_user.files}
        result.update(role=spec["role"], dir=portable(folder, within=out_dir))
        cells.append(result)
    return cells


def _paired(cells_a, cells_b, metric=KEY_METRIC):
    """Per-user values of two models, paired by seed and user id, all seeds pooled."""
    by_seed_b = {c["seed"]: c for c in cells_b}
    a_values, b_values = [], []
    for cell in cells_a:
        other = by_seed_b.get(cell["seed"])
        if other is None:
            continue
        index_b = {int(u): i for i, u in enumerate(other["per_user"]["user"])}
        for i, user in enumerate(cell["per_user"]["user"]):
            j = index_b.get(int(user))
            if j is not None:
                a_values.append(cell["per_user"][metric][i])
                b_values.append(other["per_user"][metric][j])
    return np.asarray(a_values), np.asarray(b_values)


def converged(cell):
    """Whether early stopping ended the cell: ``stopping_step`` validations after its best epoch.

    A model RecBole fits in one pass (``ModelType.TRADITIONAL``: Pop, ItemKNN, …; its trainer runs
    one epoch) has nothing to stop and counts as converged.
    """
    if get_model(registry.resolve_model_name(cell["model"])).type == ModelType.TRADITIONAL:
        return True
    stopping_step = cell.get("overrides", {}).get("stopping_step", 10)
    return cell["epochs_run"] - 1 - cell["best_epoch"] >= stopping_step


def _versus(row, other):
    """Relative NDCG@10 gain of ``row`` over ``other`` and the paired p-value (NaN, None without ``other``)."""
    if other is None or other is row:
        return math.nan, None
    a, b = _paired(row["cells"], other["cells"])
    return relative_gain(row[KEY_METRIC][0], other[KEY_METRIC][0]), (paired_wilcoxon(a, b) if len(a) else None)


def _significance(row, other):
    """The comparison of ``row`` with ``other`` seed by seed and run by run (None without ``other``).

    Returns:
        dict: ``against`` (label), ``gain`` and ``pooled_p`` (:func:`_versus`), ``per_seed``
        {seed: paired per-user Wilcoxon p of that seed's two runs} and ``runs_p``, Welch's t over
        the runs' mean per-user NDCG@10 (see :func:`~recbole_hymoe.bench.stats.welch_t`).
    """
    if other is None or other is row:
        return None
    gain, pooled_p = _versus(row, other)
    per_seed = {}
    for cell in row["cells"]:
        a, b = _paired([cell], other["cells"])
        if len(a):
            per_seed[cell["seed"]] = paired_wilcoxon(a, b)
    run_means = [[float(np.mean(c["per_user"][KEY_METRIC])) for c in r["cells"]] for r in (row, other)]
    return {"against": other["label"], "gain": gain, "pooled_p": pooled_p, "per_seed": per_seed,
            "runs_p": welch_t(*run_means)}


def summarise(suite, cells, speed_rows=()):
    """Per dataset and model: metric means/stds, gain over the reference, p-value vs the best baseline;
    per dataset also the cells still to run and the capacity rows (:func:`capacity_rows`, with
    ``run_speed``'s ``speed_rows``)."""
    summary = {}
    for dataset in suite.datasets:
        rows = {}
        for entry in suite.models:
            group = [c for c in cells if c["dataset"] == dataset and c["label"] == entry["label"]]
            if not group:
                continue
            row = {"label": entry["label"], "role": entry["role"], "seeds": len(group),
                   "train_regime": group[0]["train_regime"]}
            for metric in TABLE_METRICS:
                row[metric] = mean_std(c["test_result"][metric] for c in group)
            row["epochs"] = mean_std(c["epochs_run"] for c in group)
            row["best_epoch"] = mean_std(c["best_epoch"] for c in group)
            row["capped_cells"] = [c["seed"] for c in group if not converged(c)]
            row["host"], row["published"] = entry.get("host"), entry.get("published")
            row["train_s_per_epoch"] = mean_std(c["train_s_per_epoch"] for c in group)
            row["train_s"] = mean_std(c["train_s"] for c in group)
            row["test_eval_s"] = mean_std(c["test_eval_s"] for c in group)
            row["n_params"] = group[0]["n_params"]
            row["peak_rss_gb"] = max(c["peak_rss_gb"] for c in group)
            row["cells"] = group
            rows[entry["label"]] = row
        baselines = [r for r in rows.values() if r["role"] == "baseline"]
        best_baseline = max(baselines, key=lambda r: r[KEY_METRIC][0], default=None)
        reference = rows.get(suite.reference)
        for row in rows.values():
            host = rows.get(row["host"])
            vs_reference = _significance(row, reference)
            vs_host = vs_reference if host is reference else _significance(row, host)
            for name, sig in (("reference", vs_reference), ("host", vs_host)):
                row[f"gain_vs_{name}"], row[f"p_vs_{name}"] = (
                    (sig["gain"], sig["pooled_p"]) if sig else (math.nan, None))
            row["p_vs_best_baseline"] = _versus(row, best_baseline)[1]
            row["significance"] = [sig for sig in (vs_reference, vs_host if host is not reference else None)
                                   if sig is not None]
        summary[dataset] = {"rows": rows, "best_baseline": best_baseline["label"] if best_baseline else None,
                            "reference": suite.reference, "to_run": to_run(suite, dataset, cells)}
        summary[dataset]["capacity"] = capacity_rows(suite, summary[dataset], speed_rows)
    return summary


def to_run(suite, dataset, cells):
    """The seeds each model of ``suite`` still lacks on ``dataset``: {label: [seed, ...]}, in suite order."""
    done = {(c["label"], c["seed"]) for c in cells if c["dataset"] == dataset}
    missing = {entry["label"]: [seed for seed in suite.seeds_of(entry) if (entry["label"], seed) not in done]
               for entry in suite.models}
    return {label: seeds for label, seeds in missing.items() if seeds}


def capacity_rows(suite, block, speed_rows):
    """One row per suite entry that names a ``family``, in suite order.

    Args:
        suite (Suite): the suite.
        block (dict): one dataset's block of :func:`summarise`.
        speed_rows (Iterable[dict]): ``run_speed`` rows (``variant`` = entry label), possibly none.

    Returns:
        list[dict]: label, family, n_params (None before any cell finished), step_gflop and
        epoch_s (None without a speed row), seeds and the test NDCG@10 (mean, std).
    """
    timings = {row["variant"]: row for row in speed_rows}
    rows = []
    for entry in suite.models:
        if entry["family"] is None:
            continue
        row, timing = block["rows"].get(entry["label"]), timings.get(entry["label"], {})
        rows.append({"label": entry["label"], "family": entry["family"],
                     "n_params": row["n_params"] if row else None, "step_gflop": timing.get("step_gflop"),
                     "epoch_s": timing.get("epoch_s"), "seeds": row["seeds"] if row else 0,
                     KEY_METRIC: row[KEY_METRIC] if row else (math.nan, math.nan)})
    return rows


def capacity_table(rows):
    """Markdown lines of :func:`capacity_rows`."""
    def number(value, pattern):
        return "–" if value is None else pattern.format(value)

    lines = ["Capacity (one line per family in the capacity plot): parameters, matrix work of one training "
             "step (GFLOP, forward and backward, as torch's FlopCounterMode counts it) and epoch time from "
             f"`run_speed --suite` ({SPEED_FILE}), test NDCG@10 over the finished seeds.", "",
             "| model | family | parameters | step GFLOP | epoch s | seeds | test NDCG@10 |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['label']} | {row['family']} | {number(row['n_params'], '{:,}')} | "
                     f"{number(row['step_gflop'], '{:.1f}')} | {number(row['epoch_s'], '{:.1f}')} | {row['seeds']} | "
                     f"{_fmt(row[KEY_METRIC])} |")
    return lines


def plot_capacity(rows, dataset, out_dir):
    """``capacity_<dataset>.png``: test NDCG@10 (± std over seeds) against parameters and against
    step GFLOP, one line per family; returns the file name, or None when no point has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    drawn = False
    for ax, key, label in ((axes[0], "n_params", "parameters"), (axes[1], "step_gflop", "GFLOP per training step")):
        for family in dict.fromkeys(row["family"] for row in rows):
            points = sorted((row[key], *row[KEY_METRIC]) for row in rows
                            if row["family"] == family and row[key] is not None and not math.isnan(row[KEY_METRIC][0]))
            if points:
                x, mean, std = zip(*points)
                ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=family)
                drawn = True
        ax.set(xlabel=label, ylabel="test NDCG@10")
    if not drawn:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Capacity, {dataset}", fontsize=9)
    fig.tight_layout()
    name = f"capacity_{dataset}.png"
    fig.savefig(Path(out_dir) / name, dpi=120)
    plt.close(fig)
    return name


def _fmt(pair, digits=4):
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _gain_p(gain, p_value):
    if math.isnan(gain):
        return "–"
    return f"{gain:+.1%}" + ("" if p_value is None else f" (p {p_value:.2g})")


def markdown(suite, summary):
    """Markdown tables, one per dataset."""
    protocol = portable(suite.protocol) if suite.protocol else "package default (yaml/protocol/loo-full.yaml)"
    lines = [f"# Benchmark suite {suite.name}", "",
             f"Protocol: {protocol}; tuning budget per "
             f"model: {suite.tuning_budget}. Test metrics of the best-validation checkpoint, mean ± std over "
             f"seeds; vs {suite.reference} and vs host = relative NDCG@10 gain and the paired two-sided Wilcoxon "
             "signed-rank test of per-user test NDCG@10 (users × seeds pooled); best epoch counted from 0; "
             "converged = early stopping ended every cell (else the seeds cut by the epoch cap).", ""]
    for dataset, block in summary.items():
        lines += [f"## {dataset}", "",
                  f"Best baseline: {block['best_baseline']}.", "",
                  "| model | regime | seeds | " + " | ".join(TABLE_METRICS) + f" | vs {suite.reference} | host | "
                  "vs host | published NDCG@10 | epochs | best epoch | converged | train s/epoch | train s | "
                  "test eval s | params | peak RSS GB |",
                  "|---|---|---|" + "---|" * len(TABLE_METRICS) + "---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in block["rows"].values():
            metrics = " | ".join(_fmt(row[m]) for m in TABLE_METRICS)
            capped = row["capped_cells"]
            converged_text = "yes" if not capped else "**no**: seed " + ", ".join(map(str, capped))
            lines.append(
                f"| {row['label']}{' (ours)' if row['role'] == 'ours' else ''} | {row['train_regime']} | "
                f"{row['seeds']} | {metrics} | {_gain_p(row['gain_vs_reference'], row['p_vs_reference'])} | "
                f"{row['host'] or '–'} | {_gain_p(row['gain_vs_host'], row['p_vs_host'])} | "
                f"{row['published'] or '–'} | {_fmt(row['epochs'], 1)} | {_fmt(row['best_epoch'], 1)} | "
                f"{converged_text} | {_fmt(row['train_s_per_epoch'], 1)} | {_fmt(row['train_s'], 0)} | "
                f"{_fmt(row['test_eval_s'], 2)} | {row['n_params']:,} | {row['peak_rss_gb']:.2f} |")
        if block["to_run"]:
            lines += ["", "Not recorded yet (the table above holds only finished cells): " + "; ".join(
                f"{label}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                for label, seeds in block["to_run"].items()) + "."]
        lines += ["", *significance_table(block["rows"]), ""]
        if block["capacity"]:
            lines += [*capacity_table(block["capacity"]), ""]
    return "\n".join(lines)


def significance_table(rows):
    """Markdown lines: every comparison of the main table, also seed by seed and run by run."""
    lines = ["Each comparison seed by seed (paired per-user Wilcoxon of the two runs of a seed) and run by "
             "run (Welch's t over the runs' test NDCG@10): the pooled test above treats the users of "
             "different runs as independent and leaves out run-to-run variance (initial weights, dropout, "
             "data order), so a claim that one model beats another needs the run-level test too.", "",
             "| model | against | gain | pooled p | p per seed | p over runs |", "|---|---|---|---|---|---|"]
    for row in rows.values():
        for sig in row.get("significance", []):
            pooled = sig["pooled_p"]
            per_seed = ", ".join(f"{seed}: {p:.2g}" for seed, p in sig["per_seed"].items()) or "–"
            runs = "–" if math.isnan(sig["runs_p"]) else f"{sig['runs_p']:.2g}"
            lines.append(f"| {row['label']} | {sig['against']} | {sig['gain']:+.1%} | "
                         f"{'–' if pooled is None else f'{pooled:.2g}'} | {per_seed} | {runs} |")
    return lines


def continued_note(cells):
    """A line naming the cells that continued from a saved training state (e.g. across sittings)."""
    continued = [f"{c['label']} on {c['dataset']}, seed {c['seed']} "
                 f"(at epoch{'s' if len(c['resumed_at_epochs']) > 1 else ''} "
                 f"{', '.join(str(e) for e in c['resumed_at_epochs'])})" for c in cells if c.get("resumed_at_epochs")]
    if not continued:
        return ""
    return ("\nCells continued from their saved training state after an interruption (a sitting ended or "
            "the machine was needed; weights, optimizer state and random streams restored): "
            + "; ".join(continued) + ".\n")


def _cells_csv(cells):
    columns = ["dataset", "label", "model", "role", "seed", "train_regime", "epochs_run", "best_epoch",
               *(f"test_{m}" for m in TABLE_METRICS), "train_s", "train_s_per_epoch", "test_eval_s",
               "n_params", "peak_rss_gb", "resumed_at_epochs", "dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for cell in cells:
        writer.writerow({**cell, **{f"test_{m}": cell["test_result"][m] for m in TABLE_METRICS}})
    return buffer.getvalue()


def loss_term_curves(rows):
    """Each multi-term model's loss terms over epochs, mean over seeds (HM2Rec's VGAE terms, an MoE's balance loss).

    Args:
        rows (dict): label -> report row whose ``cells`` hold ``valid_history`` records with
            ``train_loss_terms`` (each term summed over the epoch's batches).

    Returns:
        dict: label -> ``{"terms": [name per term], "epochs": [epoch], "values": [[mean per epoch] per term]}``
        for rows where a term after the first is non-zero in some epoch; names come from the
        model class's ``LOSS_TERMS`` (``term <i>`` where it has none); epochs up to the shortest seed's.
    """
    curves = {}
    for label, row in rows.items():
        runs = [[r for r in c["valid_history"] if r.get("train_loss_terms")] for c in row["cells"]]
        runs = [run for run in runs if run]  # cells recorded before the terms were kept have none
        if not runs or len(runs[0][0]["train_loss_terms"]) < 2:
            continue
        length = min(len(run) for run in runs)
        values = np.mean([[r["train_loss_terms"] for r in run[:length]] for run in runs], axis=0)  # [epochs, terms]
        if not np.any(values[:, 1:]):
            continue
        names = getattr(get_model(registry.resolve_model_name(row["cells"][0]["model"])), "LOSS_TERMS", ())
        if len(names) != values.shape[1]:
            names = [f"term {i + 1}" for i in range(values.shape[1])]
        curves[label] = {"terms": list(names), "epochs": [r["epoch"] for r in runs[0][:length]],
                         "values": values.T.tolist()}
    return curves


def plot_loss_terms(curves, dataset, out_dir):
    """One row of panels per model of :func:`loss_term_curves`, one panel per term; the file name or None."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(c["terms"]) for c in curves.values())
    fig, axes = plt.subplots(len(curves), width, figsize=(3.2 * width, 2.6 * len(curves)), squeeze=False)
    for ax_row, (label, curve) in zip(axes, curves.items()):
        for ax, name, values in zip(ax_row, curve["terms"], curve["values"]):
            ax.plot(curve["epochs"], values, "o-", markersize=2)
            ax.set_title(f"{label}: {name}", fontsize=7)
            ax.set_xlabel("epoch", fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in ax_row[len(curve["terms"]):]:
            ax.axis("off")
    fig.suptitle(f"Training loss terms on {dataset} (summed over an epoch's batches, mean over seeds)", fontsize=8)
    fig.tight_layout()
    name = f"loss_terms_{dataset}.png"
    fig.savefig(out_dir / name, dpi=120)
    plt.close(fig)
    return name


def graph_curves(rows):
    """HM2Rec's graph telemetry over epochs, mean over seeds, for the rows that record it.

    Args:
        rows (dict): label -> report row whose ``cells`` hold ``moe_telemetry`` records with a
            ``graph`` entry (:meth:`recbole_hymoe.models.hm2rec.HM2Rec.graph_telemetry`).

    Returns:
        dict: label -> ``{"epochs": [epoch], <key>: [mean per epoch]}`` for every key all its
        seeds record; epochs up to the shortest seed's; rows without the telemetry are left out.
    """
    curves = {}
    for label, row in rows.items():
        runs = [[t for t in c.get("moe_telemetry") or [] if "graph" in t] for c in row["cells"]]
        runs = [run for run in runs if run]  # cells recorded before the graph telemetry have none
        if not runs:
            continue
        length = min(len(run) for run in runs)
        keys = set.intersection(*(set(run[0]["graph"]) for run in runs))
        curve = {"epochs": [t["epoch"] for t in runs[0][:length]]}
        for key in sorted(keys):
            curve[key] = np.mean([[t["graph"][key] for t in run[:length]] for run in runs], axis=0).tolist()
        curves[label] = curve
    return curves


def plot_graph_curves(curves, dataset, out_dir):
    """Panels of :func:`graph_curves`: the graph term against the ID rows, and the sampled noise; the file
    name or None."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("graph term / ID row (mean norms)", lambda c: np.divide(c["graph_norm"], c["id_norm"])
               if "id_norm" in c else None),
              ("sampled noise / table (Frobenius)", lambda c: c.get("noise_ratio")))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2))
    for ax, (title, value) in zip(axes, panels):
        for label, curve in curves.items():
            values = value(curve)
            if values is not None:
                ax.plot(curve["epochs"], values, "o-", markersize=2, label=label)
        ax.set(xlabel="epoch", title=title)
        ax.title.set_fontsize(8)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(f"How much of the item table the graph carries on {dataset} (end of each epoch, mean over seeds)",
                 fontsize=8)
    fig.tight_layout()
    name = f"graph_parts_{dataset}.png"
    fig.savefig(out_dir / name, dpi=120)
    plt.close(fig)
    return name


def plot_report(suite, summary, out_dir):
    """Learning curves, loss terms and graph telemetry per dataset; expert usage by popularity tier and over
    epochs per MoE model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset, block in summary.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in block["rows"].values():
            curves = [[r["valid_result"].get(KEY_METRIC, math.nan) for r in c["valid_history"]] for c in row["cells"]]
            length = min(len(c) for c in curves) if curves else 0
            if length:
                ax.plot(range(length), np.mean([c[:length] for c in curves], axis=0), label=row["label"])
        ax.set(xlabel="epoch", ylabel="valid NDCG@10 (mean over seeds)", title=f"Learning curves, {dataset}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"learning_curves_{dataset}.png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(name)
        for name in (plot_loss_terms(loss_term_curves(block["rows"]), dataset, out_dir),
                     plot_graph_curves(graph_curves(block["rows"]), dataset, out_dir)):
            if name:
                written.append(name)
        for row in block["rows"].values():
            cell = row["cells"][0]
            if not cell.get("expert_usage_by_tier"):
                continue
            layers = list(cell["expert_usage_by_tier"].items())
            fig, axes = plt.subplots(1, len(layers) + 1, figsize=(4 * (len(layers) + 1), 3.2))
            for ax, (layer, counts) in zip(axes, layers):
                counts = np.asarray(counts, dtype=np.float64)
                share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
                image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto")
                ax.set_yticks(range(len(cell["tiers"])), cell["tiers"])
                ax.set_xticks(range(share.shape[1]), [f"e{e}" for e in range(share.shape[1])])
                ax.set_title(f"{layer}\n(share of tier's tokens)", fontsize=7)
            fig.colorbar(image, ax=axes[len(layers) - 1])
            over_epochs = axes[-1]
            telemetry = cell.get("moe_telemetry") or []
            if telemetry:
                first_layer = next(iter(telemetry[0]["layers"]))
                shares = np.asarray([t["layers"][first_layer]["token_share"] for t in telemetry])
                for e in range(shares.shape[1]):
                    over_epochs.plot(shares[:, e], "o-", markersize=3, label=f"e{e}")
                over_epochs.set(xlabel="epoch", ylabel="token share", title=f"{first_layer}: usage over epochs")
                over_epochs.title.set_fontsize(7)
                over_epochs.legend(fontsize=6)
            fig.suptitle(f"{row['label']} on {dataset} (seed {cell['seed']})", fontsize=8)
            fig.tight_layout()
            name = f"experts_{dataset}_{row['label']}.png".replace(" ", "_")
            fig.savefig(out_dir / name, dpi=120)
            plt.close(fig)
            written.append(name)
    return written


def write_report(suite, out_dir):
    """Write ``cells.csv``, ``cells.json``, ``results.md`` and the plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = load_cells(suite, out_dir)
    speed_file = out_dir / SPEED_FILE
    speed_rows = json.loads(speed_file.read_text(encoding="utf-8"))["rows"] if speed_file.is_file() else []
    summary = summarise(suite, cells, speed_rows)
    write_atomic(out_dir / "cells.csv", _cells_csv(cells))
    public = [{k: v for k, v in c.items() if k != "per_user"} for c in cells]
    write_atomic(out_dir / "cells.json", json.dumps(public, indent=2, default=str))
    write_atomic(out_dir / "results.md", markdown(suite, summary) + continued_note(cells))
    plots = plot_report(suite, summary, out_dir) if cells else []
    for dataset, block in summary.items():
        name = plot_capacity(block["capacity"], dataset, out_dir) if block["capacity"] else None
        if name:
            plots.append(name)
    table = {dataset: {label: {k: v for k, v in row.items() if k != "cells"} for label, row in block["rows"].items()}
             for dataset, block in summary.items()}
    write_atomic(out_dir / "summary.json", json.dumps(table, indent=2, default=str))
    return {"cells": len(cells), "plots": plots, "summary": table}
