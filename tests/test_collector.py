"""The top-k collector gives RecBole's ``rec.topk`` resource exactly, and every trainer uses it."""

import torch
from recbole.evaluator import Collector

from recbole_hymoe.collector import TopKCollector, topk_hits


def recbole_topk(scores, positive_u, positive_i, k):
    """RecBole 1.2.1's construction (recbole/evaluator/collector.py), as the reference."""
    _, topk_idx = torch.topk(scores, k, dim=-1)
    pos_matrix = torch.zeros_like(scores, dtype=torch.int)
    pos_matrix[positive_u, positive_i] = 1
    pos_len_list = pos_matrix.sum(dim=1, keepdim=True)
    return torch.cat((torch.gather(pos_matrix, dim=1, index=topk_idx), pos_len_list), dim=1)


def test_topk_hits_equal_recbole_on_random_batches_with_repeated_and_missing_positives():
    generator = torch.Generator().manual_seed(0)
    for rows, items, positives in [(7, 30, 12), (64, 500, 64), (5, 11, 40)]:
        scores = torch.randn(rows, items, generator=generator)
        positive_u = torch.randint(0, rows - 1, (positives,), generator=generator)  # the last row has none
        positive_i = torch.randint(0, items, (positives,), generator=generator)
        ours = topk_hits(scores, positive_u, positive_i, 10)
        assert ours.dtype == torch.int32
        assert torch.equal(ours, recbole_topk(scores, positive_u, positive_i, 10))
    ones = topk_hits(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([0, 0]), torch.tensor([1, 1]), 2)
    assert ones.tolist() == [[1, 0, 1]]  # a repeated pair counts once, as in RecBole's dense matrix


def test_trainers_collect_with_it_and_the_metrics_are_recbole_s(tiny_config):
    from conftest import build_data
    from recbole.utils import get_model

    from recbole_hymoe.trainer import build_trainer

    config, _, train_data, valid_data, _ = build_data("SASRec", {**tiny_config, "train_regime": "prefix"})
    trainer = build_trainer(config, get_model("SASRec")(config, train_data._dataset))
    assert isinstance(trainer.eval_collector, TopKCollector)
    ours = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    trainer.eval_collector = Collector(config)
    assert trainer.evaluate(valid_data, load_best_model=False, show_progress=False) == ours
