"""Benchmark suites: statistics, per-user metrics, input checks, a real smoke run and resume."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import REPO

from recbole_hymoe import cli
from recbole_hymoe.bench import runner
from recbole_hymoe.bench.stats import mean_std, paired_wilcoxon, relative_gain, welch_t
from recbole_hymoe.bench.suite import Suite
from recbole_hymoe.errors import ConfigError

SMOKE = "yaml/bench/ml-100k-smoke.yaml"
TINY = {"epochs": 1, "hidden_size": 32, "inner_size": 32, "MAX_ITEM_LIST_LENGTH": 20, "state": "ERROR"}


def test_mean_std_and_relative_gain_on_hand_numbers():
    assert mean_std([0.1, 0.2, 0.3]) == pytest.approx((0.2, 0.1))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert relative_gain(0.19, 0.18) == pytest.approx(1 / 18)
    assert math.isnan(relative_gain(0.1, 0.0))


def test_welch_t_matches_scipy_and_needs_two_runs_a_side():
    a, b = [0.0568, 0.0566, 0.0570], [0.0556, 0.0562, 0.0555]
    assert welch_t(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(welch_t([0.05], b)) and math.isnan(welch_t([0.05, 0.05], [0.04, 0.04]))


def test_paired_wilcoxon_matches_scipy_on_a_hand_example():
    a = [0.5, 0.0, 1.0, 0.63, 0.0, 0.43, 0.0, 0.33]
    b = [0.33, 0.0, 0.5, 0.5, 0.0, 0.39, 0.1, 0.0]
    # differences without the two ties: 0.17, 0.5, 0.13, 0.04, -0.1, 0.33 -> W- = rank of 0.1 = 2
    expected = stats.wilcoxon([x - y for x, y in zip(a, b) if x != y]).pvalue
    assert paired_wilcoxon(a, b) == pytest.approx(expected)
    assert stats.wilcoxon([x - y for x, y in zip(a, b) if x != y]).statistic == 2.0
    assert paired_wilcoxon([0.1, 0.2], [0.1, 0.2]) == 1.0
    with pytest.raises(ValueError, match="paired samples differ in size"):
        paired_wilcoxon([1.0], [1.0, 2.0])


def test_suite_problems_are_all_listed_before_anything_runs(tmp_path, mini_data_path):
    suite = Suite({"name": "bad", "datasets": ["mini", "nowhere"], "seeds": [1],
                   "models": [{"model": "HyMoERec", "overrides": {"moe_top_k": 9}}, {"model": "NoSuchModel"},
                              {"label": "ok", "model": "SASRec"}]})
    with pytest.raises(ConfigError) as err:
        suite.check({"data_path": str(mini_data_path)})
    message = str(err.value)
    assert "HyMoERec on mini: " in message and "moe_top_k=9" in message
    assert "NoSuchModel on mini: " in message and "unknown model 'NoSuchModel'" in message
    assert "ok on nowhere: " in message and "dataset 'nowhere' not found" in message
    with pytest.raises(ConfigError, match=r"models\[0\].overrides holds \['published'\], which belong to the model"):
        Suite({"name": "n", "datasets": ["mini"], "seeds": [1],
               "models": [{"model": "FuXiAlpha", "overrides": {"use_time_channel": False, "published": "0.18"}}]})
    with pytest.raises(ConfigError, match="missing 'seeds'.*reference 'x' is not one of"):
        Suite({"name": "n", "datasets": ["mini"], "models": [{"model": "SASRec"}], "reference": "x"})
    with pytest.raises(ConfigError, match=r"SASRec: seeds must be integers, got \['a'\]"):
        Suite({"name": "n", "datasets": ["mini"], "seeds": [1], "models": [{"model": "SASRec", "seeds": ["a"]}]})


def test_an_entry_may_run_more_seeds_than_the_suite_after_every_models_suite_seeds(tmp_path):
    suite = Suite({"name": "n", "datasets": ["mini"], "seeds": [1, 2],
                   "models": [{"model": "SASRec", "seeds": [1, 2, 3, 4]}, {"model": "GRU4Rec"}]})
    cells = [(c["label"], c["seed"]) for c in suite.cells(tmp_path)]
    assert cells == [("SASRec", 1), ("SASRec", 2), ("GRU4Rec", 1), ("GRU4Rec", 2), ("SASRec", 3), ("SASRec", 4)]


@pytest.mark.integration
def test_smoke_suite_runs_every_model_reports_statistics_and_resumes(tmp_path, mini_data_path, monkeypatch):
    overrides = {**TINY, "data_path": str(mini_data_path)}
    summary = runner.run_suite(SMOKE, tmp_path / "out", executor="inline", overrides=overrides, datasets=["mini"])
    suite = Suite.from_file(SMOKE)
    assert summary["ran"] == len(suite.models) and not summary["failed"]
    report = summary["report"]
    rows = report["summary"]["mini"]
    assert set(rows) == {m["label"] for m in suite.models}
    assert rows["SASRec"]["train_regime"] == rows["HyMoERec"]["train_regime"] == "all_positions"
    assert any(row["p_vs_best_baseline"] is not None for row in rows.values())
    assert rows["HyMoERec"]["host"] == "SASRec-equivalent" and rows["HyMoERec"]["p_vs_host"] is not None
    assert rows["HM2Rec"]["host"] == "Mamba4Rec" and rows["SASRec"]["p_vs_host"] is None
    assert "learning_curves_mini.png" in report["plots"] and "experts_mini_HyMoERec.png" in report["plots"]
    assert "loss_terms_mini.png" in report["plots"]  # HM2Rec's graph terms, the MoE models' balance loss
    results = (tmp_path / "out" / "results.md").read_text()
    assert "| SASRec-equivalent | all_positions | 1 |" in results and "Best baseline:" in results

    cell = json.loads(next((tmp_path / "out" / "cells").rglob("result.json")).read_text())
    per_user = np.load(next((tmp_path / "out" / "cells").rglob("per_user.npz")))
    assert per_user["ndcg@10"].mean() == pytest.approx(cell["test_result"]["ndcg@10"], abs=1e-4)
    assert len(per_user["user"]) == len(set(per_user["user"].tolist()))

    def must_not_run(spec):
        raise AssertionError(f"finished cell run again: {spec['dir']}")

    monkeypatch.setattr("recbole_hymoe.bench.cell.run_cell", must_not_run)
    again = runner.run_suite(SMOKE, tmp_path / "out", executor="inline", overrides=overrides, datasets=["mini"])
    assert again["ran"] == 0 and again["skipped"] == len(suite.models)


@pytest.mark.integration
def test_an_interrupted_suite_runs_only_its_missing_cells(tmp_path, mini_data_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "two", "datasets": ["mini"], "seeds": [1, 2],
        "models": [{"label": "SASRec-equivalent", "model": "HyMoERec", "overrides": {"moe_num_experts": 0}}],
    }))
    overrides = {**TINY, "data_path": str(mini_data_path), "train_regime": "all_positions"}
    first = runner.run_suite(str(suite_file), tmp_path / "out", executor="local", overrides=overrides)
    assert first["ran"] == 2
    lost = next((tmp_path / "out" / "cells").rglob("seed-2/result.json"))
    lost.unlink()  # as if the suite had been interrupted during this cell
    second = runner.run_suite(str(suite_file), tmp_path / "out", executor="local", overrides=overrides)
    assert second == {**second, "ran": 1, "skipped": 1, "failed": []}
    assert lost.is_file()


@pytest.mark.integration
def test_models_runs_only_the_named_labels_and_refuses_unknown_ones(tmp_path, mini_data_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "two", "datasets": ["mini"], "seeds": [1], "train_regime": "all_positions",
        "protocol": "yaml/protocol/loo-full.yaml",
        "models": [{"label": "Pop", "model": "Pop"},
                   {"label": "SASRec-equivalent", "model": "HyMoERec", "overrides": {"moe_num_experts": 0}}],
    }))
    overrides = {**TINY, "data_path": str(mini_data_path)}
    with pytest.raises(ConfigError, match=r"models \['SASrec'\] are not labels of suite 'two'.*'Pop'"):
        runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides,
                         labels=["SASrec"])
    done = runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides,
                            labels=["Pop"])
    assert done["ran"] == 1 and done["skipped"] == 0
    assert [p.parent.parent.name for p in (tmp_path / "out" / "cells").rglob("result.json")] == ["pop"]


@pytest.mark.integration
def test_seeds_runs_only_the_named_seeds_and_refuses_others(tmp_path, mini_data_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "two", "datasets": ["mini"], "seeds": [1, 2], "protocol": "yaml/protocol/loo-full.yaml",
        "models": [{"label": "Pop", "model": "Pop"}, {"label": "Pop again", "model": "Pop", "seeds": [1, 2, 3]}],
    }))
    overrides = {**TINY, "data_path": str(mini_data_path)}
    with pytest.raises(ConfigError, match=r"seeds \[3\] are not seeds of the named models of suite 'two'.*\[1, 2\]"):
        runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides,
                         labels=["Pop"], seeds=[3])
    args = [f"--suite={suite_file}", f"--out={tmp_path / 'out'}", f"--data_path={mini_data_path}"]
    assert cli.run_bench_main([*args, "--seeds=2,x"]) == 2
    done = runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides, seeds=[2, 3])
    assert done == {**done, "ran": 3, "skipped": 0, "failed": [], "busy": []}
    ran = sorted(str(p.parent.relative_to(tmp_path / "out" / "cells")) for p in (tmp_path / "out").rglob("result.json"))
    assert ran == ["mini/pop-again/seed-2", "mini/pop-again/seed-3", "mini/pop/seed-2"]


def test_a_cell_another_process_holds_is_passed_over_and_a_finished_one_is_not_run_again(tmp_path):
    cell = tmp_path / "cell"
    cell.mkdir()
    holder = subprocess.Popen(  # another process, as a second run_bench would be
        [sys.executable, "-c", f"from filelock import FileLock; lock = FileLock({str(cell / runner.LOCK_FILE)!r}); "
                               "lock.acquire(); print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    calls = []

    def run(spec):
        calls.append(spec["dir"])
        (Path(spec["dir"]) / "result.json").write_text("{}")
        return True

    try:
        assert runner.run_claimed({"dir": str(cell)}, run) == runner.BUSY and calls == []
    finally:
        holder.communicate("\n")
    assert runner.run_claimed({"dir": str(cell)}, run) == runner.RAN and calls == [str(cell)]
    assert runner.run_claimed({"dir": str(cell)}, run) == runner.DONE and len(calls) == 1  # finished meanwhile
    assert runner.run_claimed({"dir": str(tmp_path / "other")}, lambda spec: False) == runner.FAILED


@pytest.mark.integration
def test_a_recorded_cell_under_changed_settings_is_refused_naming_what_changed(tmp_path, mini_data_path):
    entry = {"label": "Pop", "model": "Pop"}
    suite = {"name": "one", "datasets": ["mini"], "seeds": [1], "protocol": "yaml/protocol/loo-full.yaml",
             "models": [entry]}
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(suite))
    overrides = {**TINY, "data_path": str(mini_data_path)}
    runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides)
    moved = tmp_path / "elsewhere"  # where the data lies may change; what the cell computed may not
    moved.symlink_to(mini_data_path, target_is_directory=True)
    again = runner.run_suite(str(suite_file), tmp_path / "out", executor="inline",
                             overrides={**overrides, "data_path": str(moved)})
    assert again["ran"] == 0 and again["skipped"] == 1
    extra = tmp_path / "extra.yaml"
    extra.write_text("eval_batch_size: 512\n")
    entry["config_files"] = [str(extra)]
    entry["overrides"] = {"stopping_step": 3}
    suite_file.write_text(yaml.safe_dump(suite))
    with pytest.raises(ConfigError, match=r"(?s)1 recorded cell.*Pop on mini, seed 1 .*config_files "
                                          r"\['yaml/protocol/loo-full.yaml'\] -> \['yaml/protocol/loo-full.yaml', "
                                          r"'.*extra.yaml'\]; stopping_step None -> 3"):
        runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides)
    code = cli.run_bench_main([f"--suite={suite_file}", f"--out={tmp_path / 'out'}", "--report-only",
                               f"--data_path={mini_data_path}"])
    assert code == 2  # the report refuses the same way
    shutil.rmtree(tmp_path / "out" / "cells" / "mini" / "pop")  # run again under the new settings
    assert runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides)["ran"] == 1
    again = runner.run_suite(str(suite_file), tmp_path / "out", executor="inline", overrides=overrides)
    assert again["skipped"] == 1  # a settings file outside the working directory is recorded by name, and matches


def test_a_recorded_cell_whose_model_default_changed_since_is_refused(tmp_path, mini_data_path):
    """A default in the model's defaults file that differs from the one the cell recorded is named."""
    from recbole_hymoe.bench.cell import RESULT_FILE, model_settings
    from recbole_hymoe.config import Config

    files, overrides = ["yaml/protocol/loo-full.yaml"], {"data_path": str(mini_data_path), "state": "ERROR"}
    now = model_settings(Config("FuxiMME", "mini", files, overrides))
    assert now["set_inner_widths"] == "host" and now["n_embedding_sets"] == 2 and "seed" not in now
    assert model_settings(Config("SASRec", "mini", files, overrides))["hidden_size"] == 64  # RecBole's file
    spec = {"label": "FuxiMME", "model": "FuxiMME", "dataset": "mini", "seed": 1, "config_files": files,
            "overrides": overrides, "dir": str(tmp_path)}
    recorded = {"model": "FuxiMME", "config_files": files, "overrides": overrides,
                "model_settings": {**now, "set_inner_widths": "split", "a_key_since_removed": 1}}
    (tmp_path / RESULT_FILE).write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match=r"FuxiMME on mini, seed 1 .*: default set_inner_widths 'split' -> 'host'$"):
        runner.check_recorded_cells([spec])
    (tmp_path / RESULT_FILE).write_text(json.dumps({**recorded, "model_settings": now}))
    runner.check_recorded_cells([spec])  # same defaults: accepted
    del recorded["model_settings"]  # recorded before cells kept their defaults: checked on the rest
    (tmp_path / RESULT_FILE).write_text(json.dumps(recorded))
    runner.check_recorded_cells([spec])
    started_before = Config("FuxiMME", "mini", files, overrides)  # a run whose config predates a key
    del started_before.final_config_dict["set_inner_widths"]
    was = model_settings(started_before)
    assert "set_inner_widths" not in was and was["n_embedding_sets"] == 2  # left out, not recorded as null
    (tmp_path / RESULT_FILE).write_text(json.dumps({**recorded, "model_settings": was}))
    runner.check_recorded_cells([spec])  # a key added since is not compared


