"""Real Ray Tune sweeps on a small slice of ml-100k: per-epoch reports, ASHA, resume, skips, plots."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from recbole_hymoe import Config
from recbole_hymoe.tuning.report import plot_sweep, trial_rows
from recbole_hymoe.tuning.space import SearchSpace

pytestmark = pytest.mark.integration

TINY = {"train_regime": "all_positions", "epochs": 2, "hidden_size": 16, "inner_size": 32,
        "MAX_ITEM_LIST_LENGTH": 20, "state": "ERROR"}
RAY_ENV = {"RAY_memory_monitor_refresh_ms": "0", "RAY_DEDUP_LOGS": "0"}


def finished_trials(trials_dir):
    """Trial folders whose status shows all epochs done (or an end of its own)."""
    done = []
    for status in Path(trials_dir).glob("*/status.json"):
        try:
            data = json.loads(status.read_text())
            if data["reason"] != "running" or data.get("epochs_done") == TINY["epochs"]:
                done.append(status.parent)
        except json.JSONDecodeError:  # being written
            continue
    return done


def test_sweep_reports_every_epoch_stops_weak_trials_and_resumes_after_ctrl_c(tmp_path, mini_data_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "model": "HyMoERec", "dataset": "mini", "base": TINY,
        # two learning-rate-0 trials cannot improve on their random start: ASHA stops them at epoch 1
        "space": {"learning_rate": {"grid": [0.01, 0.005, 0.0, 0.0]}},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    }))
    script = Path(sys.executable).parent / "run_tune"
    command = [str(script), f"--space={sweep}", f"--data_path={mini_data_path}", "--out=out",
               "--max-concurrent=1", "--num-cpus=2"]
    env = {**os.environ, **RAY_ENV}
    log = open(tmp_path / "first.log", "w")  # a file, not a pipe: Ray's output would fill a pipe and block
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not finished_trials(tmp_path / "out" / "trials") and time.monotonic() < deadline:
        time.sleep(1)
    assert finished_trials(tmp_path / "out" / "trials"), "no trial finished in time"
    first.send_signal(signal.SIGINT)  # Ctrl-C
    first.wait(timeout=300)
    log.close()
    done_before = {p.name: (p / "status.json").read_text() for p in finished_trials(tmp_path / "out" / "trials")}

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for name, status in done_before.items():  # finished trials were not run again
        assert (tmp_path / "out" / "trials" / name / "status.json").read_text() == status

    with open(tmp_path / "out" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        progress = list(csv.DictReader(open(Path(row["path"]) / "progress.csv")))
        reported = [int(r["epoch"]) for r in progress]
        # one report per epoch, in order; an epoch may repeat only where the resumed sweep replayed it
        # from the checkpoint before it (Ctrl-C between Ray logging a report and registering its checkpoint)
        assert sorted(set(reported)) == list(range(int(row["epochs"]))) and reported == sorted(reported)
        assert all(float(r["valid_ndcg@10"]) >= 0 for r in progress)
    stopped = [r for r in rows if r["stop_reason"] == "stopped by the scheduler (ASHA)"]
    assert {float(r["learning_rate"]) for r in stopped} == {0.0} and all(r["epochs"] == "1" for r in stopped)
    assert float(rows[0]["learning_rate"]) > 0  # ranked by best validation score

    results = (tmp_path / "out" / "results.md").read_text()
    assert "Best trial on test" in results and "| 1 |" in results
    best = tmp_path / "out" / "best.yaml"
    config = Config(config_file_list=[str(best)], config_dict={"state": "ERROR"})
    assert config["model"] == "HyMoERec" and config["learning_rate"] == float(rows[0]["learning_rate"])


def test_random_draws_that_can_never_be_valid_are_skipped_not_crashed(tmp_path, mini_data_path):
    from recbole_hymoe.tuning import run_tune

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "model": "HyMoERec", "dataset": "mini", "base": TINY, "num_samples": 2,
        "space": {"moe_num_experts": {"choice": [2]}, "moe_top_k": {"randint": [3, 4]}},  # K = 3 > E = 2
    }))
    os.environ.update(RAY_ENV)
    import ray

    try:
        report = run_tune(str(sweep), overrides={"data_path": str(mini_data_path)}, out_dir=str(tmp_path / "out"),
                          num_cpus=2)
    finally:
        ray.shutdown()
    assert len(report["trials"]) == 2 and report["best"] is None
    assert all(t["stop_reason"].startswith("skipped (invalid combination") for t in report["trials"])
    assert "moe_top_k=3" in report["trials"][0]["stop_reason"]


PAPER_PLOTS = [  # the HyMoERec paper's figures, as yaml/tune/hymoerec-{warmup,balance,experts}.yaml ask for them
    {"file": "hr10_vs_warmup.png", "x": "moe_warmup_steps", "metrics": ["valid_hit@10"]},
    {"file": "ndcg10_entropy_vs_balance.png", "x": "moe_balance_weight",
     "metrics": ["valid_ndcg@10", "moe_usage_entropy"]},
    {"file": "ndcg10_experts_topk.png", "x": "moe_num_experts", "y": "moe_top_k", "metric": "valid_ndcg@10"},
]


def test_plots_of_the_papers_experiments(tmp_path):
    space = SearchSpace({"space": {"moe_warmup_steps": {"grid": [0, 100]}, "moe_balance_weight": {"grid": [0.0, 0.01]},
                                   "moe_num_experts": {"grid": [2, 4]}, "moe_top_k": {"grid": [1, 2]}},
                         "plots": PAPER_PLOTS})
    rows = [{"moe_warmup_steps": w, "moe_balance_weight": b, "moe_num_experts": e, "moe_top_k": k,
             "best_valid_score": 0.05, "valid_hit@10": 0.1 + w / 1e4, "valid_ndcg@10": 0.05 + b,
             "moe_usage_entropy": 1.2 + b} for w, b, e, k in [(0, 0.0, 2, 1), (100, 0.01, 4, 2), (0, 0.01, 2, 2)]]
    written = plot_sweep(rows, space, tmp_path)
    assert written == ["hr10_vs_warmup.png", "ndcg10_entropy_vs_balance.png", "ndcg10_experts_topk.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_plots_the_report_plots_the_best_score_against_each_searched_key(tmp_path):
    space = SearchSpace({"space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
                                   "moe_router": {"choice": ["linear", "mlp"]}}})
    rows = [{"learning_rate": lr, "moe_router": router, "best_valid_score": score}
            for lr, router, score in [(1e-3, "mlp", 0.1), (1e-4, "linear", 0.2), (5e-3, "mlp", 0.15)]]
    written = plot_sweep(rows, space, tmp_path)
    assert written == ["best_valid_vs_learning_rate.png", "best_valid_vs_moe_router.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_replayed_epoch_counts_once_with_its_later_report(tmp_path):
    import pandas as pd

    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "status.json").write_text(json.dumps({"reason": "completed max epochs", "best_model": "m.pth"}))
    # epoch 1 reported, then replayed after a resume with a different (lower) score
    frame = pd.DataFrame({"epoch": [0, 1, 1], "valid_score": [0.10, 0.30, 0.20], "valid_ndcg@10": [0.10, 0.30, 0.20]})
    result = SimpleNamespace(config={"learning_rate": 0.01}, path=str(tmp_path / "ray-t1"), error=None,
                             metrics_dataframe=frame, metrics={"trial_id": "t1", "time_total_s": 12.34})
    space = SearchSpace({"space": {"learning_rate": {"grid": [0.01]}}})
    [row] = trial_rows([result], space, max_epochs=2, trials_dir=tmp_path)
    assert row["epochs"] == 2 and row["best_epoch"] == 1
    assert row["best_valid_score"] == 0.20 and row["valid_ndcg@10"] == 0.20
    assert row["stop_reason"] == "completed max epochs" and row["wall_s"] == 12.3


def test_seeds_group_trials_into_points_ranked_by_their_mean(tmp_path):
    from recbole_hymoe.tuning.report import _markdown, points

    space = SearchSpace({"space": {"moe_num_experts": {"grid": [2, 4]}}, "seeds": [1, 2],
                         "plots": [{"file": "ndcg_vs_e.png", "x": "moe_num_experts", "metrics": ["valid_ndcg@10"]}]})
    assert space.ray_space()["seed"] == {"grid_search": [1, 2]}
    rows = [{"trial": f"t{e}{seed}", "moe_num_experts": e, "seed": seed, "best_valid_score": score,
             "valid_ndcg@10": score, "epochs": epochs, "stop_reason": "early stopping", "wall_s": 1.0}
            for e, seed, score, epochs in [(2, 1, 0.30, 10), (2, 2, 0.10, 20), (4, 1, 0.22, 30), (4, 2, 0.20, 40)]]
    rows.append({"trial": "t-skip", "moe_num_experts": 8, "seed": 1, "best_valid_score": None,
                 "stop_reason": "error", "wall_s": 0.0})
    found = points(rows, space)
    # E = 2 has the best single trial (0.30) but the worse mean (0.20 < 0.21): the mean decides
    assert [p["moe_num_experts"] for p in found] == [4, 2]
    assert found[0]["best_valid_score"] == pytest.approx(0.21) and found[0]["seeds"] == 2
    assert found[0]["best_valid_score_std"] == pytest.approx(0.0141421, abs=1e-6)  # sample std of 0.22, 0.20
    assert found[1]["epochs"] == 15 and found[0]["trials"] == ["t41", "t42"]
    table = _markdown(rows, space, {"model": "HyMoERec", "dataset": "mini", "valid_metric": "NDCG@10"},
                      {"ndcg@10": 0.2, "ndcg@10_std": 0.01}, found)
    assert "| 1 | 4 | 2 | 0.2100 ± 0.0141 | 35.0 |" in table  # the points table
    assert "| rank | moe_num_experts | seed | best valid NDCG@10 |" in table  # the trials table
    assert "Best point on test (each seed's best-validation checkpoint, mean ± std): ndcg@10 0.2000 ± 0.0100." in table
    assert plot_sweep(found, space, tmp_path) == ["ndcg_vs_e.png"]
    with pytest.raises(Exception, match="seeds must be a list of distinct integers"):
        SearchSpace({"space": {"moe_num_experts": {"grid": [2]}}, "seeds": [1, 1]})
    with pytest.raises(Exception, match="not as 'seed' in 'space'"):
        SearchSpace({"space": {"seed": {"grid": [2]}}, "seeds": [1]})
