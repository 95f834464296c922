"""Training regimes: windows, targets at every position, no leakage, padding, prefix equality."""

import numpy as np
import pytest
import torch
from conftest import build_data, first_batch

from recbole_hymoe import Config, HyMoERec
from recbole_hymoe.data import RegimeDataset, window_rows
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn.losses import next_item_targets


def test_window_rows_tile_each_user_backwards_from_the_last_row():
    users = np.array([7] * 5 + [3] * 2 + [9] * 1)
    # user 7: rows 4, 2, 0 (targets 5-6, 3-4, 2); user 3: row 6 covers both its targets
    assert window_rows(users, 2, "tiled").tolist() == [0, 2, 4, 6, 7]
    assert window_rows(users, 2, "last").tolist() == [4, 6, 7]
    assert window_rows(users, 10, "tiled").tolist() == [4, 6, 7]
    assert window_rows(np.array([], dtype=np.int64), 3, "tiled").tolist() == []


def test_next_item_targets_shift_and_end_with_the_last_target():
    item_seq = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]])
    targets = next_item_targets(item_seq, torch.tensor([3, 1, 4]), torch.tensor([9, 10, 11]))
    assert targets.tolist() == [[6, 7, 9, 0], [10, 0, 0, 0], [2, 3, 4, 11]]


@pytest.fixture(scope="module")
def regimes(mini_data_path):
    """The same data under both regimes (L = 10, so many users need several windows)."""
    base = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "state": "ERROR", "show_progress": False}
    prefix = build_data("HyMoERec", {**base, "train_regime": "prefix"})
    tiled = build_data("HyMoERec", {**base, "train_regime": "all_positions", "train_windows": "tiled"})
    last = build_data("HyMoERec", {**base, "train_regime": "all_positions", "train_windows": "last"})
    return prefix, tiled, last


def user_sequences(dataset):
    """Time-ordered items of every user but its first: the targets of a prefix-regime dataset's rows."""
    inter = dataset.inter_feat
    sequences = {}
    for uid, iid in zip(inter[dataset.uid_field].tolist(), inter[dataset.iid_field].tolist()):
        sequences.setdefault(uid, []).append(iid)
    return sequences


def window_targets(train_dataset):
    """(user, [targets of every real position]) of each all-positions window."""
    inter = train_dataset.inter_feat
    out = []
    for uid, seq, length, target in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist(),
                                        inter["item_length"].tolist(), inter["item_id"].tolist()):
        out.append((uid, seq[1:length] + [target]))
    return out


def test_tiled_windows_supervise_every_training_target_exactly_once(regimes):
    prefix, tiled, _ = regimes
    prefix_targets = {}
    for uid, target in zip(prefix[2]._dataset.inter_feat["user_id"].tolist(),
                           prefix[2]._dataset.inter_feat["item_id"].tolist()):
        prefix_targets.setdefault(uid, []).append(target)
    covered = {}
    for uid, targets in window_targets(tiled[2]._dataset):
        covered.setdefault(uid, []).extend(targets)
    assert {uid: sorted(t) for uid, t in covered.items()} == {uid: sorted(t) for uid, t in prefix_targets.items()}
    assert len(tiled[2]._dataset) > len(set(covered))  # some users need several windows at L = 10


def test_last_windows_keep_one_window_per_user(regimes):
    _, tiled, last = regimes
    users = last[2]._dataset.inter_feat["user_id"].tolist()
    assert len(users) == len(set(users)) == len(set(tiled[2]._dataset.inter_feat["user_id"].tolist()))
    assert all(len(t) <= 10 for _, t in window_targets(last[2]._dataset))


