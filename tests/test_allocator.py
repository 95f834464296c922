"""Freed heap memory goes back to the OS between epochs, or before every step (``release_memory``)."""

import sys

import psutil
import pytest
import torch

from recbole_hymoe import Config, allocator, run
from recbole_hymoe.allocator import release_free_memory, releasing_before
from recbole_hymoe.errors import ConfigError


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_returns_fragmented_heap_pages():
    process = psutil.Process()
    keep = []
    for width in range(40, 200):  # tensors of varying size, every other one kept: a fragmented heap
        block = torch.ones(256, width * 64)
        if width % 2:
            keep.append(block[:1].clone())
        del block
    before = process.memory_info().rss
    assert release_free_memory() in (True, False)
    after = process.memory_info().rss
    assert after <= before
    assert sum(k.numel() for k in keep) > 0


def test_releasing_before_trims_then_returns_the_loss(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: calls.append("trim"))

    def loss(interaction):
        calls.append(("loss", interaction))
        return interaction * 2

    wrapped = releasing_before(loss)
    assert wrapped(3) == 6 and wrapped(4) == 8
    assert calls == ["trim", ("loss", 3), "trim", ("loss", 4)]
    assert wrapped.__name__ == "loss"


def test_bad_release_memory_settings_are_refused_before_the_data(mini_data_path):
    base = {"data_path": str(mini_data_path)}
    with pytest.raises(ConfigError, match=r"release_memory.*'batch'.*'epoch', 'step'"):
        Config("HyMoERec", "mini", config_dict={**base, "release_memory": "batch"})
    with pytest.raises(ConfigError, match="release_memory='step' need the package's trainer.* not BPR"):
        Config("BPR", "mini", config_dict={**base, "release_memory": "step"})


@pytest.mark.integration
@pytest.mark.parametrize("model", ["HyMoERec", "SASRec"])
def test_releasing_memory_every_step_changes_no_result(tiny_config, tmp_path, model, monkeypatch):
    trims = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: trims.append(1) or True)
    settings = {**tiny_config, "train_regime": "all_positions", "epochs": 2, "train_batch_size": 16}
    if model == "SASRec":
        settings = {k: v for k, v in settings.items() if not k.startswith("moe_")}
    by_epoch = run(model, "mini", config_dict={**settings, "release_memory": "epoch", "run_dir": str(tmp_path / "epoch")})
    assert not trims  # the trainer's per-epoch trim is its own import, not patched here
    by_step = run(model, "mini", config_dict={**settings, "release_memory": "step", "run_dir": str(tmp_path / "step")})
    assert len(trims) >= 2  # once per training step of two epochs
    assert by_step["best_valid_result"] == by_epoch["best_valid_result"]
    assert by_step["test_result"] == by_epoch["test_result"]
