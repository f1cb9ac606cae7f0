"""SPBL (losses/self_paced.py): stages, selection by rank, bounded weights, curriculum
reconstruction, draws that repeat, state round trips, the ERM limits, and a short training run."""
import argparse
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAIN_ARGS, objective_args

import criterion
from losses.self_paced import (
    class_weights,
    rank_selection,
    reconstructed_counts,
)
from toolkit import runs


def build(counts, **overrides):
    args = objective_args(**{f"spbl_{name}": value for name, value in overrides.items()})
    return criterion.build_criterion("SPBL", counts, args)


def labels_of(counts):
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def logits_with_target_probability(labels, p_target, num_classes):
    """Logits whose softmax gives each image exactly p_target at its label, the rest shared evenly."""
    p_target = torch.as_tensor(p_target, dtype=torch.float64)
    rest = (1 - p_target) / (num_classes - 1)
    probabilities = rest[:, None].repeat(1, num_classes)
    probabilities[torch.arange(len(labels)), labels] = p_target
    return probabilities.log().float()


class Logits:
    """training_logits() that counts its calls."""

    def __init__(self, logits):
        self.logits, self.calls = logits, 0

    def __call__(self):
        self.calls += 1
        return self.logits


# counts 5, 3, 2; true-class probabilities in a deliberately scrambled order within each class
COUNTS = [5, 3, 2]
LABELS = labels_of(COUNTS)
P_TARGET = [0.30, 0.90, 0.50, 0.95, 0.10,   # class 0: ranks 0.95 > 0.90 > 0.50 > 0.30 > 0.10
            0.20, 0.80, 0.60,               # class 1
            0.40, 0.70]                     # class 2
TABLE = logits_with_target_probability(LABELS, P_TARGET, 3)


def by_hand_selection(share):
    """Each class's ceil(share * n_c) images of highest true-class probability, in plain Python."""
    chosen = set()
    for c, n in enumerate(COUNTS):
        members = [i for i, y in enumerate(LABELS.tolist()) if y == c]
        members.sort(key=lambda i: -P_TARGET[i])
        chosen |= set(members[:math.ceil(share * n)])
    return chosen


# ---------------------------------------------------------------- selection by rank

@pytest.mark.parametrize("share, taken", [(0.5, [3, 2, 1]), (0.75, [4, 3, 2]), (0.9, [5, 3, 2]), (0.2, [1, 1, 1])])
def test_rank_selection_takes_ceil_r_n_of_highest_probability(share, taken):
    selected, _ = rank_selection(TABLE, LABELS, share)
    assert torch.bincount(LABELS[selected], minlength=3).tolist() == taken
    assert set(torch.nonzero(selected).flatten().tolist()) == by_hand_selection(share)


def test_rank_selection_mean_ce_is_over_the_selected():
    _, mean_ce = rank_selection(TABLE, LABELS, 0.5)
    expected = [-(math.log(0.95) + math.log(0.90) + math.log(0.50)) / 3,
                -(math.log(0.80) + math.log(0.60)) / 2, -math.log(0.70)]
    assert mean_ce.tolist() == pytest.approx(expected, rel=1e-6)


def test_rank_selection_resolves_probabilities_that_round_to_one():
    # float32 softmax gives p_y = 1 for all three; the log-odds still order them
    labels = torch.zeros(3, dtype=torch.long)
    logits = torch.tensor([[30.0, 0.0], [40.0, 0.0], [35.0, 0.0]])
    assert torch.softmax(logits, 1)[:, 0].tolist() == [1.0, 1.0, 1.0]
    selected, _ = rank_selection(logits, labels, 0.34)  # ceil(1.02) = 2
    assert selected.tolist() == [False, True, True]


def test_every_stage_takes_exactly_its_share_even_when_every_loss_rises():
    counts = [7, 4, 3]
    labels = labels_of(counts)
    module = build(counts, paces=[0.5, 0.5], resample=False)
    generator = torch.Generator().manual_seed(0)
    easy = torch.randn(len(labels), 3, generator=generator)
    easy[torch.arange(len(labels)), labels] += 4
    harder = easy.clone()
    harder[torch.arange(len(labels)), labels] -= 6  # every sample's CE is now higher than before
    assert (F.cross_entropy(harder, labels, reduction="none") > F.cross_entropy(easy, labels, reduction="none")).all()
    wanted = [math.ceil(0.5 * n) for n in counts]
    for epoch, logits in [(3, easy), (6, harder)]:  # 9 epochs, 3 stages: stage 1 from epoch 3, stage 2 from 6
        draws = module.epoch_draws(epoch, 9, labels, Logits(logits))
        assert torch.bincount(labels[draws > 0], minlength=3).tolist() == wanted
        assert set(draws.tolist()) == {0, 1}


