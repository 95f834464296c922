"""RecBole's SASRec, GRU4Rec, NARM and BERT4Rec in the all_positions regime: equality with RecBole's
own forward and prefix loss, causality, the cloze windows, refusals, reload by RecBole's loader."""

import json

import pytest
import torch
from conftest import build_data, first_batch, run_python
from recbole.trainer import Trainer
from recbole.utils import get_model

from recbole_hymoe import Config, run
from recbole_hymoe.baselines import (
    STATE_FUNCTIONS,
    bert4rec_all_positions_loss,
    cloze_windows,
    next_item_all_positions_loss,
)
from recbole_hymoe.data import RegimeDataset
from recbole_hymoe.models import base
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn import losses
from recbole_hymoe.nn.losses import next_item_targets
from recbole_hymoe.trainer import MoETrainer, build_trainer

CAUSAL_MODELS = sorted(STATE_FUNCTIONS)
SMALL = {"MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32, "embedding_size": 16,
         "state": "ERROR", "show_progress": False}


@pytest.fixture(scope="module")
def windows(mini_data_path):
    """Model name -> (config, train loader) in the all_positions regime (L = 10), built once."""
    out = {}
    for name in [*CAUSAL_MODELS, "BERT4Rec"]:
        config, _, train_data, _, _ = build_data(name, {"data_path": str(mini_data_path),
                                                        "train_regime": "all_positions",
                                                        "train_windows": "last", **SMALL})
        out[name] = (config, train_data)
    return out