@pytest.mark.integration
def test_a_cell_cut_mid_training_continues_to_the_uninterrupted_result(tmp_path, mini_data_path):
    from recbole_hymoe.bench.cell import RESULT_FILE, run_cell

    def spec(folder, epochs):
        return {"label": "SASRec-equivalent", "model": "HyMoERec", "role": None, "dataset": "mini", "seed": 7,
                "config_files": ["yaml/protocol/loo-full.yaml"], "dir": str(tmp_path / folder),
                "overrides": {**TINY, "epochs": epochs, "moe_num_experts": 0, "train_regime": "all_positions",
                              "data_path": str(mini_data_path)}}

    whole = run_cell(spec("whole", 3))
    run_cell(spec("cut", 2))  # as if the cell had been stopped after its second validation
    (tmp_path / "cut" / RESULT_FILE).unlink()
    continued = run_cell(spec("cut", 3))
    assert continued["resumed_at_epochs"] == [2] and whole["resumed_at_epochs"] == []
    assert continued["epochs_run"] == whole["epochs_run"] == 3
    assert continued["test_result"] == whole["test_result"]
    assert [r["valid_score"] for r in continued["valid_history"]] == [r["valid_score"] for r in whole["valid_history"]]


def test_report_names_the_cells_that_continued_across_an_interruption():
    from recbole_hymoe.bench.report import continued_note

    cells = [{"label": "HyMoERec", "dataset": "beauty", "seed": 2020, "resumed_at_epochs": [12, 46]},
             {"label": "SASRec", "dataset": "beauty", "seed": 2021, "resumed_at_epochs": []}]
    note = continued_note(cells)
    assert "HyMoERec on beauty, seed 2020 (at epochs 12, 46)." in note and "SASRec" not in note
    assert continued_note(cells[1:]) == ""


