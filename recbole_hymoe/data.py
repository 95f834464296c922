"""Training regimes: RecBole's prefix samples, or one window per user with a loss at every position.

``prefix`` (RecBole's native regime): every prefix of a training sequence is a sample, its loss
at the last position. ``all_positions``: each user's training sequence is fed once per epoch,
cut into windows of ``MAX_ITEM_LIST_LENGTH``, and the model predicts the next item at every
position (autoregressive training, as in SASRec's original code, HSTU and FuXi-α). Both regimes
see the same training targets; validation and test stay RecBole's full-sort evaluation of the
same split, so their numbers are comparable.

The all-positions windows are chosen among RecBole's own prefix rows of the training split: the
row whose target is a user's k-th item carries the (up to) ``L`` items before it, so as a window
it supervises the targets ``k-L+1 … k``, each predicted from the items before it in the window.
``train_windows: tiled`` keeps the rows with targets
``n, n-L, n-2L, …`` (n = the user's last training target): non-overlapping windows that cover
every training target once. ``train_window_stride: S`` (< L) makes the tiles overlap: windows end
at targets ``n, n-S, n-2S, …`` and each supervises only its last S positions, so every training
target is still supervised exactly once but with at least L - S items of context (the first
targets of a non-overlapping tile see little). ``train_windows: last`` keeps only the latest
window per user (SASRec's original truncation; targets older than L items are never trained on).

Under the protocol's split (leave-one-out by time per user) the all-positions regime never builds
RecBole's prefix rows: :meth:`RegimeDataset.data_augmentation` materialises only the rows that
are used — each user's windows and its validation and test rows — straight from the user's
interaction sequence, so memory grows with users × L instead of interactions × L (ML-1M, L = 200:
≈ 25 k rows instead of ≈ 1 M). The rows are the very ones RecBole's augmentation and split would
give (tested); other splits fall back to RecBole's augmentation and pick the windows from it.
"""

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_hymoe.atomic import read_dataset
from recbole_hymoe.errors import ConfigError

TRAIN_REGIMES = ("prefix", "all_positions")
# RecBole's built-in models that train in the all_positions regime (see recbole_hymoe.baselines).
ALL_POSITIONS_BUILTINS = ("SASRec", "GRU4Rec", "NARM", "BERT4Rec")
LOSS_START_FIELD = "window_loss_start"  # first supervised position of an overlapping window
TRAIN_WINDOWS = ("tiled", "last")


def check_regime(config, plugin):
    """Raise :class:`ConfigError` for an unknown or unsupported ``train_regime`` / ``train_windows``.

    ``plugin``: the model is one of the package's (all of which train in both regimes).
    """
    regime, windows, stride = config["train_regime"], config["train_windows"], config["train_window_stride"]
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)
                               or not 1 <= stride <= config["MAX_ITEM_LIST_LENGTH"]):
        raise ConfigError(f"train_window_stride={stride!r} must be ~ or an integer in "
                          f"[1, MAX_ITEM_LIST_LENGTH={config['MAX_ITEM_LIST_LENGTH']}]")
    if regime not in TRAIN_REGIMES:
        raise ConfigError(f"train_regime={regime!r} must be one of {list(TRAIN_REGIMES)}")
    if windows not in TRAIN_WINDOWS:
        raise ConfigError(f"train_windows={windows!r} must be one of {list(TRAIN_WINDOWS)}")
    if regime != "all_positions" or plugin:
        return
    if config["model"] not in ALL_POSITIONS_BUILTINS:
        raise ConfigError(
            f"train_regime='all_positions' is not available for {config['model']}: of RecBole's built-in "
            f"models, {', '.join(ALL_POSITIONS_BUILTINS)} support it (and every plugin model). Use "
            f"train_regime='prefix' for {config['model']}."
        )
    if config["loss_type"] not in ("CE", "BPR"):
        raise ConfigError(f"loss_type={config['loss_type']!r} must be 'CE' or 'BPR' for RecBole's {config['model']}")