def built(name, windows):
    config, train_data = windows[name]
    torch.manual_seed(0)
    return config, train_data, get_model(name)(config, train_data._dataset).eval()


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_state_at_the_last_position_equals_recbole_forward(name, windows):
    _, train_data, model = built(name, windows)
    batch = first_batch(train_data)
    item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        states = STATE_FUNCTIONS[name](model, item_seq)  # [B, L, H]
        last = states[torch.arange(len(item_seq_len)), item_seq_len - 1]
        torch.testing.assert_close(last, model.forward(item_seq, item_seq_len), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_all_positions_loss_at_the_last_position_equals_recbole_prefix_loss(name, windows):
    # A one-window batch restricted to its last position is RecBole's prefix sample (history, target).
    _, train_data, model = built(name, windows)
    window = train_data._dataset.inter_feat[[0]]
    length = int(window[model.ITEM_SEQ_LEN][0])
    with torch.no_grad():
        states = STATE_FUNCTIONS[name](model, window[model.ITEM_SEQ])[0, :length]  # [n, H]
        targets = next_item_targets(window[model.ITEM_SEQ], window[model.ITEM_SEQ_LEN], window[model.POS_ITEM_ID])
        per_position = torch.nn.functional.cross_entropy(states @ model.item_embedding.weight.t(), targets[0, :length],
                                                         reduction="none")
        assert per_position[-1].item() == pytest.approx(model.calculate_loss(window).item(), abs=1e-5)
        mean = next_item_all_positions_loss(model, window, "CE")
        assert mean.item() == pytest.approx(per_position.mean().item(), abs=1e-5)


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_states_are_causal(name, windows):
    _, train_data, model = built(name, windows)
    item_seq = first_batch(train_data)[model.ITEM_SEQ][:4, :8].clone()
    item_seq[item_seq == 0] = 1  # full rows, so changing a later item changes a real input
    changed = item_seq.clone()
    changed[:, 5:] = torch.randint(1, model.n_items, changed[:, 5:].shape)
    with torch.no_grad():
        before, after = STATE_FUNCTIONS[name](model, item_seq), STATE_FUNCTIONS[name](model, changed)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_narm_chunked_causal_attention_equals_one_chunk(windows, monkeypatch):
    from recbole_hymoe import baselines

    _, train_data, model = built("NARM", windows)
    model.train()  # dropout off below, but the checkpointed path runs under grad
    model.emb_dropout.p = model.ct_dropout.p = 0.0
    item_seq = first_batch(train_data)[model.ITEM_SEQ].clone()
    lengths = 1 + torch.arange(len(item_seq)) % item_seq.size(1)  # windows of every length, right-padded
    item_seq[torch.arange(item_seq.size(1)) >= lengths.unsqueeze(1)] = 0
    real = item_seq != 0  # [B, L]: the positions a loss reads
    monkeypatch.setattr(baselines, "NARM_QUERY_CHUNK", 10**6)
    whole = baselines.narm_states(model, item_seq)[real]  # one chunk, every row
    monkeypatch.setattr(baselines, "NARM_CHUNK_ELEMENTS", item_seq.size(0) * item_seq.size(1) * 3 * 128)
    chunked = baselines.narm_states(model, item_seq)[real]  # 3 query positions per chunk, rows shed, recomputed
    assert len(set(real.sum(1).tolist())) > 3  # rows of many lengths
    torch.testing.assert_close(whole, chunked)
    weights = list(model.parameters())
    grads_whole = torch.autograd.grad(whole.square().sum(), weights, allow_unused=True)
    grads_chunked = torch.autograd.grad(chunked.square().sum(), weights, allow_unused=True)
    for a, b in zip(grads_whole, grads_chunked):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cloze_windows_append_the_target_and_drop_a_full_window_first_item():
    # L = 4. Row 0: a user's first window (3 items, then target 9); row 1: a full window.
    item_seq = torch.tensor([[5, 6, 7, 0], [1, 2, 3, 4]])
    lengths = torch.tensor([3, 4])
    targets = next_item_targets(item_seq, lengths, torch.tensor([9, 8]))
    real = item_seq != 0
    sequence, maskable = cloze_windows(item_seq, lengths, targets, real, max_len=4)
    assert sequence.tolist() == [[5, 6, 7, 9], [2, 3, 4, 8]]
    assert maskable.tolist() == [[True] * 4, [True] * 4]
    # overlapping windows: only the new targets (from position 2 of the window) may be masked
    start = torch.tensor([0, 2])
    real = real & (torch.arange(4) >= start.unsqueeze(1))
    sequence, maskable = cloze_windows(item_seq, lengths, targets, real, max_len=4)
    assert maskable.tolist() == [[True] * 4, [False, False, True, True]]  # targets 4 and 8
    # narrower batch: the target fits after the longest window
    sequence, maskable = cloze_windows(item_seq[:1, :3], lengths[:1], targets[:1, :3], real[:1, :3], max_len=4)
    assert sequence.tolist() == [[5, 6, 7, 9]] and maskable.all()


@pytest.mark.parametrize("chunk_rows", [None, 8], ids=["one-chunk", "chunks-of-8"])
@pytest.mark.parametrize("ft_ratio", [0.0, 1.0])
def test_bert4rec_cloze_loss_is_recbole_forward_at_the_masked_positions(windows, ft_ratio, chunk_rows, monkeypatch):
    config, train_data, model = built("BERT4Rec", windows)
    if chunk_rows is not None:
        monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", chunk_rows * model.n_items)
    batch = first_batch(train_data)
    loss = bert4rec_all_positions_loss(model, batch, "CE", ft_ratio, generator=torch.Generator().manual_seed(3))
    # The same draws by hand: the masked sequence through RecBole's BERT4Rec.forward, CE + output_bias.
    generator = torch.Generator().manual_seed(3)
    width = int(batch[model.ITEM_SEQ_LEN].max())
    item_seq = batch[model.ITEM_SEQ][:, :width]
    targets = next_item_targets(item_seq, batch[model.ITEM_SEQ_LEN], batch[model.POS_ITEM_ID])
    sequence, maskable = cloze_windows(item_seq, batch[model.ITEM_SEQ_LEN], targets, item_seq != 0, 10)
    assert torch.rand((), generator=generator) < ft_ratio or ft_ratio == 0.0
    if ft_ratio == 1.0:
        masked = torch.zeros_like(maskable)
        masked[torch.arange(len(sequence)), (sequence != 0).sum(1) - 1] = True
        assert (sequence[masked] == batch[model.POS_ITEM_ID]).all()  # fine-tuning: each window's target
    else:
        masked = maskable & (torch.rand(sequence.shape, generator=generator) < model.mask_ratio)
        assert 0.1 < masked.sum().item() / maskable.sum().item() < 0.3  # mask_ratio 0.2
    output = model.forward(sequence.masked_fill(masked, model.mask_token))[masked]
    logits = output @ model.item_embedding.weight[: model.n_items].t() + model.output_bias
    expected = torch.nn.functional.cross_entropy(logits, sequence[masked])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    params = [param for param in model.parameters() if param.requires_grad]
    torch.testing.assert_close(torch.autograd.grad(loss, params, allow_unused=True),
                               torch.autograd.grad(expected, params, allow_unused=True))


def test_bert4rec_fine_tunes_in_all_positions_only_where_the_user_sets_ft_ratio(windows, mini_data_path):
    # RecBole's BERT4Rec.yaml says 0.5: one fine-tuning target per window (see Config's NOTE)
    assert windows["BERT4Rec"][0]["ft_ratio"] == 0.0
    base = {"data_path": str(mini_data_path), "train_regime": "all_positions"}
    assert Config("BERT4Rec", "mini", config_dict={**base, "ft_ratio": 0.5})["ft_ratio"] == 0.5
    assert Config("BERT4Rec", "mini", config_dict={**base, "train_regime": "prefix"})["ft_ratio"] == 0.5


def test_builtin_all_positions_uses_the_package_windows_and_trainer(windows, mini_data_path):
    config, train_data = windows["SASRec"]
    assert isinstance(train_data._dataset, RegimeDataset)
    hymoerec = build_data("HyMoERec", {"data_path": str(mini_data_path), "train_regime": "all_positions",
                                       "train_windows": "last", **SMALL})[2]
    for field in ("user_id", "item_id", "item_length"):
        assert train_data._dataset.inter_feat[field].tolist() == hymoerec._dataset.inter_feat[field].tolist()
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = build_trainer(config, model)
    assert isinstance(trainer, MoETrainer) and trainer.batch_loss != model.calculate_loss
    assert windows["BERT4Rec"][0]["transform"] is None  # no per-item Python masking in the loader


def test_other_builtin_models_refuse_all_positions_naming_the_supported_ones(mini_data_path):
    with pytest.raises(ConfigError, match="not available for Caser.*SASRec, GRU4Rec, NARM, BERT4Rec"):
        Config("Caser", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions"})
    for general in ("Pop", "BPR"):  # not sequential: no windows to train on
        with pytest.raises(ConfigError, match=f"sequential models only and {general} is not one"):
            Config(general, "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions"})
    with pytest.raises(ConfigError, match="loss_type='SSM'"):
        Config("SASRec", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions",
                                              "loss_type": "SSM"})