def test_report_flags_capped_cells_and_compares_with_the_host():
    from recbole_hymoe.bench.report import _versus, converged

    assert converged({"model": "SASRec", "epochs_run": 30, "best_epoch": 19, "overrides": {"stopping_step": 10}})
    assert not converged({"model": "SASRec", "epochs_run": 30, "best_epoch": 20,
                          "overrides": {"stopping_step": 10}})  # cut by a cap
    assert not converged({"model": "HyMoERec", "epochs_run": 12, "best_epoch": 10, "overrides": {}})  # default 10
    assert converged({"model": "Pop", "epochs_run": 1, "best_epoch": 0, "overrides": {"stopping_step": 10}})  # one pass

    def row(values):
        cells = [{"seed": 1, "per_user": {"user": np.arange(len(values)), "ndcg@10": np.asarray(values)}}]
        return {"cells": cells, "ndcg@10": (float(np.mean(values)), 0.0)}

    ours, host = row([0.5, 0.6, 0.2, 0.9, 0.3, 0.8]), row([0.4, 0.5, 0.1, 0.7, 0.2, 0.6])
    gain, p_value = _versus(ours, host)
    assert gain == pytest.approx((0.55 - 0.4166667) / 0.4166667)
    assert p_value == pytest.approx(stats.wilcoxon([0.1, 0.1, 0.1, 0.2, 0.1, 0.2]).pvalue)
    assert _versus(ours, None) == (pytest.approx(float("nan"), nan_ok=True), None)


