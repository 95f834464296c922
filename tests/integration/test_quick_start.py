"""End to end through RecBole's own data pipeline, Trainer and Evaluator, on a small real slice."""

import json

import pytest
from conftest import run_python

from recbole_hymoe import run
from recbole_hymoe.quick_start import best_record
from recbole_hymoe.errors import ConfigError

pytestmark = pytest.mark.integration


def test_best_record_is_the_checkpoint_recbole_kept_on_ties():
    history = [{"epoch": e, "valid_score": s} for e, s in enumerate([0.05, 0.07, 0.06, 0.07, 0.065])]
    assert best_record(history)["epoch"] == 3  # RecBole's early stopping: a tie moves the best forward
    assert best_record(history, bigger=False)["epoch"] == 0
    assert best_record([]) is None
    assert best_record([{"epoch": 0, "valid_score": float("nan")}, {"epoch": 1, "valid_score": 0.01}])["epoch"] == 1


@pytest.mark.parametrize(
    "model,extra",
    [
        ("HyMoERec", {}),
        ("HyMoERec", {"loss_type": "BPR"}),
        ("HyMoERec", {"moe_fusion": "convex", "moe_router": "mlp", "moe_balance_loss": "switch",
                      "moe_z_loss_weight": 0.001, "moe_warmup_schedule": "cosine"}),
        ("HyMoERec", {"loss_type": "SSM", "n_negatives": 16}),
        ("HyMoERec", {"train_regime": "all_positions"}),
        ("HyMoERec", {"train_regime": "all_positions", "loss_type": "SSM", "n_negatives": 16, "temperature": 0.5}),
        ("HyMoERec", {"train_regime": "all_positions", "loss_type": "BPR"}),
        ("HyMoERec", {"train_regime": "all_positions", "train_windows": "last", "moe_fusion": "convex",
                      "moe_router": "mlp", "moe_balance_loss": "switch", "moe_z_loss_weight": 0.001}),
        ("HyMoERec", {"train_regime": "all_positions", "moe_num_experts": 0}),
        ("Mamba4Rec", {"mamba_d_state": 8}),
        ("Mamba4Rec", {"mamba_d_state": 8, "train_regime": "all_positions", "rope_target": "bc"}),
        ("HyMoERec", {"backbone": "mamba", "mamba_d_state": 8, "train_regime": "all_positions"}),
        ("SASRec", {}),
        ("BERT4Rec", {}),
        ("GRU4Rec", {"embedding_size": 16}),
    ],
    ids=["hymoerec-ce", "hymoerec-bpr", "hymoerec-ablations", "hymoerec-ssm", "all-ce", "all-ssm", "all-bpr",
         "all-ablations", "all-dense", "mamba4rec", "mamba4rec-bc-all", "hymoerec-mamba-all", "sasrec", "bert4rec",
         "gru4rec"],
)
def test_models_train_and_evaluate(tiny_config, model, extra):
    result = run(model, "mini", config_dict={**tiny_config, **extra})
    for split in ("best_valid_result", "test_result"):
        metrics = result[split]
        assert {"hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr@10"} <= set(metrics)
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
        assert metrics["hit@10"] >= metrics["hit@5"]
    assert result["epochs_run"] == 1 and result["best_epoch"] == 0
    if model == "HyMoERec" and extra.get("moe_num_experts") != 0:  # one telemetry record per epoch
        telemetry = result["moe_telemetry"][0]
        assert telemetry["epoch"] == 0 and len(telemetry["layers"]) == 2