# ---------------------------------------------------------------- class weights

def test_weights_by_hand():
    counts = torch.tensor([6, 3, 1])
    log_complexity = torch.tensor([-2.0, 0.5, -1.0], dtype=torch.float64)  # ranks 0, 2, 1
    costs = [1.0, 10.0, 5.5]
    scale = 10 / (6 * 1.0 + 3 * 10.0 + 1 * 5.5)
    assert class_weights(log_complexity, counts, 10.0).tolist() == pytest.approx([c * scale for c in costs])


def test_weights_bounded_ordered_by_complexity_and_normalised():
    counts = [40, 25, 12, 9, 4]
    labels = labels_of(counts)
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(len(labels), 5, generator=generator) * 2
    module = build(counts, paces=[0.8], max_weight=6.0)
    module.epoch_draws(1, 2, labels, Logits(logits))
    weights = module.class_weight.double()
    _, mean_ce = rank_selection(logits, labels, 0.8)
    complexity = [math.exp(m) / n for m, n in zip(mean_ce.tolist(), counts)]  # H_c = exp(mean CE) / n_c
    by_complexity = sorted(range(5), key=lambda c: complexity[c])
    assert weights[by_complexity].tolist() == sorted(weights.tolist())  # the least complex gets the least
    assert weights.max() / weights.min() == pytest.approx(6.0)  # costs span [1, max_weight]
    assert (weights * torch.tensor(counts)).sum().item() == pytest.approx(sum(counts))  # mean 1 per sample
    expected = torch.tensor(complexity, dtype=torch.float64).log()
    assert torch.allclose(module.log_complexity.double(), expected, atol=1e-5)


def test_tied_complexities_share_their_weight():
    weights = class_weights(torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64), torch.tensor([2, 2, 2]), 10.0)
    assert weights[0] == weights[1] < weights[2]


# ---------------------------------------------------------------- curriculum reconstruction

def authors_reconstruction(taken, inverse_h, cap):
    """data_process.py:229-258 of xpwu95/SPBL_Pytorch transliterated (their cap is 100)."""
    num_sort_ = np.array(taken, dtype=float)
    sort_num = np.sort(num_sort_)
    index_sort_hi = np.argsort(-np.array(inverse_h))
    new = np.zeros(len(taken))
    for i, n in enumerate(sort_num):
        new[index_sort_hi[i]] = n
    sub = new - num_sort_
    floor = 3 * np.ceil(np.sum(sort_num) / len(sort_num))
    for i, n in enumerate(sub):
        if n > 0:
            sub[i] = min(n, cap)
        elif n < 0:
            if num_sort_[i] < floor:
                sub[i] = 0
            elif new[i] < floor:
                sub[i] = min(0, floor - num_sort_[i])
    return (num_sort_ + sub).astype(int).tolist()


def test_reconstruction_by_hand():
    # mean ceil(220 / 4) = 55, bound 165: class 0 is under-sampled only down to 165, class 3 gains at most 165
    taken = torch.tensor([200, 10, 5, 5])
    least_to_most_complex = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert reconstructed_counts(taken, least_to_most_complex).tolist() == [165, 10, 10, 170]


def test_reconstruction_matches_the_authors_code():
    generator = torch.Generator().manual_seed(2)
    for _ in range(50):
        k = int(torch.randint(2, 12, (1,), generator=generator))
        taken = torch.randint(1, 400, (k,), generator=generator)
        log_complexity = torch.randn(k, generator=generator, dtype=torch.float64)
        cap = 3 * math.ceil(int(taken.sum()) / k)
        expected = authors_reconstruction(taken.tolist(), (-log_complexity).exp().tolist(), cap)
        assert reconstructed_counts(taken, log_complexity).tolist() == expected