def test_report_compares_seed_by_seed_and_run_by_run():
    from recbole_hymoe.bench.report import _significance, _versus, significance_table

    def model(label, runs):
        cells = [{"seed": seed, "per_user": {"user": np.arange(len(v)), "ndcg@10": np.asarray(v)}}
                 for seed, v in runs.items()]
        return {"label": label, "cells": cells, "ndcg@10": (float(np.mean([np.mean(v) for v in runs.values()])), 0.0)}

    ours = model("A", {1: [0.5, 0.6, 0.2, 0.9, 0.3, 0.8], 2: [0.4, 0.7, 0.3, 0.8, 0.2, 0.7]})
    host = model("B", {1: [0.4, 0.5, 0.1, 0.7, 0.2, 0.6], 2: [0.5, 0.6, 0.2, 0.6, 0.1, 0.7]})
    sig = _significance(ours, host)
    assert sig["against"] == "B"
    for i, seed in enumerate((1, 2)):
        expected = stats.wilcoxon(ours["cells"][i]["per_user"]["ndcg@10"], host["cells"][i]["per_user"]["ndcg@10"])
        assert sig["per_seed"][seed] == pytest.approx(expected.pvalue)
    runs = stats.ttest_ind([np.mean(c["per_user"]["ndcg@10"]) for c in ours["cells"]],
                           [np.mean(c["per_user"]["ndcg@10"]) for c in host["cells"]], equal_var=False)
    assert sig["runs_p"] == pytest.approx(runs.pvalue)
    assert _significance(ours, None) is None and _significance(ours, ours) is None
    ours["significance"] = [sig]
    lines = significance_table({"A": ours, "B": host})
    assert lines[-1] == (f"| A | B | +{(ours['ndcg@10'][0] / host['ndcg@10'][0] - 1):.1%} | "
                         f"{_versus(ours, host)[1]:.2g} | 1: {sig['per_seed'][1]:.2g}, 2: {sig['per_seed'][2]:.2g} | "
                         f"{runs.pvalue:.2g} |")
    with pytest.raises(ConfigError, match="HyMoERec: host 'Nobody' is not one of the model labels"):
        Suite({"name": "n", "datasets": ["mini"], "seeds": [1],
               "models": [{"model": "HyMoERec", "host": "Nobody"}, {"model": "SASRec", "colour": 1}]})
    with pytest.raises(ConfigError, match=r"models\[1\]: unknown entries \['colour'\]"):
        Suite({"name": "n", "datasets": ["mini"], "seeds": [1],
               "models": [{"model": "SASRec"}, {"model": "GRU4Rec", "colour": 1}]})


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "yaml" / "bench").glob("*.yaml")))
def test_every_shipped_suite_builds_each_model_config(path, mini_data_path, monkeypatch):
    # On the small bundled slice instead of the suite's datasets (which users may not have): every
    # entry's keys, overrides and config files are checked as the real run would check them.
    monkeypatch.chdir(REPO)
    data = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
    Suite({**data, "datasets": ["mini"]}, source=path).check(extra={"data_path": str(mini_data_path)})