def test_no_validation_or_test_item_leaks_into_training_windows(regimes):
    prefix, tiled, _ = regimes
    config, dataset, train_data, valid_data, test_data = tiled
    sequences = user_sequences(prefix[1])
    for uid, targets in window_targets(train_data._dataset):
        full = sequences[uid]
        assert len(full) >= 3
        train_part = full[:-2]  # the last two interactions are validation and test
        window_items = targets  # every target of the window is a training item, in order
        start = next(i for i in range(len(train_part)) if train_part[i : i + len(window_items)] == window_items)
        assert start + len(window_items) <= len(train_part)
    valid_inter = valid_data._dataset.inter_feat
    for uid, target in zip(valid_inter["user_id"].tolist(), valid_inter["item_id"].tolist()):
        assert target == sequences[uid][-2]


def test_all_positions_loss_at_the_last_position_equals_the_prefix_loss(regimes, mini_data_path):
    # A user whose training sequence fits in one window: its last-position loss in the
    # all-positions regime is the prefix regime's loss of its last training row.
    prefix, _, last = regimes
    common = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "state": "ERROR",
              "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
    model_ap = HyMoERec(Config("HyMoERec", "mini", config_dict={**common, "train_regime": "all_positions"}),
                        last[2]._dataset).eval()
    model_px = HyMoERec(Config("HyMoERec", "mini", config_dict={**common, "train_regime": "prefix"}),
                        prefix[2]._dataset).eval()
    model_px.load_state_dict(model_ap.state_dict())
    window = last[2]._dataset.inter_feat[[0]]
    length = int(window["item_length"][0])
    with torch.no_grad():
        hidden = model_ap.encode(window["item_id_list"], window["item_length"]).hidden  # [1, L, H]
        targets = next_item_targets(window["item_id_list"], window["item_length"], window["item_id"])
        per_position = torch.nn.functional.cross_entropy(
            hidden[0, :length] @ model_ap.item_table().t(), targets[0, :length], reduction="none")
        prefix_loss, _ = model_px.calculate_loss(window)
    assert per_position[-1].item() == pytest.approx(prefix_loss.item(), abs=1e-5)


def test_all_positions_loss_ignores_padding(regimes, mini_data_path):
    _, tiled, _ = regimes
    config = Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10,
                                                     "train_regime": "all_positions", "state": "ERROR"})
    model = HyMoERec(config, tiled[2]._dataset).eval()
    batch = first_batch(tiled[2])
    with torch.no_grad():
        loss, aux = model.calculate_loss(batch)
        padded = batch["item_id_list"].clone()
        wider = torch.cat([padded, torch.zeros(len(batch), 5, dtype=padded.dtype)], dim=1)
        batch.interaction["item_id_list"] = wider
        loss_wide, aux_wide = model.calculate_loss(batch)
    assert loss.item() == pytest.approx(loss_wide.item(), abs=1e-6)
    assert aux.item() == pytest.approx(aux_wide.item(), abs=1e-6)


def test_unsupported_models_and_values_refuse_the_regime(mini_data_path):
    with pytest.raises(ConfigError, match="not available for Caser"):
        Config("Caser", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions"})
    with pytest.raises(ConfigError, match="train_regime='every'"):
        Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "every"})
    with pytest.raises(ConfigError, match="train_windows='all'"):
        Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "train_windows": "all"})


def test_all_positions_defaults_to_sequence_batches(mini_data_path):
    config = Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions"})
    assert config["train_batch_size"] == 128
    config = Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "train_regime": "all_positions",
                                                     "train_batch_size": 64})
    assert config["train_batch_size"] == 64


def test_batches_mix_lengths_unless_bucketing_is_asked_for(mini_data_path):
    from recbole_hymoe.data import LengthBucketedTrainDataLoader

    _, _, train_data, _, _ = build_data("HyMoERec", {
        "data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_regime": "all_positions",
        "train_batch_size": 8, "state": "ERROR"})
    assert not isinstance(train_data, LengthBucketedTrainDataLoader)  # it changes results: opt-in


