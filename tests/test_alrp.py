"""ALRP: hand-checked values, 1 - AP in the hard-step limit, the error-driven update against a plain
per-positive loop, its balance and signs, invariances, the recipe's CE terms, training, arguments."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import objective_args
from sklearn.metrics import average_precision_score

import criterion
from losses.alrp import ALRPLoss, alrp_loss
from toolkit.cli import ArgumentParser, UserError

# ---------------------------------------------------------------- helpers




def loss_and_grad(logits, targets, delta=1.0, loss_fn=None):
    logits = logits.clone().float().requires_grad_(True)
    loss = (loss_fn or (lambda z, y: alrp_loss(z, y, delta)))(logits, targets)
    loss.backward()
    return loss.detach(), logits.grad


def random_batch(seed, batch=12, classes=5, scale=1.5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=generator) * scale
    return logits, torch.randint(0, classes, (batch,), generator=generator)


def step(x, delta):
    return min(max(x / (2 * delta) + 0.5, 0.0), 1.0)


def reference_loop(logits, targets, delta):
    """aLRP's classification part as the reference code (kemaloksuz/aLRPLoss, alrp_loss.py) writes
    it, without regression losses: one positive at a time, in plain Python floats."""
    rows, classes = len(logits), len(logits[0])
    entries = [(i, c) for i in range(rows) for c in range(classes)]
    positives = [(i, targets[i]) for i in range(rows)]
    grad = {entry: 0.0 for entry in entries}
    errors = []
    for (i, y) in positives:
        s_i = logits[i][y]
        rank_pos = 1.0 + sum(step(logits[k][c] - s_i, delta) for (k, c) in positives if (k, c) != (i, y))
        relations = {(k, c): step(logits[k][c] - s_i, delta) for (k, c) in entries if c != targets[k]}
        false_positives = sum(relations.values())
        rank = rank_pos + false_positives
        errors.append(false_positives / rank)
        if false_positives > 0:
            grad[(i, y)] = -errors[-1] / rows
            for negative, relation in relations.items():
                grad[negative] += errors[-1] * relation / (false_positives * rows)
    loss = sum(errors) / rows
    return loss, [[grad[(i, c)] for c in range(classes)] for i in range(rows)]


# ---------------------------------------------------------------- values

# Two samples, three classes, delta 1, so H(x) = clamp(x / 2 + 0.5, 0, 1) is linear on [-1, 1].
HAND_LOGITS = [[1.0, 0.0, 1.5], [0.5, 1.5, -1.0]]
HAND_TARGETS = [0, 1]
# Positives A = (0, 0) score 1, B = (1, 1) score 1.5; negatives 0, 1.5 (row 0), 0.5, -1 (row 1).
# A: other positive B: H(0.5) = 0.75; negatives H(-1) = 0, H(0.5) = 0.75, H(-0.5) = 0.25, H(-2) = 0
#    N_FP = 1, rank = 1 + 0.75 + 1 = 2.75, l = 1 / 2.75 = 4/11
# B: other positive A: H(-0.5) = 0.25; negatives H(-1.5) = 0, H(0) = 0.5, H(-1) = 0, H(-2.5) = 0
#    N_FP = 0.5, rank = 1 + 0.25 + 0.5 = 1.75, l = 0.5 / 1.75 = 2/7
# loss = (4/11 + 2/7) / 2 = 25/77
# update, B = 2: A -l/2 = -2/11, B -1/7; negative (0, 2): H_A / (rank_A 2) + H_B / (rank_B 2)
#    = 0.75 / 5.5 + 0.5 / 3.5 = 3/22 + 1/7 = 43/154; negative (1, 0): 0.25 / 5.5 = 1/22;
#    negatives (0, 1) = 0 (at A's lower band edge, H(-1) = 0) and (1, 2) = -1 (below both bands): 0
HAND_LOSS = 25 / 77
HAND_GRAD = [[-2 / 11, 0.0, 43 / 154], [1 / 22, -1 / 7, 0.0]]


def test_hand_checked_values():
    loss, grad = loss_and_grad(torch.tensor(HAND_LOGITS), torch.tensor(HAND_TARGETS))
    assert loss.item() == pytest.approx(HAND_LOSS, rel=1e-6)
    assert torch.allclose(grad, torch.tensor(HAND_GRAD), atol=1e-7)
    assert grad[0, 1] == 0 and grad[1, 2] == 0


def test_hand_checked_values_through_the_table():
    module = criterion.build_criterion("ALRP", [3, 2, 1], objective_args(alrp_delta=1.0, alrp_ranking="pooled",
                                                                        alrp_tau=0.0))
    module.set_epoch(0, 30)
    loss, grad = loss_and_grad(torch.tensor(HAND_LOGITS), torch.tensor(HAND_TARGETS), loss_fn=module)
    assert loss.item() == pytest.approx(HAND_LOSS, rel=1e-6)
    assert torch.allclose(grad, torch.tensor(HAND_GRAD), atol=1e-7)


@pytest.mark.parametrize("seed, batch, classes", [(0, 16, 5), (1, 7, 3), (2, 32, 10), (3, 1, 4)])
def test_hard_step_is_one_minus_average_precision(seed, batch, classes):
    logits, targets = random_batch(seed, batch, classes)
    pooled = logits.ravel()
    assert len(torch.unique(pooled)) == len(pooled)  # no ties
    onehot = F.one_hot(targets, classes).ravel()
    expected = 1.0 - average_precision_score(onehot.numpy(), pooled.numpy())
    assert alrp_loss(logits, targets, 1e-6).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("delta", [1.0, 0.3, 1e-4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_is_balanced_and_signed(seed, delta):
    logits, targets = random_batch(seed)
    loss, grad = loss_and_grad(logits, targets, delta)
    positive = F.one_hot(targets, logits.shape[1]).bool()
    assert loss > 0
    assert grad.sum().abs().item() < 1e-6
    assert (grad[positive] <= 0).all() and (grad[~positive] >= 0).all()
    # the positives' total is minus the loss: each positive's share is -l(i) / B
    assert grad[positive].sum().item() == pytest.approx(-loss.item(), rel=1e-5)


def test_negatives_below_every_band_get_exactly_zero():
    logits, targets = random_batch(4, batch=10, classes=6)
    logits[torch.arange(10), targets] += 3.0  # positives well above
    low = torch.zeros_like(logits, dtype=torch.bool)
    low[::2, :] = True
    low[torch.arange(10), targets] = False
    logits[low] = -20.0  # far below every s_i - delta
    loss, grad = loss_and_grad(logits, targets)
    assert (grad[low] == 0).all()
    assert (grad[~low] != 0).any()  # the others are not all trivially zero


def test_positive_without_false_positives_gets_zero():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
    loss, grad = loss_and_grad(logits, torch.tensor([0, 1]))
    assert grad[0, 0] == 0  # no negative in its band: N_FP = 0
    assert grad[1, 1] < 0 and loss > 0


@pytest.mark.parametrize("shift", [3.0, -40.0, 1024.0])
def test_adding_a_constant_to_every_logit_changes_nothing(shift):
    generator = torch.Generator().manual_seed(5)
    # dyadic logits: differences stay exact after the shift, so the comparison can be exact (ties too)
    logits = torch.randint(-48, 48, (9, 4), generator=generator).float() / 16
    targets = torch.randint(0, 4, (9,), generator=generator)
    loss, grad = loss_and_grad(logits, targets)
    shifted_loss, shifted_grad = loss_and_grad(logits + shift, targets)
    assert shifted_loss.item() == loss.item() and loss > 0
    assert torch.equal(shifted_grad, grad)


@pytest.mark.parametrize("delta", [1.0, 0.25])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_update_equals_a_plain_per_positive_loop(seed, delta):
    logits, targets = random_batch(seed, batch=8, classes=4)
    if seed == 3:  # ties, and one positive with no negative in its band
        logits = (logits * 2).round() / 2
        logits[0, targets[0]] = 10.0
    loss, grad = loss_and_grad(logits, targets, delta)
    expected_loss, expected_grad = reference_loop(logits.tolist(), targets.tolist(), delta)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert torch.allclose(grad, torch.tensor(expected_grad), atol=1e-6)


def test_backward_scales_with_the_incoming_gradient():
    logits, targets = random_batch(6)
    _, grad = loss_and_grad(logits, targets)
    _, tripled = loss_and_grad(logits, targets, loss_fn=lambda z, y: 3 * alrp_loss(z, y, 1.0))
    assert torch.allclose(tripled, 3 * grad)


def test_low_precision_logits_give_the_float32_value_and_gradient():
    logits, targets = random_batch(7)
    low = logits.bfloat16()
    full_loss, full_grad = loss_and_grad(low.float(), targets)
    module = ALRPLoss(delta=1.0, ranking="pooled")
    low = low.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(low, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() == full_loss.item()
    assert low.grad.dtype == torch.bfloat16
    assert torch.allclose(low.grad.float(), full_grad, atol=1e-3)


# ---------------------------------------------------------------- the per-image ranking (the default)

def per_image(logits, targets, delta=1.0):
    return loss_and_grad(logits, targets, loss_fn=lambda z, y: alrp_loss(z, y, delta, "per-image"))


def test_per_image_hand_checked_values():
    # HAND_LOGITS, delta 1. Row 0 (y 0, s 1): H(0 - 1) = 0, H(1.5 - 1) = 0.75: N_FP 0.75, rank 1.75, l 3/7.
    # Row 1 (y 1, s 1.5): H(-1) = 0, H(-2.5) = 0: l 0. Two classes of one image each: w = 1/2, 1/2.
    # loss 3/14; update: (0, 0) -3/14, (0, 2) w H / rank = 0.5 * 0.75 / 1.75 = 3/14, row 1 all 0
    loss, grad = per_image(torch.tensor(HAND_LOGITS), torch.tensor(HAND_TARGETS))
    assert loss.item() == pytest.approx(3 / 14, rel=1e-6)
    assert torch.allclose(grad, torch.tensor([[-3 / 14, 0.0, 3 / 14], [0.0, 0.0, 0.0]]), atol=1e-7)


def test_per_image_errors_are_averaged_per_class_by_hand():
    # rows 0 and 2 are class 0, row 1 class 1 (delta 1): l = 1/2 (two ties, N_FP 1, rank 2), 1/2, 0;
    # w = 1 / (2 classes * 2 images) = 1/4 for class 0, 1/2 for class 1: loss 1/8 + 1/4 + 0 = 3/8.
    # Row 0: positive -1/8, negatives 1/4 * 1/2 / 2 = 1/16; row 1: -1/4 and 1/2 * 1/2 / 2 = 1/8; row 2: 0
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    loss, grad = per_image(logits, torch.tensor([0, 1, 0]))
    assert loss.item() == pytest.approx(3 / 8, rel=1e-6)
    expected = torch.tensor([[-1 / 8, 1 / 16, 1 / 16], [1 / 8, -1 / 4, 1 / 8], [0.0, 0.0, 0.0]])
    assert torch.allclose(grad, expected, atol=1e-7)


@pytest.mark.parametrize("seed, batch, classes", [(0, 16, 5), (1, 7, 3), (2, 32, 10)])
def test_per_image_hard_step_is_one_minus_the_class_averaged_reciprocal_rank(seed, batch, classes):
    logits, targets = random_batch(seed, batch, classes)
    true = logits[torch.arange(batch), targets]
    reciprocal_rank = 1.0 / (1 + (logits > true[:, None]).sum(dim=1).double())  # AP of one positive
    present = targets.unique()
    expected = 1.0 - sum(reciprocal_rank[targets == c].mean() for c in present) / len(present)
    assert alrp_loss(logits, targets, 1e-6, "per-image").item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_image_update_is_balanced_in_every_row_and_signed(seed):
    logits, targets = random_batch(seed)
    loss, grad = per_image(logits, targets, 0.5)
    positive = F.one_hot(targets, logits.shape[1]).bool()
    assert loss > 0
    assert grad.sum(dim=1).abs().max().item() < 1e-7  # each image's error moves only its own scores
    assert (grad[positive] <= 0).all() and (grad[~positive] >= 0).all()
    assert grad[positive].sum().item() == pytest.approx(-loss.item(), rel=1e-5)


def test_per_image_ranking_ignores_a_constant_added_to_one_image():
    logits, targets = random_batch(12)
    loss, grad = per_image(logits, targets)
    shifted = logits.clone()
    shifted[3] += 7.0  # the pooled ranking would move every other image's error
    shifted_loss, shifted_grad = per_image(shifted, targets)
    assert shifted_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(shifted_grad, grad, atol=1e-7)
    pooled, shifted_pooled = alrp_loss(logits, targets, 1.0), alrp_loss(shifted, targets, 1.0)
    assert pooled.item() != pytest.approx(shifted_pooled.item(), rel=1e-3)


def test_per_image_is_the_default_through_the_table():
    module = criterion.build_criterion("ALRP", [3, 2, 1], objective_args())
    assert module.ranking == "per-image" == criterion.DEFAULTS["alrp_ranking"]
    module.set_epoch(0, 30)
    logits, targets = torch.tensor(HAND_LOGITS), torch.tensor(HAND_TARGETS)
    adjusted = logits + 0.5 * torch.log(torch.tensor([3.0, 2.0, 1.0]) / 6)
    assert module(logits, targets).item() == pytest.approx(alrp_loss(adjusted, targets, 2.0, "per-image").item())


# ---------------------------------------------------------------- the recipe's CE terms and state

def test_ce_weight_adds_the_cross_entropy():
    logits, targets = random_batch(8)
    module = ALRPLoss(delta=1.0, ce_weight=0.5, ranking="pooled")
    expected = alrp_loss(logits, targets, 1.0) + 0.5 * F.cross_entropy(logits, targets)
    assert module(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_warmup_epochs_train_the_cross_entropy_alone():
    logits, targets = random_batch(9)
    module = ALRPLoss(delta=1.0, ce_weight=0.0, warmup=2, ranking="pooled")
    ce, ranking = F.cross_entropy(logits, targets).item(), alrp_loss(logits, targets, 1.0).item()
    for epoch, expected in [(0, ce), (1, ce), (2, ranking), (5, ranking)]:
        module.set_epoch(epoch, 10)
        assert module(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_state_dict_round_trip_gives_the_same_next_losses():
    logits, targets = random_batch(10)
    trained = criterion.build_criterion("ALRP", [4, 3, 2, 2, 1], objective_args(alrp_warmup=2, alrp_ce_weight=0.1))
    trained.set_epoch(3, 10)
    first = trained(logits, targets).item()
    restored = criterion.build_criterion("ALRP", [4, 3, 2, 2, 1], objective_args(alrp_warmup=2, alrp_ce_weight=0.1))
    restored.load_state_dict(trained.state_dict())
    restored.set_epoch(3, 10)  # the engine calls set_epoch before every epoch, resumed ones too
    assert restored(logits, targets).item() == trained(logits, targets).item() == first
    assert first != pytest.approx(F.cross_entropy(logits, targets).item())  # past the warm-up


def test_mixed_targets_are_not_supported():
    assert ALRPLoss.mixing_refusal is not None and not ALRPLoss().supports_mixed_targets
    assert criterion.build_criterion("ALRP", [2, 2], objective_args()).supports_mixed_targets is False


# ---------------------------------------------------------------- training

def test_few_steps_on_separable_data_lower_the_loss():
    generator = torch.Generator().manual_seed(11)
    centres = torch.randn(4, 8, generator=generator) * 3
    targets = torch.randint(0, 4, (64,), generator=generator)
    features = centres[targets] + torch.randn(64, 8, generator=generator) * 0.5
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    module = ALRPLoss()
    losses = []
    for _ in range(60):
        loss = module(model(features), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    assert (model(features).argmax(1) == targets).float().mean() > 0.95


# ---------------------------------------------------------------- the table and its arguments

def test_table_builds_alrp_with_its_arguments():
    module = criterion.build_criterion("ALRP", [5, 3, 1], objective_args(alrp_delta=0.5, alrp_ce_weight=0.2, alrp_warmup=3))
    assert isinstance(module, ALRPLoss)
    assert (module.delta, module.ce_weight, module.warmup) == (0.5, 0.2, 3)
    assert criterion.OBJECTIVES["ALRP"].loss is ALRPLoss
    assert "--alrp-delta" in criterion.OBJECTIVES["ALRP"].summary


def test_the_default_arguments_are_the_declared_defaults():
    module = criterion.build_criterion("ALRP", [5, 2, 1], objective_args())
    assert (module.delta, module.ce_weight, module.warmup, module.ranking) == (
        criterion.DEFAULTS["alrp_delta"], criterion.DEFAULTS["alrp_ce_weight"], criterion.DEFAULTS["alrp_warmup"],
        criterion.DEFAULTS["alrp_ranking"])
    assert criterion.DEFAULTS["alrp_tau"] == 0.5
    # without the prior an empty class is fine; with it, log 0 is refused
    criterion.build_criterion("ALRP", [5, 0, 1], objective_args(alrp_tau=0.0))
    with pytest.raises(UserError, match="--alrp-tau above 0 uses per-class training counts"):
        criterion.build_criterion("ALRP", [5, 0, 1], objective_args())


def test_tau_ranks_the_logits_plus_tau_log_prior_by_hand():
    # counts 3, 1 (pi = 3/4, 1/4), tau 1, delta 1, one image of class 1 with logits (0, 0.5):
    # adjusted (log 3/4, 0.5 + log 1/4) = (-0.2877, -0.8863): N_FP = H(0.5986) = 0.7993, rank 1.7993,
    # l = 0.4442; without the prior H(-0.5) = 0.25, l = 0.2. The update is taken at the adjusted scores.
    logits, targets = torch.tensor([[0.0, 0.5]]), torch.tensor([1])
    module = criterion.build_criterion("ALRP", [3, 1], objective_args(alrp_delta=1.0, alrp_tau=1.0))
    loss, grad = loss_and_grad(logits, targets, loss_fn=module)
    n_fp = (math.log(3 / 4) - (0.5 + math.log(1 / 4))) / 2 + 0.5
    assert loss.item() == pytest.approx(n_fp / (1 + n_fp), rel=1e-5)
    assert torch.allclose(grad, torch.tensor([[n_fp / (1 + n_fp), -n_fp / (1 + n_fp)]]), atol=1e-6)
    raw = criterion.build_criterion("ALRP", [3, 1], objective_args(alrp_delta=1.0, alrp_tau=0.0))
    assert raw(logits, targets).item() == pytest.approx(0.2, rel=1e-6)
    # tau multiplies the prior: tau 2 at counts (3, 1) is tau 1 at counts (9, 1)
    double = criterion.build_criterion("ALRP", [3, 1], objective_args(alrp_tau=2.0))
    squared = criterion.build_criterion("ALRP", [9, 1], objective_args(alrp_tau=1.0))
    assert torch.allclose(double.adjustment - double.adjustment[0], squared.adjustment - squared.adjustment[0])


def test_the_prior_lets_a_head_image_lose_to_a_rare_class_by_tau_log_ratio_minus_delta_at_no_error():
    # counts 126, 1 (digits-lt100's extremes), delta 2. A digit-0 image on which class 1 outscores
    # it by 2.5: the ranked difference is 2.5 + tau log(1 / 126), H = 0 below -delta, so the image
    # has no error while misclassified as long as 2.5 < tau log 126 - delta (2.84 at tau 1, 0.42
    # at tau 0.5): this is what cost digit 0 its recall at tau 1 (docs/objectives.md).
    logits, targets = torch.tensor([[0.0, 2.5]]), torch.tensor([0])
    at_one = criterion.build_criterion("ALRP", [126, 1], objective_args(alrp_tau=1.0, alrp_delta=2.0))
    loss, grad = loss_and_grad(logits, targets, loss_fn=at_one)
    assert loss.item() == 0.0 and not grad.any()
    at_half = criterion.build_criterion("ALRP", [126, 1], objective_args(alrp_tau=0.5, alrp_delta=2.0))
    n_fp = (2.5 + 0.5 * math.log(1 / 126)) / 4 + 0.5
    loss, grad = loss_and_grad(logits, targets, loss_fn=at_half)
    assert loss.item() == pytest.approx(n_fp / (1 + n_fp), rel=1e-5)
    assert torch.allclose(grad, torch.tensor([[-n_fp / (1 + n_fp), n_fp / (1 + n_fp)]]), atol=1e-6)


def test_alrp_needs_two_classes_and_refuses_drw():
    with pytest.raises(UserError, match="needs at least 2 classes"):
        criterion.build_criterion("ALRP", [5], objective_args())
    with pytest.raises(UserError, match="--drw works only with"):
        criterion.build_criterion("ALRP", [5, 3], objective_args(drw=2))


def parse(argv):
    parser = ArgumentParser(prog="1_train.py")
    criterion.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, attribute, expected", [
    (["--alrp-delta", "0.25"], "alrp_delta", 0.25), (["--alrp-ce-weight", "0"], "alrp_ce_weight", 0.0),
    (["--alrp-ce-weight", "0.5"], "alrp_ce_weight", 0.5), (["--alrp-warmup", "0"], "alrp_warmup", 0),
    (["--alrp-warmup", "5"], "alrp_warmup", 5), (["--alrp-ranking", "pooled"], "alrp_ranking", "pooled"),
    (["--alrp-tau", "0"], "alrp_tau", 0.0), (["--alrp-tau", "0.5"], "alrp_tau", 0.5),
])
def test_arguments_accepted(argv, attribute, expected):
    assert getattr(parse(argv), attribute) == expected


@pytest.mark.parametrize("argv", [
    ["--alrp-delta", "0"], ["--alrp-delta", "-1"], ["--alrp-delta", "nan"], ["--alrp-delta", "inf"],
    ["--alrp-ce-weight", "-0.1"], ["--alrp-ce-weight", "nan"], ["--alrp-warmup", "-1"], ["--alrp-warmup", "1.5"],
    ["--alrp-ranking", "per-class"], ["--alrp-tau", "-1"], ["--alrp-tau", "nan"],
])
def test_nonsense_arguments_rejected(argv):
    with pytest.raises(UserError, match=f"argument {argv[0]}"):
        parse(argv)