def test_a_suite_times_its_entries_with_their_files_overrides_and_regime():
    from recbole_hymoe.bench.speed import suite_variants

    suite = Suite.from_file("yaml/bench/capacity-ml1m.yaml")
    variants = {v.label: v for v in suite_variants(suite)}
    assert list(variants) == [entry["label"] for entry in suite.models]
    e8 = variants["E8 active 256 (4 blocks)"]
    assert e8.model == "HyMoERec" and e8.config_files == ("yaml/protocol/loo-full.yaml", "yaml/dataset/ml-1m-host.yaml")
    assert e8.overrides == {"train_regime": "all_positions", "moe_num_experts": 8, "moe_top_k": 2, "inner_size": 128,
                            "moe_inner_size": 64, "n_layers": 4}
    pop = suite_variants(Suite({"name": "n", "datasets": ["mini"], "seeds": [1], "models": [{"model": "Pop"}]}))[0]
    assert pop.overrides == {"train_regime": "prefix"} and pop.config_files == ()


def test_report_names_the_cells_still_to_run():
    from recbole_hymoe.bench.report import markdown, summarise, to_run

    suite = Suite({"name": "n", "datasets": ["mini"], "seeds": [1, 2],
                   "models": [{"model": "SASRec", "seeds": [1, 2, 3]}, {"model": "GRU4Rec"}, {"model": "Pop"}]})
    cells = [{"label": "SASRec", "dataset": "mini", "seed": 2}, {"label": "GRU4Rec", "dataset": "mini", "seed": 1},
             {"label": "GRU4Rec", "dataset": "mini", "seed": 2}, {"label": "Pop", "dataset": "other", "seed": 1}]
    assert to_run(suite, "mini", cells) == {"SASRec": [1, 3], "Pop": [1, 2]}
    assert to_run(suite, "mini", cells + [{"label": "SASRec", "dataset": "mini", "seed": s} for s in (1, 3)]
                  + [{"label": "Pop", "dataset": "mini", "seed": s} for s in (1, 2)]) == {}
    text = markdown(suite, summarise(suite, []))
    assert ("Not recorded yet (the table above holds only finished cells): SASRec, seeds 1, 2, 3; "
            "GRU4Rec, seeds 1, 2; Pop, seeds 1, 2.") in text


