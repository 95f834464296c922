"""Speed and time-to-quality benchmarks run on small data, write their reports, resume."""

import json

import pytest
import yaml

from recbole_hymoe.bench import quality
from recbole_hymoe.bench.speed import Variant, run_speed_benchmark
from recbole_hymoe.errors import ConfigError

pytestmark = pytest.mark.integration


def test_speed_benchmark_reports_ratios_against_the_first_variant(tiny_config, tmp_path):
    variants = [
        Variant("SASRec (prefix)", "SASRec", {"train_regime": "prefix"}),
        Variant("HyMoERec (all_positions)", "HyMoERec", {"train_regime": "all_positions"}),
    ]
    report = run_speed_benchmark("mini", overrides=tiny_config, variants=variants, steps=2, rounds=1,
                                 out_dir=tmp_path / "speed", profile=True)
    first, second = report["rows"]
    assert first["step_ratio"] == 1.0 and first["epoch_ratio"] == 1.0
    assert second["step_ratio"] == pytest.approx(second["step_s"] / first["step_s"])
    assert second["pos_per_s"] > second["seq_per_s"]  # several supervised positions per sequence
    assert first["pos_per_s"] == pytest.approx(first["seq_per_s"])
    assert all(row["peak_rss_gb"] >= 0 and row["eval_s"] > 0 for row in report["rows"])
    assert all(row["step_gflop"] > 0 and row["eval_gflop"] > 0 for row in report["rows"])
    assert first["step_flop_ratio"] == 1.0
    assert second["eval_flop_ratio"] == pytest.approx(second["eval_gflop"] / first["eval_gflop"])
    assert json.loads((tmp_path / "speed" / "speed.json").read_text())["rows"][1]["variant"] == second["variant"]
    assert "HyMoERec (all_positions)" in (tmp_path / "speed" / "speed.md").read_text()
    assert all(row["build_s"] > 0 for row in report["rows"]) and report["meta"]["process_peak_rss_gb"] > 0.1
    profiled = (tmp_path / "speed" / "profile-hymoerec-all-positions.txt").read_text()
    assert "2 training steps" in profiled and "one full-sort validation" in profiled
    assert "aten::mm" in profiled and "Self CPU" in profiled


def test_time_to_quality_runs_resumes_and_compares_with_the_reference(tiny_config, tmp_path, monkeypatch):
    spec = {
        "dataset": "mini",
        "overrides": {**tiny_config, "epochs": 2},
        "runs": [
            {"label": "SASRec (prefix)", "model": "SASRec"},
            {"label": "HyMoERec all", "model": "HyMoERec", "overrides": {"train_regime": "all_positions"}},
        ],
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    report = quality.run_time_to_quality(spec_file, tmp_path / "ttq")
    reference, other = report["rows"]
    assert reference["to_reference_ratio"] == 1.0
    assert reference["epochs_run"] == 2 and reference["time_to_best_s"] > 0
    assert other["train_regime"] == "all_positions"
    assert (tmp_path / "ttq" / "hymoerec-all" / "results.json").is_file()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(quality, "run", must_not_train)
    again = quality.run_time_to_quality(spec_file, tmp_path / "ttq")
    assert again["rows"] == report["rows"]
    only = quality.run_time_to_quality(spec_file, tmp_path / "ttq", labels=["HyMoERec all"])
    assert [row["label"] for row in only["rows"]] == ["HyMoERec all"]
    assert only["rows"][0]["to_reference_ratio"] == 1.0  # the first selected run is the reference
    with pytest.raises(ConfigError, match="no run labelled 'BERT4Rec'; its runs: 'SASRec \\(prefix\\)'"):
        quality.run_time_to_quality(spec_file, tmp_path / "ttq", labels=["BERT4Rec"])

    monkeypatch.undo()  # a raised epoch cap continues the runs that hit it, after their last epoch
    recorded = tmp_path / "ttq" / "hymoerec-all" / "results.json"
    two_epochs = recorded.read_text()
    spec["overrides"]["epochs"] = 3
    spec_file.write_text(yaml.safe_dump(spec))
    longer = quality.run_time_to_quality(spec_file, tmp_path / "ttq")
    for before, after in zip(report["rows"], longer["rows"]):
        assert after["epochs_run"] == 3 and after["train_time_s"] > before["train_time_s"]
    assert [r["epoch"] for r in json.loads(recorded.read_text())["valid_history"]] == [0, 1, 2]
    # a continuation interrupted before it was recorded is recorded from its training state
    recorded.write_text(two_epochs)
    again = quality.run_time_to_quality(spec_file, tmp_path / "ttq", labels=["HyMoERec all"])
    assert again["rows"][0]["epochs_run"] == 3
    assert again["rows"][0]["test"] == longer["rows"][1]["test"]


def test_time_to_quality_spec_problems_are_listed(tmp_path):
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump({"runs": [{"label": "a"}, {"label": "a", "model": "SASRec"}]}))
    with pytest.raises(ConfigError) as err:
        quality.load_spec(spec_file)
    assert "missing 'dataset'" in str(err.value) and "runs[0]" in str(err.value) and "unique" in str(err.value)


def test_a_run_label_cut_at_a_comma_is_refused(tmp_path):
    spec_file = tmp_path / "comma.yaml"  # an unquoted comma ends the label inside a flow mapping
    spec_file.write_text("dataset: ml-100k\nruns:\n"
                         "  - {label: GRU4Rec (all_positions, stride 25), model: GRU4Rec}\n")
    cut = r"runs\[0\] \('GRU4Rec \(all_positions'\): unknown keys 'stride 25\)'.*quote"
    with pytest.raises(ConfigError, match=cut):
        quality.load_spec(spec_file)