@pytest.mark.integration
@pytest.mark.parametrize("name,loss_type", [("SASRec", "CE"), ("GRU4Rec", "BPR"), ("NARM", "CE"), ("BERT4Rec", "CE"),
                                            ("BERT4Rec", "BPR")])
def test_builtins_train_in_all_positions(tiny_config, name, loss_type):
    result = run(name, "mini", config_dict={**tiny_config, "train_regime": "all_positions", "loss_type": loss_type,
                                            "embedding_size": 16})
    assert result["train_regime"] == "all_positions" and 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


@pytest.mark.integration
def test_sasrec_trained_in_all_positions_reloads_with_recbole_own_loader(tiny_config, tmp_path):
    result = run("SASRec", "mini", config_dict={**tiny_config, "train_regime": "all_positions", "epochs": 2,
                                                "eval_exclude_history": False})
    code = f"""
import json
import recbole_hymoe  # only RecBole's repairs for today's stack; the loader below is RecBole's own
from recbole.quick_start import load_data_and_model
from recbole.utils import get_trainer
config, model, dataset, train_data, valid_data, test_data = load_data_and_model({result["checkpoint"]!r})
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
print(json.dumps({{"class": type(model).__module__, "test": dict(trainer.evaluate(test_data, load_best_model=False))}}))
"""
    reloaded = run_python(code, cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    out = json.loads(reloaded.stdout.strip().splitlines()[-1])
    assert out["class"] == "recbole.model.sequential_recommender.sasrec"
    assert out["test"] == result["test_result"]


@pytest.mark.parametrize("name", [*CAUSAL_MODELS, "BERT4Rec"])
def test_length_grouped_evaluation_scores_as_recbole_whole_batch(name, mini_data_path, monkeypatch):
    # L = 200: the mini users' histories (20 to ~700 items) give groups of very different widths
    config, _, train_data, valid_data, _ = build_data(name, {"data_path": str(mini_data_path), **SMALL,
                                                             "MAX_ITEM_LIST_LENGTH": 200})
    torch.manual_seed(0)
    model = get_model(name)(config, train_data._dataset).eval()
    trainer = build_trainer(config, model)  # prefix regime: these four get the package's trainer in both
    assert isinstance(trainer, MoETrainer)
    monkeypatch.setattr(base, "EVAL_GROUP_ROWS", 7)
    batch = next(iter(valid_data))
    assert len(set(batch[0][model.ITEM_SEQ_LEN].tolist())) > 10
    assert min(width for _, width in base.length_groups(batch[0][model.ITEM_SEQ_LEN])) + 1 < 200  # some are trimmed
    trainer.tot_item_num = valid_data._dataset.item_num  # set by Trainer.evaluate
    with torch.no_grad():
        ours = trainer._full_sort_batch_eval(batch)[1]  # [B, n_items]
        whole = Trainer._full_sort_batch_eval(trainer, batch)[1]
    torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-5)