def test_length_bucketed_loader_yields_every_row_once_in_similar_length_batches(mini_data_path):
    from recbole_hymoe.data import LengthBucketedTrainDataLoader

    _, _, train_data, _, _ = build_data("HyMoERec", {
        "data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_regime": "all_positions",
        "train_batch_size": 8, "state": "ERROR", "train_length_bucketing": True})
    assert isinstance(train_data, LengthBucketedTrainDataLoader)
    batches = list(train_data)
    assert len(batches) == len(train_data)
    rows = sorted((b["user_id"][i].item(), b["item_id"][i].item()) for b in batches for i in range(len(b)))
    inter = train_data._dataset.inter_feat
    assert rows == sorted(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))
    spread = [int(b["item_length"].max() - b["item_length"].min()) for b in batches[:-1]]
    assert np.mean(spread) < 2  # 120 users in at most 50-batch buckets: near-uniform lengths
    second_epoch = [b["user_id"].tolist() for b in train_data]
    assert second_epoch != [b["user_id"].tolist() for b in batches]  # reshuffled every epoch


def test_overlapping_windows_supervise_every_target_once_with_context(mini_data_path, regimes):
    from recbole_hymoe.data import LOSS_START_FIELD, loss_start

    assert loss_start([10, 10, 7, 3], 5).tolist() == [5, 5, 2, 0]
    prefix = regimes[0]
    _, _, train_data, _, _ = build_data("HyMoERec", {
        "data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_regime": "all_positions",
        "train_window_stride": 4, "state": "ERROR"})
    inter = train_data._dataset.inter_feat
    covered = {}
    for uid, seq, length, target, start in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist(),
                                               inter["item_length"].tolist(), inter["item_id"].tolist(),
                                               inter[LOSS_START_FIELD].tolist()):
        targets = (seq[1:length] + [target])[start:]
        covered.setdefault(uid, []).extend(targets)
        # a supervised target sees >= L - S items, or every item before it (windows shorter than L
        # start at the user's first item)
        assert length < 10 or start >= 10 - 4
    prefix_targets = {}
    for uid, target in zip(prefix[2]._dataset.inter_feat["user_id"].tolist(),
                           prefix[2]._dataset.inter_feat["item_id"].tolist()):
        prefix_targets.setdefault(uid, []).append(target)
    assert {u: sorted(t) for u, t in covered.items()} == {u: sorted(t) for u, t in prefix_targets.items()}
    with pytest.raises(ConfigError, match="train_window_stride=11"):
        Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10,
                                                 "train_window_stride": 11})


def brute_force_history(eval_data, prefix_train):
    """{(user, target): items seen before} from every item list and target of the user's rows."""
    seen = {}
    inter = prefix_train.inter_feat
    for uid, seq, target in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist(), inter["item_id"].tolist()):
        seen.setdefault(uid, set()).update(i for i in seq + [target] if i)
    out = []
    inter = eval_data._dataset.inter_feat
    for uid, seq, target in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist(), inter["item_id"].tolist()):
        out.append(sorted((seen.get(uid, set()) | {i for i in seq if i}) - {target}))
    return out


def csr_rows(history):
    ptr, items = history
    return [items[ptr[r]:ptr[r + 1]].tolist() for r in range(len(ptr) - 1)]


def test_eval_history_holds_every_earlier_item_of_the_user_but_the_target(regimes):
    from recbole_hymoe.data import HistoryMaskedEvalDataLoader, eval_history

    prefix, tiled, last = regimes
    config, dataset, train_data, valid_data, test_data = prefix
    sequences = user_sequences(dataset)  # targets of every prefix row: all items but the first
    for data, held_out in ((valid_data, 2), (test_data, 1)):
        assert isinstance(data, HistoryMaskedEvalDataLoader)
        rows = csr_rows((data.history_ptr, data.history_items))
        assert rows == brute_force_history(data, train_data._dataset)
        inter = data._dataset.inter_feat
        for uid, target, history in zip(inter["user_id"].tolist(), inter["item_id"].tolist(), rows):
            earlier = sequences[uid][:-held_out]
            assert set(earlier) - {target} <= set(history)  # L = 10 truncates most item lists
            assert len(history) <= len(earlier) + 1  # + the user's first item
    for _, _, train_ap, valid_ap, test_ap in (tiled, last):  # windows do not change the history
        assert csr_rows(eval_history(valid_ap._dataset, train_ap._dataset.train_interactions)) == csr_rows(
            (valid_data.history_ptr, valid_data.history_items))


