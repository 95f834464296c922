"""run_recbole console script: bad input fails fast and clearly; a run ends in a table and a run folder."""

import json
from pathlib import Path
import time

import pytest
import yaml
from conftest import run_cli

from recbole_hymoe.cli import parse_overrides
from recbole_hymoe.errors import ConfigError

TINY = ["--epochs=1", "--MAX_ITEM_LIST_LENGTH=20", "--hidden_size=16", "--inner_size=32",
        "--train_batch_size=512", "--show_progress=False", "--state=ERROR"]


def test_overrides_parse_like_recbole_plus_space_form():
    assert parse_overrides(["--epochs=1", "--learning_rate", "0.01"]) == {"epochs": "1", "learning_rate": "0.01"}
    with pytest.raises(ConfigError, match="unexpected argument 'oops'"):
        parse_overrides(["oops"])
    with pytest.raises(ConfigError, match="--epochs has no value"):
        parse_overrides(["--epochs"])
    with pytest.raises(ConfigError, match="--epochs given twice"):
        parse_overrides(["--epochs=1", "--epochs=2"])


def test_top_k_above_experts_fails_in_seconds_naming_both_keys(tmp_path):
    start = time.monotonic()
    result = run_cli(["--model=HyMoERec", "--dataset=ml-100k", "--moe_top_k=5", "--moe_num_experts=4"], tmp_path)
    assert result.returncode == 2
    assert "moe_top_k=5" in result.stderr and "moe_num_experts=4" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 60  # interpreter start + imports; no data is loaded
    assert not (tmp_path / "saved").exists()


def test_unknown_model_lists_the_names(tmp_path):
    result = run_cli(["--model=HyMoeRecc"], tmp_path)
    assert result.returncode == 2
    assert "unknown model 'HyMoeRecc'" in result.stderr and "SASRec" in result.stderr
    assert "lightgbm" not in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_does_not_try_to_download(tmp_path):
    result = run_cli(["--model=SASRec", "--dataset=ml-1m", f"--data_path={tmp_path}"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "dataset 'ml-1m' not found" in result.stderr and "Traceback" not in result.stderr


def test_multi_process_training_without_gpus_is_refused(tmp_path, mini_data_path):
    result = run_cli(["--model=SASRec", "--dataset=mini", f"--data_path={mini_data_path}", "--nproc=2"], tmp_path)
    assert result.returncode == 2 and "nproc=2 needs 2 CUDA GPUs" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("model", ["HyMoERec", "SASRec"])
def test_a_run_prints_the_table_and_fills_the_run_folder(tmp_path, mini_data_path, model):
    args = [f"--model={model}", "--dataset=mini", f"--data_path={mini_data_path}", *TINY]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| valid |" in result.stdout and "| test |" in result.stdout and "ndcg@10" in result.stdout
    run_dir = next((tmp_path / "saved").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == model and 0.0 <= results["test_result"]["ndcg@10"] <= 1.0
    assert (run_dir / "results.md").read_text().count("|") > 10
    checkpoint = Path(results["checkpoint"])  # recorded relative to where the run started, not this machine's root
    assert not checkpoint.is_absolute() and (tmp_path / checkpoint).parent == run_dir
    assert (tmp_path / checkpoint).is_file()
    saved_config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved_config["model"] == model and saved_config["hidden_size"] == 16
    if model == "HyMoERec":
        assert len(results["moe_telemetry"]) == 1  # one record per epoch
        # the saved config is accepted back as a config file
        again = run_cli([f"--model={model}", "--dataset=mini", f"--config_files={run_dir / 'config.yaml'}",
                         f"--run_dir={tmp_path / 'again'}"], tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        rerun = json.loads((tmp_path / "again" / "results.json").read_text())
        assert rerun["test_result"] == results["test_result"]  # same seed, same config: same numbers