def test_checkpoint_reloads_in_a_fresh_process_and_reproduces_test_metrics(tiny_config, tmp_path):
    result = run("HyMoERec", "mini", config_dict={**tiny_config, "epochs": 2})
    code = f"""
import json
from recbole_hymoe import load_data_and_model
from recbole.utils import get_trainer
from recbole.utils.case_study import full_sort_topk
config, model, dataset, train_data, valid_data, test_data = load_data_and_model({result["checkpoint"]!r})
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
test_result = trainer.evaluate(test_data, load_best_model=False)
uid = dataset.token2id(dataset.uid_field, ["1", "2"])
scores, items = full_sort_topk(uid, model, test_data, k=5, device=config["device"])
print(json.dumps({{"test": dict(test_result), "step": int(model.moe_step), "topk": list(items.shape)}}))
"""
    reloaded = run_python(code, cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    out = json.loads(reloaded.stdout.strip().splitlines()[-1])
    assert out["test"] == result["test_result"]
    assert out["step"] > 0 and out["topk"] == [2, 5]


def test_recbole_own_run_recbole_trains_the_plugin_model(tiny_config):
    from recbole.quick_start import run_recbole

    from recbole_hymoe.compat import clean_argv

    # RecBole's own Config loads only user and item ids by default; time order needs the timestamp.
    config = {**tiny_config, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
    with clean_argv():
        result = run_recbole(model="HyMoERec", dataset="mini", config_dict=config, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize(
    "model,extra",
    [("FuXiAlpha", {}), ("FuXiAlpha", {"train_regime": "prefix", "loss_type": "CE"}),
     ("Fuxi-MME", {}), ("Fuxi-MME", {"moe_target": "w_u", "train_regime": "prefix"})],
    ids=["fuxi-ssm-all", "fuxi-ce-prefix", "mme-ffn-all", "mme-wu-prefix"],
)
def test_fuxi_models_learn(tiny_config, model, extra):
    config = {**tiny_config, "hidden_size": 32, "n_heads": 2, "epochs": 3, **extra}
    result = run(model, "mini", config_dict=config)
    losses = [epoch["layers"] for epoch in result.get("moe_telemetry", [])]
    assert result["epochs_run"] == 3
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    if model == "Fuxi-MME":
        assert len(losses) == 3 and len(losses[0]) == 2  # one MoE per block, telemetry every epoch


@pytest.mark.parametrize("extra", [{}, {"model": "FuXiAlpha", "hidden_size": 32, "n_heads": 2},
                                   {"model": "BERT4Rec", "train_regime": "prefix"}],
                         ids=["hymoerec-prefix", "fuxi-all-positions-ssm", "recbole-bert4rec-prefix"])
def test_an_interrupted_run_continues_exactly_as_an_uninterrupted_one(tiny_config, tmp_path, extra):
    extra = dict(extra)
    model = extra.pop("model", "HyMoERec")
    config = {**tiny_config, **extra, "epochs": 3}
    whole = run(model, "mini", config_dict={**config, "run_dir": str(tmp_path / "whole")})
    first = run(model, "mini", config_dict={**config, "epochs": 1, "run_dir": str(tmp_path / "split")})
    assert first["epochs_run"] == 1 and (tmp_path / "split" / "training_state.pth").is_file()
    continued = run(model, "mini", config_dict={**config, "run_dir": str(tmp_path / "split")})
    assert continued["resumed_at_epochs"] == [1]
    assert continued["epochs_run"] == 3
    assert [r["epoch"] for r in continued["valid_history"]] == [0, 1, 2]
    assert [r["valid_score"] for r in continued["valid_history"]] == [r["valid_score"] for r in whole["valid_history"]]
    terms = [r["train_loss_terms"] for r in continued["valid_history"]]  # each loss term, every epoch
    # equal up to the order of multi-threaded float sums (two fresh runs differ by ~1e-7 there too)
    expected = [r["train_loss_terms"] for r in whole["valid_history"]]
    assert [len(epoch) for epoch in terms] == [len(epoch) for epoch in expected]
    assert sum(terms, []) == pytest.approx(sum(expected, []), rel=1e-5, abs=1e-9)
    # the plugin models: recommendation loss and MoE auxiliary loss; RecBole's BERT4Rec (whose
    # transform writes MASK_* keys into the config while the data is built): its loss alone
    assert all(len(epoch) == (1 if model == "BERT4Rec" else 2) for epoch in terms)
    assert continued["test_result"] == whole["test_result"]
    elapsed = [r["elapsed_s"] for r in continued["valid_history"]]
    assert elapsed == sorted(elapsed) and continued["train_time_s"] >= elapsed[-1]
    if model == "HyMoERec":  # expert telemetry and the warm-up step carry over
        assert [t["epoch"] for t in continued["moe_telemetry"]] == [0, 1, 2]
        assert [t["step"] for t in continued["moe_telemetry"]] == [t["step"] for t in whole["moe_telemetry"]]


def test_a_finished_run_is_tested_again_not_retrained(tiny_config, tmp_path):
    config = {**tiny_config, "run_dir": str(tmp_path / "run")}
    done = run("HyMoERec", "mini", config_dict=config)
    again = run("HyMoERec", "mini", config_dict=config)
    assert again["epochs_run"] == 1 and again["valid_history"] == done["valid_history"]
    assert again["resumed_at_epochs"] == []  # tested, not continued
    assert again["test_result"] == done["test_result"]


def test_continuing_a_run_under_other_settings_is_refused_before_data_loads(tiny_config, tmp_path, monkeypatch):
    import recbole_hymoe.quick_start as quick_start

    config = {**tiny_config, "run_dir": str(tmp_path / "run")}
    run("HyMoERec", "mini", config_dict=config)

    def no_loading(config):
        raise AssertionError("the data was loaded before the settings were checked")

    monkeypatch.setattr(quick_start, "prepare_data", no_loading)
    with pytest.raises(ConfigError, match=r"learning_rate: 0\.001 -> 0\.01.*choose another run_dir"):
        run("HyMoERec", "mini", config_dict={**config, "learning_rate": 0.01, "epochs": 2})