def test_capacity_table_and_plot_join_cells_with_speed_rows(tmp_path):
    from recbole_hymoe.bench.report import capacity_rows, capacity_table, plot_capacity

    suite = Suite({"name": "n", "datasets": ["mini"], "seeds": [1, 2], "models": [
        {"label": "dense 256", "model": "HyMoERec", "overrides": {"moe_num_experts": 0}, "family": "dense"},
        {"label": "E4", "model": "HyMoERec", "family": "MoE"},
        {"label": "E8", "model": "HyMoERec", "family": "MoE"},
        {"label": "Pop", "model": "Pop"}]})
    block = {"rows": {"dense 256": {"n_params": 1000, "seeds": 2, "ndcg@10": (0.10, 0.01)},
                      "E4": {"n_params": 1500, "seeds": 1, "ndcg@10": (0.12, 0.0)},
                      "Pop": {"n_params": 1, "seeds": 2, "ndcg@10": (0.01, 0.0)}}}
    speed = [{"variant": "dense 256", "step_gflop": 40.0, "epoch_s": 44.0},
             {"variant": "E8", "step_gflop": 41.5, "epoch_s": 52.25}]
    rows = capacity_rows(suite, block, speed)
    assert [(r["label"], r["family"], r["n_params"], r["step_gflop"], r["seeds"]) for r in rows] == [
        ("dense 256", "dense", 1000, 40.0, 2), ("E4", "MoE", 1500, None, 1), ("E8", "MoE", None, 41.5, 0)]
    lines = capacity_table(rows)
    assert lines[-3:] == ["| dense 256 | dense | 1,000 | 40.0 | 44.0 | 2 | 0.1000 ± 0.0100 |",
                          "| E4 | MoE | 1,500 | – | – | 1 | 0.1200 ± 0.0000 |",
                          "| E8 | MoE | – | 41.5 | 52.2 | 0 | – |"]
    assert plot_capacity(rows, "mini", tmp_path) == "capacity_mini.png"
    assert (tmp_path / "capacity_mini.png").stat().st_size
    assert plot_capacity(rows[2:], "none", tmp_path) is None and not (tmp_path / "capacity_none.png").exists()