def test_equal_complexities_are_not_resampled():
    taken = torch.tensor([50, 3, 20])
    assert reconstructed_counts(taken, torch.zeros(3, dtype=torch.float64)).tolist() == [50, 3, 20]


def test_draws_spread_the_class_draws_over_the_selected():
    counts = [30, 10, 4]
    labels = labels_of(counts)
    module = build(counts, paces=[0.5])
    logits = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(3))
    draws = module.epoch_draws(1, 2, labels, Logits(logits))
    selected = module.selected
    assert (draws[~selected] == 0).all() and (draws[selected] > 0).all()
    for c in range(3):
        mine = draws[selected & (labels == c)]
        assert int(mine.sum()) == int(module.class_draws[c])
        assert int(mine.max() - mine.min()) <= 1


# ---------------------------------------------------------------- stages, repeats, state

def test_stages_split_the_epochs_evenly():
    module = build([3, 3])
    assert [module.stage_at(e, 30) for e in range(30)] == [s for s in range(6) for _ in range(5)]
    assert [module.stage_at(e, 8) for e in range(8)] == [0, 0, 1, 2, 3, 3, 4, 5]
    assert [module.stage_at(e, 3) for e in range(3)] == [0, 2, 4]  # fewer epochs than stages: some skipped
    assert [module.share_of(s) for s in range(6)] == [1.0, 0.5, 0.75, 0.9, 1.0, 1.0]


def test_first_stage_is_plain_cross_entropy_on_every_image():
    counts = [9, 3]
    labels = labels_of(counts)
    module = build(counts)
    logits = Logits(torch.randn(len(labels), 2))
    for epoch in range(5):  # 30 epochs: stage 0 is epochs 0-4
        assert module.epoch_draws(epoch, 30, labels, logits) is None
    assert logits.calls == 0
    assert module.epoch_log() == {"spbl_share": 1.0, "max_class_weight": 1.0, "min_class_weight": 1.0}
    batch, targets = torch.randn(6, 2), torch.tensor([0, 1, 0, 0, 1, 0])
    assert module(batch, targets).item() == pytest.approx(F.cross_entropy(batch, targets).item(), rel=1e-6)


@pytest.mark.parametrize("counts, resample", [([9, 5, 2], False), ([4, 4, 4], True)])
def test_paces_of_one_and_max_weight_one_are_plain_cross_entropy(counts, resample):
    labels = labels_of(counts)
    module = build(counts, paces=[1.0, 1.0], max_weight=1.0, resample=resample)
    logits = Logits(torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(4)))
    batch, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    for epoch in range(6):
        draws = module.epoch_draws(epoch, 6, labels, logits)
        assert draws is None or torch.equal(draws, torch.ones(len(labels), dtype=torch.long))
        assert module(batch, targets).item() == pytest.approx(F.cross_entropy(batch, targets).item(), rel=1e-6)
    assert logits.calls == 2


def test_epoch_draws_twice_for_one_epoch_are_the_same():
    counts = [60, 8, 7]  # remainders to place at random: the draws depend on more than the selection
    labels = labels_of(counts)
    module = build(counts)
    logits = Logits(torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(5)))
    first = module.epoch_draws(7, 12, labels, logits)  # 12 epochs, 6 stages: epoch 7 is stage 3
    again = module.epoch_draws(7, 12, labels, logits)
    assert torch.equal(first, again)
    assert logits.calls == 1  # the stage's evaluation pass is made once
    assert len(set(first.tolist()) - {0}) > 1  # some images are drawn more often than others


def trained_module(counts, labels, seed=6):
    module = build(counts)
    logits = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(seed))
    logits[torch.arange(len(labels)), labels] += torch.rand(len(labels), generator=torch.Generator().manual_seed(7))
    module.epoch_draws(4, 12, labels, Logits(logits))  # stage 2, share 0.75
    return module