def window_rows(user_ids, max_len, windows, stride=None):
    """Pick the prefix rows that become all-positions training windows.

    Args:
        user_ids (ndarray): [R] user of each prefix row; each user's rows are contiguous and in
            time order (as RecBole's leave-one-out split leaves them).
        max_len (int): L, the window length.
        windows (str): ``tiled`` or ``last``.
        stride (int, optional): S ≤ L, the step between tiled windows (default L).

    Returns:
        ndarray: sorted row indices; per user the last row, and with ``tiled`` every S-th row
        before it.
    """
    user_ids = np.asarray(user_ids)
    if len(user_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    ends = np.r_[starts[1:], len(user_ids)] - 1  # last row of each user
    if windows == "last":
        return ends
    step = stride or max_len
    rows = [np.arange(end, start - 1, -step)[::-1] for start, end in zip(starts, ends)]
    return np.concatenate(rows)


def loss_start(lengths, stride):
    """First supervised position of each window: only its last ``stride`` positions are new.

    A window of length n ending at target j supervises targets j-stride+1 … j; the window S rows
    earlier covers the targets before. With stride = L (non-overlapping tiles) every position is
    supervised; with a smaller stride every target keeps at least L - stride items of context.
    """
    return np.maximum(0, np.asarray(lengths) - stride)


def leave_one_out_counts(n_rows, leave_out=2):
    """Rows per user that RecBole's leave-one-out split holds out (its ``_split_index_by_leave_one_out``).

    A user with ``r`` prefix rows keeps ``min(leave_out, r - 1)`` of them for validation/test: with
    2 rows only a test row, with 1 row none.
    """
    return np.clip(np.asarray(n_rows) - 1, 0, leave_out)


def user_rows(user_ids):
    """Start index and length of each user's run of rows in ``user_ids`` (users contiguous)."""
    user_ids = np.asarray(user_ids)
    if len(user_ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])
    return starts, np.diff(np.r_[starts, len(user_ids)])


def gather_lists(values, ends, lengths, width):
    """Right-padded lists ``values[end - length : end]`` of each row, [R, width] (+ value dims)."""
    offsets = torch.arange(width)
    index = torch.as_tensor(ends - lengths).unsqueeze(1) + offsets  # [R, width]
    real = offsets < torch.as_tensor(lengths).unsqueeze(1)  # [R, width]
    lists = values[index.clamp(0, max(len(values) - 1, 0))]
    mask = real.view(*real.shape, *([1] * (lists.dim() - 2)))
    return torch.where(mask, lists, torch.zeros((), dtype=lists.dtype))


class RegimeDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` whose training split follows ``train_regime``.

    Registered as ``recbole.data.dataset.<Model>Dataset`` for the package's models, so RecBole's
    ``create_dataset`` (and ``load_data_and_model``) builds it. ``train_interactions`` (on the dataset and
    on each of its splits) is the user and item of every training interaction, in time order per
    user (numpy arrays ``(users, items)``), e.g. for a user-item graph of training interactions
    only and for the seen items excluded at evaluation.

    Two repairs of the time field:

    - a dataset without a time column is ordered by its rows: the time field is filled with the
      row position in the file (``time_from_file_order`` is then True; time-aware models refuse
      such data unless told not to read time);
    - timestamps are shifted to start at 0 before RecBole turns them into float32 tensors, whose
      resolution at today's Unix times is 128 s; differences (all a model may use) keep 1-s
      resolution for spans up to about 190 days and 32 s up to 12 years.
    """

    time_from_file_order = False
    train_interactions = None
    _user_rank = None  # user id -> position in RecBole's split order (lean all_positions build only)

    def _load_inter_feat(self, token, dataset_path):
        super()._load_inter_feat(token, dataset_path)
        field = self.time_field
        if field is None:
            return
        if field not in self.inter_feat.columns:
            self.inter_feat[field] = np.arange(len(self.inter_feat), dtype=np.float64)
            self.field2type[field] = FeatureType.FLOAT
            self.field2source[field] = FeatureSource.INTERACTION
            self.field2seqlen[field] = 1
            self.field2bucketnum[field] = 2
            self.time_from_file_order = True
            self.logger.warning(
                f"dataset {token!r} has no {field!r} column: interactions are ordered by their row in the file"
            )
        else:
            self.inter_feat[field] = self.inter_feat[field] - self.inter_feat[field].min()

    def _windows_only(self):
        """Whether the training split needs only the all-positions windows and the split is the
        protocol's leave-one-out, so that RecBole's full prefix augmentation can be skipped."""
        args = self.config["eval_args"]
        return (self.config["train_regime"] == "all_positions" and self.config["benchmark_filename"] is None
                and args["split"] == {"LS": "valid_and_test"} and args["group_by"] == "user" and args["order"] == "TO")

    def data_augmentation(self):
        """RecBole's prefix rows, or (:meth:`_windows_only`) only the rows the split keeps.

        Per user with n interactions (sorted by time, as RecBole sorts), RecBole's rows have the
        targets 2 … n and leave-one-out holds out the last (up to) two of them; of the training
        rows only the windows of :func:`window_rows` are built. Each row carries, for every field,
        the list of the (up to) L values before its target, as RecBole's augmentation does.
        """
        if not self._windows_only():
            super().data_augmentation()
            return
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        users = self.inter_feat[self.uid_field].numpy()
        times = self.inter_feat[self.time_field].numpy()  # the values RecBole's split sorts by
        starts, counts = user_rows(users)
        train_counts = np.repeat(counts - leave_one_out_counts(counts - 1), counts)  # per interaction
        position = np.arange(len(users)) - np.repeat(starts, counts)  # within the user's sequence
        self.train_interactions = (users[position < train_counts],
                                   self.inter_feat[self.iid_field].numpy()[position < train_counts])
        train_rows = np.flatnonzero((position >= 1) & (position < train_counts))  # targets of training rows
        max_len = self.max_item_list_len
        stride = self.config["train_window_stride"] or max_len
        windows = train_rows[window_rows(users[train_rows], max_len, self.config["train_windows"], stride)]
        held_out = np.flatnonzero(position >= np.maximum(train_counts, 1))  # validation and test targets
        targets = np.sort(np.r_[windows, held_out])  # users stay contiguous, in time order
        lengths = np.minimum(position[targets], max_len)
        new_data = self.inter_feat[targets]
        new_dict = {self.item_list_length_field: torch.from_numpy(lengths.astype(np.int64))}
        for field in self.inter_feat:
            if field != self.uid_field:
                new_dict[getattr(self, f"{field}_list_field")] = gather_lists(
                    self.inter_feat[field], targets, lengths, max_len)
        new_data.update(Interaction(new_dict))
        self.inter_feat = new_data
        # RecBole's split lists users in the order their first prefix row comes after its stable
        # sort by time (the user's second interaction; ties by user id): keep that row order.
        has_rows = counts >= 2
        first_targets = times[starts[has_rows] + 1]
        ranked = users[starts[has_rows]][np.lexsort((users[starts[has_rows]], first_targets))]
        self._user_rank = np.zeros(self.user_num, dtype=np.int64)
        self._user_rank[ranked] = np.arange(len(ranked))

    def build(self):
        train, valid, test = super().build()
        if self.train_interactions is None:  # built from RecBole's prefix rows
            self.train_interactions = prefix_interactions(train)
        else:  # only the kept rows were built: restore the row order of RecBole's split
            for split in (train, valid, test):
                order = np.argsort(self._user_rank[split.inter_feat[self.uid_field].numpy()], kind="stable")
                split.inter_feat = split.inter_feat[order]
        for split in (train, valid, test):  # a model gets one split; each can reach the training data
            split.train_interactions = self.train_interactions
        if self.config["train_regime"] == "all_positions":
            stride = self.config["train_window_stride"] or self.max_item_list_len
            windows = self.config["train_windows"]
            feat = train.inter_feat
            if not self._windows_only():  # RecBole's prefix rows: pick the windows among them
                feat = feat[window_rows(feat[self.uid_field].numpy(), self.max_item_list_len, windows, stride)]
            if windows == "tiled" and stride < self.max_item_list_len:
                starts = loss_start(feat[self.item_list_length_field].numpy(), stride)
                feat.update(Interaction({LOSS_START_FIELD: torch.from_numpy(starts)}))
                self.set_field_property(LOSS_START_FIELD, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
            train = train.copy(feat)
            train.train_interactions = self.train_interactions
        return [train, valid, test]


class LengthBucketedTrainDataLoader(TrainDataLoader):
    """RecBole's training loader whose batches group sequences of similar length.

    Each epoch: a random permutation (RecBole's seeded generator) is cut into chunks of
    ``BUCKET_BATCHES`` batches, each chunk is sorted by sequence length and cut into batches, and
    the batch order is shuffled. Same rows and batch count as RecBole's loader; batches carry
    less padding, which the package's models trim (measured on ML-1M, L = 200: ≈ 0.65× step
    time). Used for the all-positions regime when ``train_length_bucketing`` is on (off by
    default).

    NOTE: it changes what is learnt, not only how fast: each batch's loss is a mean over its real
    positions and each batch is one optimizer step, so batches of short sequences weigh their
    positions more and batches become homogeneous. On Beauty the SASRec-equivalent reached valid
    NDCG@10 0.0556 after 11 epochs with it against 0.0607 without (seed 2020, same settings;
    `results/bench/paper-beauty`'s earlier bucketed cells plateaued at 0.061, test 0.0510).
    """

    BUCKET_BATCHES = 50

    def _batches(self):
        lengths = self._dataset.inter_feat[self._dataset.item_list_length_field]
        order = torch.randperm(len(lengths), generator=self.generator)
        chunk = self.step * self.BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), chunk):
            piece = order[start : start + chunk]
            piece = piece[torch.argsort(lengths[piece], stable=True)]
            batches.extend(piece.split(self.step))
        shuffle = torch.randperm(len(batches), generator=self.generator)
        return [batches[i].numpy() for i in shuffle]

    def __iter__(self):
        for index in self._batches():
            yield self.collate_fn(index)


def csr_rows(ptr, values, rows):
    """Entries of the CSR rows ``rows``: (position of the row in ``rows`` [nnz'], value [nnz'])."""
    starts = ptr[rows]
    counts = ptr[rows + 1] - starts
    offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return np.repeat(np.arange(len(rows)), counts), values[offsets + np.arange(counts.sum())]


def eval_history(eval_dataset, train_interactions):
    """Items each evaluation row's user interacted with before its target, the target excluded.

    RecBole's full-sort evaluation ranks a general model's already-seen items last but, for
    sequential models, ranks them like any other item; the protocol excludes them for every
    model. A row's history is its own item list (the latest ``L`` items, validation item
    included for a test row) plus all of its user's training items. As RecBole's general loader
    does, an item equal to the row's target stays ranked.

    Args:
        eval_dataset: validation or test split (RecBole ``SequentialDataset``).
        train_interactions (tuple[ndarray, ndarray]): user and item of every training interaction.

    Returns:
        tuple[ndarray, ndarray]: CSR over the rows of ``eval_dataset``: ``ptr`` [R + 1] and
        ``items`` [nnz] (int64), items sorted within each row.
    """
    uid, iid, list_field = eval_dataset.uid_field, eval_dataset.iid_field, eval_dataset.item_id_list_field
    n_items = eval_dataset.item_num
    train_users, train_items = (np.asarray(a, dtype=np.int64) for a in train_interactions)
    user_keys = np.unique(train_users * n_items + train_items)  # unique (user, item), by user
    user_of_key, item_of_key = np.divmod(user_keys, n_items)
    user_ptr = np.r_[0, np.cumsum(np.bincount(user_of_key, minlength=eval_dataset.user_num))]

    rows = eval_dataset.inter_feat
    users, targets = rows[uid].numpy(), rows[iid].numpy()
    lists = rows[list_field].numpy()  # [R, L], 0 = padding
    list_row, list_col = np.nonzero(lists)
    train_row, train_item = csr_rows(user_ptr, item_of_key, users)  # training items of each row's user
    row = np.concatenate([list_row, train_row])
    item = np.concatenate([lists[list_row, list_col], train_item])
    keep = item != targets[row]
    keys = np.unique(row[keep] * n_items + item[keep])
    row, item = np.divmod(keys, n_items)
    ptr = np.r_[0, np.cumsum(np.bincount(row, minlength=len(users)))]
    return ptr.astype(np.int64), item.astype(np.int64)


class HistoryMaskedEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort loader that also hands a sequential batch's history to the trainer.

    RecBole's ``Trainer`` sets the scores at the returned ``(row, item)`` pairs to -inf (what it
    does for general models), so every model, built-in or plugin, is evaluated with the user's
    already-seen items excluded (:func:`eval_history`).
    """

    def __init__(self, config, dataset, sampler, history, shuffle=False):
        self.history_ptr, self.history_items = history
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        interaction, _, positive_u, positive_i = super().collate_fn(index)
        history_u, history_i = csr_rows(self.history_ptr, self.history_items, np.asarray(index))
        return interaction, (torch.from_numpy(history_u), torch.from_numpy(history_i)), positive_u, positive_i


def prefix_interactions(train):
    """User and item of every training interaction, from RecBole's training prefix rows: every
    row's target plus each user's first item (the list of its one-item row; never a target), as
    RecBole's ``SequentialDataset.inter_matrix`` counts them."""
    inter = train.inter_feat
    users = inter[train.uid_field].numpy()
    first = (inter[train.item_list_length_field] == 1).numpy()
    return (np.r_[users, users[first]],
            np.r_[inter[train.iid_field].numpy(), inter[train.item_id_list_field][first, 0].numpy()])


def exclude_history(config, train_data, valid_data, test_data):
    """Validation and test loaders that rank each user's seen items last (``eval_exclude_history``).

    Returns the loaders unchanged for non-sequential models (RecBole already excludes there) or
    when the key is False or absent (a checkpoint saved before the key existed); ``train_data``
    only provides the training interactions.
    """
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL or not config["eval_exclude_history"]:
        return valid_data, test_data
    train = train_data._dataset
    interactions = train.train_interactions
    if interactions is None:  # RecBole's SequentialDataset (another model's data): its prefix rows
        interactions = prefix_interactions(train)
    return tuple(
        HistoryMaskedEvalDataLoader(config, data._dataset, data._sampler,
                                    eval_history(data._dataset, interactions), shuffle=False)
        for data in (valid_data, test_data)
    )


def prepare_data(config):
    """RecBole's ``create_dataset`` + ``data_preparation``, with length-bucketed training batches
    in the all-positions regime when ``train_length_bucketing`` is on, evaluation that excludes
    each user's seen items (:func:`exclude_history`), and, for RecBole's own sequential models on
    data without a time column, :class:`RegimeDataset`'s row order (the models of
    ``ALL_POSITIONS_BUILTINS`` always read it, see ``recbole_hymoe/__init__.py``). The atomic files
    are checked as they are read (:func:`recbole_hymoe.atomic.read_dataset`).

    Returns:
        tuple: dataset, train, valid and test loaders.

    Raises:
        AtomicFileError: an atomic file RecBole cannot read, or data with nothing to train on.
    """
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and config["time_from_file_order"]:
        # any built-in sequential model on data without time: order by rows
        dataset = read_dataset(config, RegimeDataset)
    else:
        dataset = read_dataset(config, create_dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if config["train_regime"] == "all_positions" and config["train_length_bucketing"]:
        train_data = LengthBucketedTrainDataLoader(config, train_data._dataset, train_data._sampler, shuffle=True)
    valid_data, test_data = exclude_history(config, train_data, valid_data, test_data)
    return dataset, train_data, valid_data, test_data