def test_report_plots_each_multi_term_loss_over_epochs_with_the_models_term_names(tmp_path):
    from recbole_hymoe.bench.report import loss_term_curves, plot_loss_terms

    def cell(model, terms):
        return {"model": model, "valid_history": [{"epoch": e, "train_loss_terms": t} for e, t in enumerate(terms)]}

    rows = {
        "HM2Rec": {"cells": [cell("HM2Rec", [[10.0, 2.0, 0.5, 0.1], [8.0, 1.0, 0.7, 0.1], [7.0, 1.0, 0.9, 0.1]]),
                             cell("HM2Rec", [[12.0, 4.0, 1.5, 0.3], [6.0, 3.0, 0.3, 0.1]])]},  # shorter seed
        "SASRec-equivalent": {"cells": [cell("HyMoERec", [[9.0, 0.0], [8.0, 0.0]])]},  # balance term always 0
        "SASRec": {"cells": [cell("SASRec", [[9.0], [8.0]])]},  # one term
        "old cell": {"cells": [{"model": "HyMoERec", "valid_history": [{"epoch": 0}]}]},  # recorded before terms
        "HyMoERec": {"cells": [{"model": "HyMoERec", "valid_history": [{"epoch": 0}]},  # a seed without terms first
                               cell("HyMoERec", [[9.0, 0.5], [8.0, 0.25]])]},
    }
    curves = loss_term_curves(rows)
    assert list(curves) == ["HM2Rec", "HyMoERec"]
    assert curves["HyMoERec"] == {"terms": ["recommendation", "MoE balance"], "epochs": [0, 1],
                                  "values": [[9.0, 8.0], [0.5, 0.25]]}
    assert curves["HM2Rec"]["terms"] == ["recommendation", "graph reconstruction λ_g·L_rec", "graph KL λ_g·β·L_KL",
                                         "MoE balance"]
    assert curves["HM2Rec"]["epochs"] == [0, 1]
    assert curves["HM2Rec"]["values"] == [[11.0, 7.0], [3.0, 2.0], [1.0, 0.5], [pytest.approx(0.2), 0.1]]
    assert plot_loss_terms(curves, "mini", tmp_path) == "loss_terms_mini.png"
    assert (tmp_path / "loss_terms_mini.png").stat().st_size
    assert plot_loss_terms({}, "none", tmp_path) is None and not (tmp_path / "loss_terms_none.png").exists()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "yaml" / "bench").glob("*.yaml")
                                        if (REPO / "results" / "bench" / p.stem).is_dir()))