def test_state_round_trip_gives_the_same_draws_and_weights():
    counts = [30, 8, 3]
    labels = labels_of(counts)
    trained = trained_module(counts, labels)
    torch.manual_seed(12345)  # a fresh process with another seed: the state must carry SPBL's own
    restored = build(counts)
    restored.load_state_dict(trained.state_dict())
    untouchable = Logits(None)
    for epoch in (4, 5):  # same stage: no new evaluation pass, and the draws of the uninterrupted run
        assert torch.equal(restored.epoch_draws(epoch, 12, labels, untouchable),
                           trained.epoch_draws(epoch, 12, labels, untouchable))
    assert untouchable.calls == 0
    assert torch.equal(restored.class_weight, trained.class_weight)
    assert restored.epoch_log() == trained.epoch_log()
    batch, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert restored(batch, targets).item() == trained(batch, targets).item()
    fresh = build(counts)
    assert fresh(batch, targets).item() != trained(batch, targets).item()


def test_draws_of_one_stage_vary_between_epochs_but_keep_the_selection():
    counts = [60, 8, 7]  # selected 45, 6, 6: a small class handed 45 draws has a remainder of 3
    labels = labels_of(counts)
    module = trained_module(counts, labels)
    draws = [module.epoch_draws(epoch, 12, labels, Logits(None)) for epoch in (4, 5)]  # both stage 2
    for d in draws:
        assert torch.equal(d > 0, module.selected)  # no class is large enough to be under-sampled
        assert torch.equal(torch.bincount(labels, d, minlength=3).long(), module.class_draws)
    assert not torch.equal(*draws)  # the images that take the remainder are picked again each epoch


def test_weighted_loss_value_and_finite_gradients():
    counts = [30, 8, 3]
    labels = labels_of(counts)
    module = trained_module(counts, labels)
    w = module.class_weight
    logits = (torch.randn(6, 3) * 1e4).requires_grad_(True)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = module(logits, targets)
    ce = F.cross_entropy(logits, targets, reduction="none")
    assert loss.item() == pytest.approx(((w[targets] * ce).sum() / w[targets].sum()).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert module(logits.detach().bfloat16(), targets).dtype == torch.float32


def test_epoch_log_reports_the_stage():
    counts = [30, 8, 3]
    labels = labels_of(counts)
    module = trained_module(counts, labels)
    log = module.epoch_log()
    assert log["spbl_share"] == 0.75
    assert log["max_class_weight"] / log["min_class_weight"] == pytest.approx(10.0, rel=1e-6)


def test_labels_that_do_not_match_the_counts_are_refused():
    module = build([3, 3])
    with pytest.raises(ValueError, match="class counts"):
        module.epoch_draws(5, 6, labels_of([4, 2]), Logits(torch.zeros(6, 2)))


# ---------------------------------------------------------------- through 1_train.py

def test_short_training_run_lowers_the_loss_and_logs_the_stage(tiny, run):
    code, out, err = run("1_train", *TRAIN_ARGS, "--objective", "SPBL", "--epochs", "5", "--lr", "0.02",
                         *tiny.data_args)
    assert code == 0, err
    run_dir = next((tiny.logs / "ResNet20" / "tiny" / "SPBL").iterdir())
    train = pd.read_csv(run_dir / "train.csv")
    assert list(train.columns) == runs.LOG_COLUMNS + ["spbl_share", "max_class_weight", "min_class_weight", "seconds"]
    assert list(train["spbl_share"]) == [1.0, 0.5, 0.75, 0.9, 1.0]  # 5 epochs, 6 stages: floor(6 e / 5)
    assert train["max_class_weight"].iloc[0] == train["min_class_weight"].iloc[0] == 1.0
    assert (train["max_class_weight"].iloc[1:] / train["min_class_weight"].iloc[1:]).max() > 1.5
    # as in test_objectives_training: 23 images make single epochs jumpy; the end is much lower
    assert train["loss"].iloc[-2:].min() < 0.5 * train["loss"].iloc[0], list(train["loss"])
    state = torch.load(run_dir / "last.pth", weights_only=True)["criterion"]
    assert int(state["stage"]) == 4


@pytest.mark.parametrize("flag", ["--spbl-start", "--spbl-full"])
def test_withdrawn_flags_are_a_user_error_naming_the_new_ones(tiny, run, flag):
    code, out, err = run("1_train", *TRAIN_ARGS, "--objective", "SPBL", flag, "0.5", *tiny.data_args)
    assert code == 2
    assert f"error: {flag} belonged to SPBL's withdrawn definition" in err
    assert "--spbl-paces" in err and "--spbl-max-weight" in err
