"""criterion.py: hand-checked values, ERM limits, finite gradients, state round trips, arguments."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import objective_args

import criterion
import get_model
from losses.base import Objective, PerSampleLoss, class_balanced_weights, declare
from losses.complement import complement_entropy
from toolkit import plan, space
from toolkit.cli import ArgumentParser, UserError

LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]]
TARGETS = [0, 2, 1]
COUNTS = [10, 5, 2]



# ---------------------------------------------------------------- plain-Python references

def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def cross_entropy(row, target):
    return -math.log(softmax(row)[target])


def mean(values):
    return sum(values) / len(values)


def complement_term(rows, targets):
    """(1/(N*K)) sum_i sum_{j != y} P_ij log P_ij, P_ij = p_ij / (1 - p_iy), by hand."""
    total = 0.0
    for row, y in zip(rows, targets):
        p = softmax(row)
        for j, p_j in enumerate(p):
            if j != y:
                share = p_j / (1 - p[y])
                total += share * math.log(share)
    return total / (len(rows) * len(rows[0]))


def cb_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [w * len(counts) / sum(raw) for w in raw]


# ---------------------------------------------------------------- helpers



def build(name, counts=COUNTS, **overrides):
    return criterion.build_criterion(name, counts, objective_args(**overrides))


def tensors(rows=LOGITS, targets=TARGETS):
    return torch.tensor(rows, dtype=torch.float32), torch.tensor(targets)


def value(module, rows=LOGITS, targets=TARGETS):
    return module(*tensors(rows, targets)).item()


# every objective of the table, plus the variants with their own code paths
VARIANTS = {**{name: {} for name in criterion.objective_names()},
            "ERM-DRW": {"drw": 2}, "FL-alpha": {"flalpha": 0.25}, "FL-cb-DRW": {"flalpha": "cb", "drw": 2},
            "LDAM-DRW": {"drw": 2}, "CB-DRW": {"drw": 2}, "LA-DRW": {"drw": 2}}


def build_variant(variant, counts=COUNTS):
    return build(variant.split("-")[0], counts, **VARIANTS[variant])


def run_epoch(module, batches, epoch, epochs=10):
    module.set_epoch(epoch, epochs)
    for logits, targets in batches:
        module(logits, targets)
    module.end_epoch()


# ---------------------------------------------------------------- table and API

def test_table_order_and_names():
    names = [loss.declaration.name for loss in criterion.TABLE]
    assert list(criterion.OBJECTIVES) == criterion.objective_names() == names and len(set(names)) == len(names)
    seed_rows = ["ERM", "CCE", "COT", "FL", "SPBL", "GHMC", "CB", "LDAM", "LA", "LAS", "ALRP"]
    assert [name for name in names if name in seed_rows] == seed_rows  # ERM first, the rows keep their order
    assert all(row.summary and issubclass(row.loss, torch.nn.Module) for row in criterion.OBJECTIVES.values())


def test_every_objective_offers_the_engine_the_same_hooks():
    for name in criterion.objective_names():
        module = build(name)
        assert isinstance(module, Objective)
        assert len(module.step_losses()) == (2 if name == "COT" else 1)
        assert module.step_losses()[0] is module
        model = get_model.build_model(41, 3)
        adapted = module.adapt_model(model)
        assert get_model.cosine_scale(adapted) == (30.0 if name == "LDAM" else None)
        assert callable(module.set_epoch) and callable(module.end_epoch)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown --objective 'XYZ'; choose one of: ERM, CCE, COT, FL"):
        build("XYZ")


@pytest.mark.parametrize("name", [n for n, row in criterion.OBJECTIVES.items() if not row.drw])
def test_drw_only_with_the_per_sample_objectives(name):
    usable = ", ".join(n for n, row in criterion.OBJECTIVES.items() if row.drw)
    with pytest.raises(UserError, match=f"--drw works only with --objective {usable}, not {name}"):
        build(name, drw=3)


@pytest.mark.parametrize("name", [n for n, row in criterion.OBJECTIVES.items() if row.drw])
def test_every_objective_that_takes_drw_switches_it_on(name):
    """--drw is never silently ignored: the built loss re-weights from that epoch on."""
    module = build(name, drw=3)
    assert module.drw_start == 3 and module.drw_weights.shape == (len(COUNTS),)


def test_drw_applies_exactly_to_the_per_sample_losses():
    for row in criterion.OBJECTIVES.values():
        assert row.drw == issubclass(row.loss, PerSampleLoss) == (row.loss.mixing_refusal is None), row.name


def test_cb_with_drw_multiplies_both_weights_and_divides_by_the_drw_weights():
    module = build("CB", cb_beta=0.9, drw=2)
    w = cb_weights(COUNTS, 0.9)  # the same beta for CB's own weights and DRW's
    ce = [cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)]
    module.set_epoch(0, 10)  # before DRW: CB itself, sum w CE / N
    assert value(module) == pytest.approx(sum(w[y] * c for y, c in zip(TARGETS, ce)) / 3, rel=1e-6)
    module.set_epoch(1, 10)
    expected = sum(w[y] * w[y] * c for y, c in zip(TARGETS, ce)) / sum(w[y] for y in TARGETS)
    assert value(module) == pytest.approx(expected, rel=1e-6)


def test_mixed_la_with_drw_is_the_mixup_criterion_of_two_weighted_balanced_softmax_losses():
    """mixup + DRW + Balanced Softmax by hand: lam * sum w_a l_a / sum w_a + (1 - lam) * (same for b),
    l = CE(z + log prior)."""
    from losses.base import MixedTargets
    module = build("LA", cb_beta=0.99, drw=1)
    module.set_epoch(0, 10)
    w, prior = cb_weights(COUNTS, 0.99), [n / sum(COUNTS) for n in COUNTS]
    shifted = [[z + math.log(p) for z, p in zip(row, prior)] for row in LOGITS]
    a, b, lam = [0, 2, 1], [1, 0, 0], 0.3

    def weighted(targets):
        return sum(w[y] * cross_entropy(r, y) for r, y in zip(shifted, targets)) / sum(w[y] for y in targets)
    mixed = MixedTargets(torch.tensor(a), torch.tensor(b), torch.tensor(lam))
    got = module(torch.tensor(LOGITS), mixed).item()
    assert got == pytest.approx(lam * weighted(a) + (1 - lam) * weighted(b), rel=1e-6)


@pytest.mark.parametrize("name, overrides", [
    ("SPBL", {}), ("CB", {}), ("LDAM", {}), ("LA", {}), ("FL", {"flalpha": "cb"}), ("ERM", {"drw": 1}),
])
def test_class_without_images_is_a_user_error_where_counts_matter(name, overrides):
    with pytest.raises(UserError, match=r"class index\(es\) \[1\] have no training images"):
        build(name, [4, 0, 3], **overrides)


@pytest.mark.parametrize("name", ["ERM", "CCE", "COT", "FL", "GHMC"])
def test_class_without_images_is_fine_where_counts_do_not_matter(name):
    assert math.isfinite(value(build(name, [4, 0, 3])))


def test_the_training_plan_at_its_defaults_builds_the_declared_defaults():
    args = plan.parse_args(["--model_index", "42", "--dataset", "any"])
    assert {name: getattr(args, name) for name in criterion.DEFAULTS} == criterion.DEFAULTS
    module = criterion.build_criterion("LDAM", COUNTS, args)
    assert module.scale == 30.0
    assert module.margins.max().item() == pytest.approx(0.5)


# ---------------------------------------------------------------- exact values, by hand

def test_erm_value():
    expected = mean([cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert value(build("ERM")) == pytest.approx(expected, rel=1e-6)


def test_cce_value():
    ce = mean([cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)])
    expected = ce + 5 * complement_term(LOGITS, TARGETS)
    assert value(build("CCE")) == pytest.approx(expected, rel=1e-6)


def test_cce_complement_term_by_hand_first_sample():
    # row [2, 0, 0], target 0: the two wrong classes share 1 - p_0 equally, P = 1/2 each
    expected = 2 * (0.5 * math.log(0.5)) / (1 * 3)
    assert complement_entropy(*tensors([LOGITS[0]], [0])).item() == pytest.approx(expected, rel=1e-6)


def test_cot_step_losses():
    module = build("COT")
    logits, targets = tensors()
    ce = mean([cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert module(logits, targets).item() == pytest.approx(ce, rel=1e-6)
    assert module.complement_loss(logits, targets).item() == pytest.approx(complement_term(LOGITS, TARGETS), rel=1e-6)


def test_focal_value():
    expected = mean([0.25 * (1 - softmax(r)[y]) ** 2 * cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert value(build("FL", flalpha=0.25)) == pytest.approx(expected, rel=1e-6)


def test_focal_cb_alpha_value():
    alpha = cb_weights(COUNTS, 0.9)
    expected = mean([alpha[y] * (1 - softmax(r)[y]) ** 3 * cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert value(build("FL", flalpha="cb", flgamma=3.0, cb_beta=0.9)) == pytest.approx(expected, rel=1e-6)


def test_ghmc_first_batch_value():
    # g = 1 - p_y: 0.21 (bin 0), 0.79 (bin 2), 0.89 (bin 2) with 3 bins; fractions [1/3, 0, 2/3], 2 non-empty
    g = [1 - softmax(r)[y] for r, y in zip(LOGITS, TARGETS)]
    assert [int(v * 3) for v in g] == [0, 2, 2]
    beta = [1 / ((1 / 3) * 2), 1 / ((2 / 3) * 2), 1 / ((2 / 3) * 2)]
    expected = sum(b * cross_entropy(r, y) for b, r, y in zip(beta, LOGITS, TARGETS)) / 3
    assert value(build("GHMC", ghm_bins=3)) == pytest.approx(expected, rel=1e-6)


def test_ghmc_moving_average_after_two_batches():
    module = build("GHMC", ghm_bins=3, ghm_momentum=0.75)
    module(*tensors())  # bin counts [1, 0, 2]
    rows, targets = [[1.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [0, 0, 1]
    assert [int((1 - softmax(r)[y]) * 3) for r, y in zip(rows, targets)] == [1, 0, 0]  # counts [2, 1, 0]
    loss = value(module, rows, targets)
    counts = [0.75 * 1 + 0.25 * 2, 0.75 * 0 + 0.25 * 1, 2]  # bin 2 is empty in this batch: it keeps its 2
    assert (module.bin_fraction * 3).tolist() == pytest.approx(counts, rel=1e-6)
    beta = [3 / (counts[1] * 2), 3 / (counts[0] * 2), 3 / (counts[0] * 2)]  # N / (count * non-empty bins)
    expected = sum(b * cross_entropy(r, y) for b, r, y in zip(beta, rows, targets)) / 3
    assert loss == pytest.approx(expected, rel=1e-6)


def test_ghmc_empty_bins_keep_their_average():
    # as in the reference (mmdetection's ghm_loss.py): only the bins non-empty in a batch move
    module = build("GHMC", ghm_bins=3, ghm_momentum=0.75)
    module(*tensors())  # first batch: fractions [1/3, 0, 2/3]
    confident = [[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]]  # g ~ 0.005: bin 0 only
    for _ in range(5):
        module(*tensors(confident, [0, 1, 2]))
    bin_0 = 0.75 ** 5 / 3 + (1 - 0.75 ** 5)
    assert module.bin_fraction.tolist() == pytest.approx([bin_0, 0.0, 2 / 3], rel=1e-6)
    # a later sample in bin 2 is weighted by bin 2's kept density, not by a decayed one
    rows, targets = [[6.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0, 0]  # bins 0 and 2
    loss = value(module, rows, targets)
    fractions = [0.75 * bin_0 + 0.25 * 0.5, 0.0, 0.75 * 2 / 3 + 0.25 * 0.5]
    expected = sum(cross_entropy(r, y) / (fractions[b] * 2) for r, y, b in zip(rows, targets, [0, 2])) / 2
    assert loss == pytest.approx(expected, rel=1e-6)


def test_cb_value_and_weights_sum_to_k():
    weights = cb_weights(COUNTS, 0.9)
    expected = sum(weights[y] * cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)) / 3
    module = build("CB", cb_beta=0.9)
    assert value(module) == pytest.approx(expected, rel=1e-6)
    assert module.weights.sum().item() == pytest.approx(3, rel=1e-6)
    assert class_balanced_weights(torch.tensor([5000.0, 50.0, 7.0]), 0.9999).sum().item() == \
        pytest.approx(3, rel=1e-6)


def test_ldam_value():
    # Delta_c = 0.5 * n_c^(-1/4) / 2^(-1/4); the logits are already s * cos, so subtract s * Delta_y
    margins = [0.5 * n ** -0.25 / 2 ** -0.25 for n in COUNTS]
    shifted = [[v - (30 * margins[y] if j == y else 0) for j, v in enumerate(r)] for r, y in zip(LOGITS, TARGETS)]
    expected = mean([cross_entropy(r, y) for r, y in zip(shifted, TARGETS)])
    assert value(build("LDAM")) == pytest.approx(expected, rel=1e-6)


def test_ldam_largest_margin_is_max_m_for_rarest_class():
    module = build("LDAM", [100, 3, 40], ldam_max_m=0.3)
    assert module.margins.tolist() == pytest.approx([0.3 * (3 / 100) ** 0.25, 0.3, 0.3 * (3 / 40) ** 0.25], rel=1e-6)


def test_la_value():
    log_prior = [math.log(n / 17) for n in COUNTS]
    adjusted = [[v + 0.5 * lp for v, lp in zip(r, log_prior)] for r in LOGITS]
    expected = mean([cross_entropy(r, y) for r, y in zip(adjusted, TARGETS)])
    assert value(build("LA", la_tau=0.5)) == pytest.approx(expected, rel=1e-6)


def test_la_tau_one_is_cross_entropy_of_logits_plus_log_prior():
    logits, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    expected = F.cross_entropy(logits + prior.log(), targets)
    assert build("LA")(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_drw_value_switches_on_at_its_one_based_epoch():
    module = build("ERM", cb_beta=0.9, drw=2)
    ce = [cross_entropy(r, y) for r, y in zip(LOGITS, TARGETS)]
    module.set_epoch(0, 10)  # the 1st epoch: plain mean
    assert value(module) == pytest.approx(mean(ce), rel=1e-6)
    module.set_epoch(1, 10)  # the 2nd epoch: weighted, divided by the sum of the weights
    weights = [cb_weights(COUNTS, 0.9)[y] for y in TARGETS]
    expected = sum(w * c for w, c in zip(weights, ce)) / sum(weights)
    assert value(module) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- properties

def test_complement_term_ignores_target_logit():
    logits, targets = tensors()
    moved = logits.clone()
    moved[torch.arange(3), targets] += torch.tensor([5.0, -3.0, 0.7])
    assert complement_entropy(moved, targets).item() == pytest.approx(
        complement_entropy(logits, targets).item(), rel=1e-6)


def test_complement_term_is_most_negative_for_flat_wrong_classes():
    targets = torch.zeros(64, dtype=torch.long)
    flat = complement_entropy(torch.zeros(64, 5), targets).item()
    assert flat == pytest.approx(64 * math.log(1 / 4) / (64 * 5), rel=1e-6)
    uneven = complement_entropy(torch.randn(64, 5) * 2, targets).item()
    assert uneven > flat


def test_cce_with_positive_gamma_prefers_flat_wrong_classes():
    # same p_y, wrong-class mass split 1:1 versus 3:1
    flat, peaked = [[3.0, 0.0, 0.0]], [[3.0, math.log(1.5), math.log(0.5)]]
    assert cross_entropy(flat[0], 0) == pytest.approx(cross_entropy(peaked[0], 0))
    module = build("CCE")
    assert value(module, flat, [0]) < value(module, peaked, [0])


def erm_value(rows, targets):
    return F.cross_entropy(torch.tensor(rows), torch.tensor(targets)).item()


ROWS = [[0.3, -1.2, 2.0], [1.5, 0.1, -0.4], [-2.0, 0.5, 0.9], [0.0, 0.0, 1.0]]
ROW_TARGETS = [2, 0, 1, 0]


@pytest.mark.parametrize("name, overrides", [
    ("CCE", {"ccegamma": 0.0}), ("FL", {"flgamma": 0.0}), ("CB", {"cb_beta": 0.0}), ("LA", {"la_tau": 0.0}),
    ("LDAM", {"ldam_max_m": 0.0}), ("COT", {}),
], ids=["CCE-gamma0", "FL-gamma0", "CB-beta0", "LA-tau0", "LDAM-m0", "COT-CE-step"])
def test_limit_is_erm(name, overrides):
    assert value(build(name, **overrides), ROWS, ROW_TARGETS) == pytest.approx(erm_value(ROWS, ROW_TARGETS), rel=1e-6)


def test_ghmc_with_one_bin_is_erm_over_batches_of_any_size():
    module = build("GHMC", ghm_bins=1)
    for rows, targets in [(ROWS, ROW_TARGETS), (ROWS[:3], ROW_TARGETS[:3]), (ROWS[1:], ROW_TARGETS[1:])]:
        assert value(module, rows, targets) == pytest.approx(erm_value(rows, targets), rel=1e-6)


@pytest.mark.parametrize("variant", ["ERM-DRW", "FL-cb-DRW", "LDAM-DRW", "CB-DRW", "LA-DRW"])
def test_drw_before_its_epoch_is_the_plain_objective(variant):
    name, overrides = variant.split("-")[0], dict(VARIANTS[variant], drw=5)
    with_drw = build(name, **overrides)
    overrides.pop("drw")
    without = build(name, **overrides)
    for epoch in range(4):  # epochs 1-4 counted from 1
        with_drw.set_epoch(epoch, 10)
        assert value(with_drw, ROWS, ROW_TARGETS) == pytest.approx(value(without, ROWS, ROW_TARGETS), rel=1e-6)
    with_drw.set_epoch(4, 10)
    assert value(with_drw, ROWS, ROW_TARGETS) != pytest.approx(value(without, ROWS, ROW_TARGETS), rel=1e-6)


# ---------------------------------------------------------------- robustness

def huge_logits():
    generator = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, (6, 3), generator=generator).float() * 2 - 1
    logits = 1e4 * signs * torch.rand(6, 3, generator=generator).add(0.5)
    return logits, torch.tensor([0, 1, 2, 0, 1, 2])


def single_class_batch():
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(2)), torch.full((5,), 1)


def assert_finite_gradient(module, logits, targets):
    logits = logits.clone().requires_grad_(True)
    loss = sum(step_loss(logits, targets) for step_loss in module.step_losses())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("batch", [huge_logits, single_class_batch], ids=["magnitude-1e4", "single-class"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_are_finite(variant, batch):
    module = build_variant(variant)
    module.set_epoch(3, 10)
    logits, targets = batch()
    assert_finite_gradient(module, logits, targets)
    module.end_epoch()
    module.set_epoch(4, 10)
    assert_finite_gradient(module, logits, targets)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_logits_give_the_float32_value(variant):
    rows = [[2.0, 0.0, 0.5], [0.0, 1.0, -1.0], [1.0, 1.0, 3.0], [0.25, -0.75, 1.5]]
    targets = torch.tensor([0, 2, 1, 1])
    low = torch.tensor(rows, dtype=torch.bfloat16)
    module_low, module_full = build_variant(variant), build_variant(variant)
    for module in (module_low, module_full):
        module.set_epoch(3, 10)
    assert module_low(low, targets).dtype == torch.float32
    assert module_low(low, targets).item() == pytest.approx(module_full(low.float(), targets).item(), rel=1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_round_trip_gives_the_same_next_losses(variant):
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn(8, 3, generator=generator) * 2, torch.randint(0, 3, (8,), generator=generator))
               for _ in range(4)]
    trained = build_variant(variant)
    run_epoch(trained, batches[:2], epoch=2)
    trained.set_epoch(3, 10)
    trained(*batches[2])
    restored = build_variant(variant)
    restored.load_state_dict(trained.state_dict())
    for logits, targets in batches[2:]:
        assert restored(logits, targets).item() == trained(logits, targets).item()


@pytest.mark.parametrize("variant, buffers", [
    ("GHMC", ["bin_fraction", "initialised"]),
    ("SPBL", ["stage", "selected", "class_draws", "class_weight", "log_complexity", "seed"]),
    ("ERM-DRW", ["class_weight"]),
])
def test_state_lives_in_the_state_dict(variant, buffers):
    assert set(buffers) <= set(build_variant(variant).state_dict())


# ---------------------------------------------------------------- arguments

def parse(argv):
    parser = ArgumentParser(prog="1_train.py")
    criterion.add_arguments(parser)
    return parser.parse_args(argv)


def test_argument_defaults_and_group():
    assert vars(parse([])).items() >= {
        "ccegamma": 5.0, "flgamma": 2.0, "flalpha": None, "spbl_paces": (0.5, 0.75, 0.9, 1.0, 1.0),
        "spbl_max_weight": 10.0, "spbl_resample": True, "ghm_bins": 30,
        "ghm_momentum": 0.75, "cb_beta": 0.9999, "ldam_max_m": 0.5, "ldam_s": 30.0, "la_tau": 1.0, "drw": None,
        "las_head": 0.3, "las_tail": 0.0, "las_shape": "concave", "alrp_ranking": "per-image", "alrp_tau": 0.5, "alrp_delta": 2.0, "alrp_ce_weight": 0.0, "alrp_warmup": 0,
    }.items()
    parser = argparse.ArgumentParser()
    criterion.add_arguments(parser)
    assert "objective hyper-parameters" in [group.title for group in parser._action_groups]


@pytest.mark.parametrize("argv, attribute, expected", [
    (["--flalpha", "cb"], "flalpha", "cb"), (["--flalpha", "0.25"], "flalpha", 0.25),
    (["--flalpha", "1"], "flalpha", 1.0), (["--flalpha", "none"], "flalpha", None),
    (["--ccegamma", "-1"], "ccegamma", -1.0), (["--drw", "160"], "drw", 160),
    (["--cb-beta", "0"], "cb_beta", 0.0), (["--ghm-momentum", "0"], "ghm_momentum", 0.0),
    (["--spbl-paces", "0.2", "1"], "spbl_paces", [0.2, 1.0]), (["--spbl-max-weight", "1"], "spbl_max_weight", 1.0),
    (["--no-spbl-resample"], "spbl_resample", False),
])
def test_arguments_accepted(argv, attribute, expected):
    assert getattr(parse(argv), attribute) == expected


@pytest.mark.parametrize("argv", [
    ["--ghm-bins", "0"], ["--ghm-bins", "2.5"], ["--cb-beta", "1"], ["--cb-beta", "-0.1"],
    ["--ghm-momentum", "1.5"], ["--ghm-momentum", "1"], ["--spbl-paces", "1.2"], ["--spbl-paces", "0"],
    ["--spbl-max-weight", "0.5"], ["--spbl-paces"],
    ["--flalpha", "0"], ["--flalpha", "1.5"], ["--flalpha", "abc"], ["--flgamma", "-1"], ["--ldam-s", "0"],
    ["--ldam-max-m", "-0.1"], ["--la-tau", "-1"], ["--drw", "0"], ["--ccegamma", "nan"], ["--ccegamma", "inf"],
])
def test_nonsense_arguments_rejected(argv):
    with pytest.raises(UserError, match=f"argument {argv[0]}"):
        parse(argv)


def test_types_raise_argument_type_error():
    parser = argparse.ArgumentParser()
    criterion.add_arguments(parser)
    types = {action.dest: action.type for action in parser._actions}
    for dest, text in [("cb_beta", "1"), ("ghm_momentum", "1.5"), ("spbl_paces", "2"), ("flalpha", "x")]:
        with pytest.raises(argparse.ArgumentTypeError):
            types[dest](text)


# ---------------------------------------------------------------- the declarations

@pytest.mark.parametrize("name", criterion.objective_names())
def test_every_declared_search_range_holds_its_default(name):
    row = criterion.OBJECTIVES[name]
    assert row.name == name and row.loss.declaration is row
    for hyper_parameter in row.hyper_parameters:
        if hyper_parameter.search is not None:
            assert hyper_parameter.search.holds(hyper_parameter.default), hyper_parameter.flag


def test_ranges_hold_what_they_say():
    assert space.LogUniform(1e-4, 1e-2).holds(1e-3) and not space.LogUniform(1e-4, 1e-2).holds(0.1)
    assert space.Uniform(0.0, 2.5).holds(0.0) and not space.Uniform(0.0, 2.5).holds(2.6)
    assert space.Integer(0, 10).holds(10) and not space.Integer(0, 10).holds(2.5)
    assert not space.Integer(0, 10).holds(True)
    assert space.Choice((None, "cb")).holds(None) and not space.Choice((None, "cb")).holds(0.5)


def test_the_flags_defaults_and_mixing_refusals_are_the_declarations():
    parser = argparse.ArgumentParser()
    criterion.add_arguments(parser)
    declared = {h.dest: h.default for row in criterion.OBJECTIVES.values() for h in row.hyper_parameters}
    parsed = vars(parser.parse_args([]))
    assert parsed == {**declared, "drw": None} == criterion.DEFAULTS
    for name, row in criterion.OBJECTIVES.items():
        refusal = row.loss.mixing_refusal
        assert refusal is None or len(refusal) > 20, name  # a reason a user can read
        assert build(name).supports_mixed_targets == (refusal is None)
    mixable = {n for n, r in criterion.OBJECTIVES.items() if r.loss.mixing_refusal is None}
    assert {"ERM", "FL", "CB", "LDAM", "LA", "LAS"} <= mixable and mixable.isdisjoint({"CCE", "COT", "SPBL", "GHMC",
                                                                                        "ALRP"})


def test_a_new_objective_is_one_class_and_one_row(monkeypatch):
    @declare("TOY", "cross-entropy scaled by k (--toy-k)", hyper_parameters=[
        space.HyperParameter("--toy-k", 3, type=int, search=space.Integer(1, 5), help="TOY: the scale")])
    class Toy(PerSampleLoss):
        @classmethod
        def from_plan(cls, class_counts, args):
            toy = cls()
            toy.k = args.toy_k
            return toy

        def per_sample(self, logits, targets):
            return self.k * F.cross_entropy(logits, targets, reduction="none")

    monkeypatch.setitem(criterion.OBJECTIVES, "TOY", Toy.declaration)
    parser = argparse.ArgumentParser()
    criterion.add_arguments(parser)
    args = parser.parse_args(["--toy-k", "4"])
    loss = criterion.build_criterion("TOY", COUNTS, args)
    assert value(loss) == pytest.approx(4 * value(build("ERM")), rel=1e-6)
    assert loss.supports_mixed_targets