def test_every_committed_cell_has_the_settings_its_suite_gives_it_now(path, monkeypatch):
    # A suite edited after its cells ran (or a record moved to another row) must not table them
    # under the new settings: the committed records are checked as run_bench would check them.
    monkeypatch.chdir(REPO)
    suite = Suite(yaml.safe_load((REPO / path).read_text(encoding="utf-8")), source=path)
    specs = suite.cells(REPO / "results" / "bench" / suite.name, extra={"data_path": "data-not-needed"})
    assert any((Path(spec["dir"]) / "result.json").is_file() for spec in specs)
    runner.check_recorded_cells(specs)


def test_report_plots_the_graph_telemetry_mean_over_seeds(tmp_path):
    from recbole_hymoe.bench.report import graph_curves, plot_graph_curves

    def cell(*graphs):
        return {"moe_telemetry": [{"epoch": e, "layers": {}, **({"graph": g} if g else {})}
                                  for e, g in enumerate(graphs)]}

    rows = {
        "HM2Rec": {"cells": [cell({"id_norm": 1.0, "graph_norm": 0.5, "noise_ratio": 0.4},
                                  {"id_norm": 1.0, "graph_norm": 1.0, "noise_ratio": 0.2},
                                  {"id_norm": 1.0, "graph_norm": 2.0, "noise_ratio": 0.1}),
                             cell({"id_norm": 3.0, "graph_norm": 1.5, "noise_ratio": 0.6},
                                  {"id_norm": 1.0, "graph_norm": 3.0, "noise_ratio": 0.0})]},  # a shorter seed
        "HM2Rec fusion replace": {"cells": [cell({"graph_norm": 0.5, "table_norm": 0.5})]},  # no ID rows, no noise
        "HyMoERec": {"cells": [{"moe_telemetry": [{"epoch": 0, "layers": {"moe": {}}}]}]},  # experts only
        "old cell": {"cells": [cell(None, None), {}]},  # recorded before the graph telemetry
    }
    curves = graph_curves(rows)
    assert list(curves) == ["HM2Rec", "HM2Rec fusion replace"]
    assert curves["HM2Rec"] == {"epochs": [0, 1], "graph_norm": [1.0, 2.0], "id_norm": [2.0, 1.0],
                                "noise_ratio": [0.5, 0.1]}
    assert curves["HM2Rec fusion replace"] == {"epochs": [0], "graph_norm": [0.5], "table_norm": [0.5]}
    assert plot_graph_curves(curves, "mini", tmp_path) == "graph_parts_mini.png"
    assert (tmp_path / "graph_parts_mini.png").stat().st_size
    assert plot_graph_curves({}, "none", tmp_path) is None and not (tmp_path / "graph_parts_none.png").exists()