def test_evaluation_ranks_seen_items_last_for_builtin_and_plugin_models(mini_data_path):
    from recbole.trainer import Trainer
    from recbole.utils import get_model

    base = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "state": "ERROR",
            "hidden_size": 16, "inner_size": 32, "eval_batch_size": 16}
    for name in ("SASRec", "HyMoERec"):
        config, _, train_data, valid_data, _ = build_data(name, base)
        model = get_model(name)(config, train_data._dataset)
        batch = next(iter(valid_data))
        trainer = Trainer(config, model)
        trainer.tot_item_num = valid_data._dataset.item_num  # set by Trainer.evaluate
        _, scores, _, positive_i = trainer._full_sort_batch_eval(batch)
        rows, items = batch[1]
        assert len(rows) > 0 and torch.isinf(scores[rows, items]).all()
        assert torch.isfinite(scores[torch.arange(len(positive_i)), positive_i]).all()
        masked = torch.zeros_like(scores, dtype=torch.bool)
        masked[rows, items] = True
        masked[:, 0] = True  # RecBole's padding item
        assert torch.isfinite(scores[~masked]).all()
        _, _, _, plain_valid, _ = build_data(name, {**base, "eval_exclude_history": False})
        assert next(iter(plain_valid))[1] is None  # RecBole's own sequential evaluation
    with pytest.raises(ConfigError, match="eval_exclude_history='yes' must be True or False"):
        build_data("SASRec", {**base, "eval_exclude_history": "yes"})


@pytest.mark.parametrize("windows", [{"train_windows": "tiled"}, {"train_windows": "last"},
                                     {"train_windows": "tiled", "train_window_stride": 4}])
def test_lean_window_build_equals_recbole_augmentation_then_selection(mini_data_path, monkeypatch, windows):
    # The all_positions build materialises only the kept rows; RecBole's full prefix augmentation
    # followed by the window selection must give the very same rows, in the same order.
    from recbole_hymoe.data import RegimeDataset

    overrides = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_regime": "all_positions",
                 "state": "ERROR", **windows}
    config = Config("HyMoERec", "mini", config_dict=overrides)
    lean = RegimeDataset(config).build()
    monkeypatch.setattr(RegimeDataset, "_windows_only", lambda self: False)
    full = RegimeDataset(config).build()
    for split_lean, split_full in zip(lean, full):
        assert set(split_lean.inter_feat.columns) == set(split_full.inter_feat.columns)
        for column in split_full.inter_feat.columns:
            assert torch.equal(split_lean.inter_feat[column], split_full.inter_feat[column]), column
    pairs = [sorted(zip(*(np.asarray(a).tolist() for a in split[0].train_interactions))) for split in (lean, full)]
    interactions = len((mini_data_path / "mini" / "mini.inter").read_text().splitlines()) - 1
    assert pairs[0] == pairs[1] and len(pairs[0]) == interactions - 2 * 120  # all but valid and test


def test_timestamps_start_at_zero_so_float32_keeps_their_order(mini_data_path):
    # At today's Unix times float32 resolves 128 s; RecBole sorts float32 timestamps, so without the
    # shift same-interval interactions would keep file order instead of time order.
    for model, regime in (("HyMoERec", "all_positions"), ("SASRec", "prefix")):
        config, dataset, train_data, _, test_data = build_data(model, {
            "data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_regime": regime, "state": "ERROR"})
        assert isinstance(dataset, RegimeDataset)
        times = test_data._dataset.inter_feat["timestamp"]
        raw = [int(line.split("\t")[3])
               for line in (mini_data_path / "mini" / "mini.inter").read_text().splitlines()[1:]]
        assert 0 <= times.min().item() and times.max().item() <= max(raw) - min(raw) + 8  # not ≈ 8.9e8 (float32)