def fake_run(label, group, reference, scores, step_s, test_ndcg):
    history = [{"epoch": i, "valid_score": s, "elapsed_s": step_s * (i + 1)} for i, s in enumerate(scores)]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {"label": label, "group": group, "reference": reference, "model": "m", "train_time_s": step_s * len(scores),
            "epochs_run": len(scores), "best_epoch": best, "best_valid_score": scores[best], "valid_history": history,
            "test_result": {"hit@10": 0.5, "ndcg@10": test_ndcg, "mrr@10": 0.1}, "run_dir": label}


def test_time_to_quality_seed_groups_are_timed_against_their_own_reference(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"dataset": "mini", "runs": [
        {"label": "P", "model": "SASRec"},
        {"label": "A", "model": "SASRec", "seeds": [1, 2], "reference": "P", "overrides": {"epochs": 3}}]}))
    runs = quality.expand_seeds(quality.load_spec(spec_file)["runs"])
    assert [(r["label"], r["group"], r["overrides"]) for r in runs[1:]] == [
        ("A (seed 1)", "A", {"epochs": 3, "seed": 1}), ("A (seed 2)", "A", {"epochs": 3, "seed": 2})]
    rows = quality.summarise([
        fake_run("P", "P", "P", [0.1, 0.3], 100.0, 0.2),  # reaches 0.3 after 200 s
        fake_run("A (seed 1)", "A", "P", [0.2, 0.3, 0.25], 10.0, 0.3),  # 0.3 after 20 s
        fake_run("A (seed 2)", "A", "P", [0.2, 0.28, 0.29], 10.0, 0.1),  # never reaches 0.3
    ])
    assert [r["to_reference_s"] for r in rows] == [200.0, 20.0, None]
    assert rows[1]["to_reference_ratio"] == pytest.approx(0.1)
    group = quality.summarise_groups(rows)[1]
    assert group["runs"] == 2 and group["reached_reference"] == "1/2"
    assert group["test_ndcg@10"][0] == pytest.approx(0.2)
    assert group["test_ndcg@10"][1] == pytest.approx(0.1414, abs=1e-4)
    table = quality.ttq_table({"dataset": "mini", "rows": rows, "groups": quality.summarise_groups(rows)})
    assert "| A | 2 | P | 0.2950 ± 0.0071 | 0.2000 ± 0.1414 |" in table
    spec_file.write_text(yaml.safe_dump({"dataset": "mini", "runs": [
        {"label": "A", "model": "SASRec", "seeds": [1.5], "reference": "Z"}]}))
    with pytest.raises(ConfigError, match="reference 'Z' is not a run label.*seeds=\\[1.5\\]"):
        quality.load_spec(spec_file)


def test_a_run_may_name_its_own_thread_count(tmp_path, monkeypatch):
    import torch

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"dataset": "mini", "threads": 1, "runs": [
        {"label": "A", "model": "SASRec"}, {"label": "P", "model": "SASRec", "threads": 2, "reference": "P"}]}))
    seen = {}

    def fake(model, dataset, config_files, config):  # writes what run() would, records the threads
        label = "P" if config["run_dir"].endswith("p") else "A"
        seen[label] = torch.get_num_threads()
        record = fake_run(label, label, label, [0.1, 0.2], 5.0, 0.1)
        record.update(best_valid_score=0.2, run_dir=config["run_dir"])
        (tmp_path / "ttq" / label.lower()).mkdir(parents=True, exist_ok=True)
        (tmp_path / "ttq" / label.lower() / "results.json").write_text(json.dumps(record))

    before = torch.get_num_threads()
    monkeypatch.setattr(quality, "run", fake)
    try:
        report = quality.run_time_to_quality(spec_file, tmp_path / "ttq")
    finally:
        torch.set_num_threads(before)
    assert seen == {"A": 1, "P": 2}
    assert [r["threads"] for r in report["rows"]] == [None, 2]
    table = quality.ttq_table(report)
    assert "(1 torch threads unless a run says otherwise)" in table and "| P (2 threads) | P |" in table
    spec_file.write_text(yaml.safe_dump({"dataset": "mini", "runs": [{"label": "A", "model": "SASRec", "threads": 0}]}))
    with pytest.raises(ConfigError, match="threads=0 must be an integer >= 1"):
        quality.load_spec(spec_file)


def test_synthetic_data_has_the_requested_shape_and_loads(tmp_path, monkeypatch):
    import pandas as pd
    from conftest import build_data

    from recbole_hymoe.bench import synthetic

    monkeypatch.setitem(synthetic.SHAPES, "tiny", (40, 30, 1_000, 5))
    path, stats = synthetic.write_synthetic(tmp_path, name="tiny-shaped", shape="tiny", seed=1)
    frame = pd.read_csv(path, sep="\t")
    assert list(frame.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(frame) == stats["interactions"] == 1_000
    lengths = frame.groupby("user_id:token").size()
    assert len(lengths) == 40 and lengths.min() >= 5
    assert frame["item_id:token"].between(1, 30).all()
    positions = frame.groupby("user_id:token")["timestamp:float"].apply(list)
    assert all(p == list(range(1, len(p) + 1)) for p in positions)
    _, dataset, train_data, _, _ = build_data("HyMoERec", {
        "data_path": str(tmp_path), "dataset": "tiny-shaped", "MAX_ITEM_LIST_LENGTH": 20,
        "train_regime": "all_positions", "state": "ERROR"})
    assert dataset.user_num == 41 and len(train_data) > 0
