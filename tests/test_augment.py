"""Augmentation for real-size images: resized crops, RandAugment, mixup and cutmix, on whole batches.

The resized crops follow torchvision's RandomResizedCrop, RandAugment's operations equal
torchvision.transforms.v2's image by image, the same seed gives the same batch, mixing with lambda 1
is no mixing for every objective that takes it (the others are refused), the default run is
today's, and every option trains a normal run directory that records it."""
import argparse
import dataclasses
import importlib
import json
import math

import pandas as pd
import pytest
import torch
from conftest import TRAIN_ARGS
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

import criterion
from losses.base import MixedTargets
from toolkit import augment, data, plan, runs, training
from toolkit.cli import UserError


def images(n=6, height=37, width=29, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), generator=generator, dtype=torch.uint8)


# ---------------------------------------------------------------- resized crops

def test_crop_boxes_stay_inside_the_image_and_are_exact_where_the_arguments_fix_them():
    for height, width in ((37, 37), (20, 90), (90, 20), (3, 2)):
        top, left, h, w = augment.resized_crop_boxes(4000, height, width, torch.Generator().manual_seed(1))
        assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()
    top, left, h, w = augment.resized_crop_boxes(50, 40, 40, torch.Generator(), scale=(0.25, 0.25), ratio=(1, 1))
    assert (h == 20).all() and (w == 20).all() and len(set(top.tolist())) > 5
    top, left, h, w = augment.resized_crop_boxes(5, 40, 40, torch.Generator(), scale=(1, 1), ratio=(1, 1))
    assert (h == 40).all() and (w == 40).all() and (top == 0).all() and (left == 0).all()
    # no candidate fits a 10 x 100 image: torchvision's fallback, the centre crop clipped to the ratio range
    top, left, h, w = augment.resized_crop_boxes(5, 10, 100, torch.Generator(), scale=(1, 1), ratio=(0.5, 2))
    assert (h == 10).all() and (w == 20).all() and (top == 0).all() and (left == 40).all()


def test_crop_scale_and_ratio_follow_torchvision_random_resized_crop():
    """Over many draws, the area fraction and aspect of our boxes are distributed as those of
    torchvision's RandomResizedCrop.get_params (its 10 attempts and its fallback included)."""
    count, height, width = 4000, 60, 45
    top, left, h, w = augment.resized_crop_boxes(count, height, width, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    reference = torch.tensor([v2.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.08, 1.0],
                                                              [3 / 4, 4 / 3]) for _ in range(count)])
    ours = torch.stack([top, left, h, w], 1).double()
    reference = reference.double()
    for found in (ours, reference):
        area = found[:, 2] * found[:, 3] / (height * width)
        aspect = torch.log(found[:, 3] / found[:, 2])
        assert 0.07 < area.min() and area.max() <= 1.0
        assert aspect.abs().max() <= math.log(4 / 3) + 0.1  # rounding to whole pixels
    ours_area, ref_area = (f[:, 2] * f[:, 3] / (height * width) for f in (ours, reference))
    ours_aspect, ref_aspect = (torch.log(f[:, 3] / f[:, 2]) for f in (ours, reference))
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(ours_area.quantile(q) - ref_area.quantile(q)) < 0.03, q
        assert abs(ours_aspect.quantile(q) - ref_aspect.quantile(q)) < 0.03, q
    # the position is uniform over the places the box fits: the mean relative offset is 1/2
    spare = (height - ours[:, 2]) > 0
    assert abs((ours[spare, 0] / (height - ours[spare, 2])).mean() - 0.5) < 0.03


def test_crop_and_resize_is_torchvision_resized_crop_then_flip():
    batch = images(4, 37, 29)
    top, left = torch.tensor([0, 3, 10, 5]), torch.tensor([0, 2, 7, 0])
    h, w = torch.tensor([20, 12, 27, 32]), torch.tensor([16, 25, 9, 29])
    flip = torch.tensor([False, True, False, True])
    out = augment.crop_and_resize(batch, top, left, h, w, 37, 29, flip)
    for i in range(len(batch)):
        expected = TF.resized_crop(batch[i].float(), int(top[i]), int(left[i]), int(h[i]), int(w[i]), [37, 29],
                                   interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
        expected = expected.flip(2) if flip[i] else expected
        difference = (out[i].float() - expected.round()).abs()
        assert difference.max() <= 1 and (difference == 0).float().mean() > 0.99  # rounding to uint8 only


def test_resized_crop_flip_draws_boxes_then_flips():
    batch = images(16, 37, 37)
    out = augment.ResizedCropFlip(32, 32)(batch, torch.Generator().manual_seed(4))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.uint8
    generator = torch.Generator().manual_seed(4)
    top, left, h, w = augment.resized_crop_boxes(16, 37, 37, generator)
    flip = torch.rand(16, generator=generator) < 0.5
    unflipped = augment.crop_and_resize(batch, top, left, h, w, 32, 32)
    assert torch.equal(augment.crop_and_resize(batch, top, left, h, w, 32, 32, flip), out)
    assert 0 < flip.sum() < 16
    assert torch.equal(out[flip], unflipped[flip].flip(3)) and torch.equal(out[~flip], unflipped[~flip])


def test_the_training_cache_of_the_resized_crops_is_8_7_of_the_training_size():
    assert augment.cache_size("resized-crop-flip", 224, 224) == (256, 256)
    assert augment.cache_size("randaugment", 32, 32) == (37, 37)
    assert augment.cache_size("pad-crop-flip", 32, 32) == augment.cache_size("none", 32, 32) == (32, 32)


# ---------------------------------------------------------------- RandAugment

def test_randaugment_magnitudes_are_torchvisions():
    for op, (magnitudes, signed) in v2.RandAugment._AUGMENTATION_SPACE.items():
        assert augment.RANDAUGMENT_OPS[op][1] == signed
        for m in range(augment.MAGNITUDE_BINS):
            expected = magnitudes(augment.MAGNITUDE_BINS, 37, 29)
            assert augment.op_magnitude(op, m, 37, 29) == (0.0 if expected is None else float(expected[m]))
    assert list(augment.RANDAUGMENT_OPS) == list(v2.RandAugment._AUGMENTATION_SPACE)


@pytest.mark.parametrize("magnitude", [0, 9, 30])
def test_randaugment_ops_equal_torchvision_v2_on_single_images(magnitude):
    """torchvision's RandAugment(num_ops=1) on one image against our operation on a batch that
    holds it, with the operation and sign torchvision drew (its draws: an index, then for a signed
    operation a uniform <= 0.5 to negate); every operation and both signs come up."""
    batch = images(3, 37, 29, seed=magnitude)
    reference = v2.RandAugment(num_ops=1, magnitude=magnitude)
    names, seen = list(augment.RANDAUGMENT_OPS), set()
    for seed in range(120):
        image = batch[seed % 3]
        torch.manual_seed(seed)
        expected = reference(image)
        torch.manual_seed(seed)
        op = names[int(torch.randint(len(names), ()))]
        magnitudes, signed = augment.RANDAUGMENT_OPS[op]
        negative = bool(signed and magnitudes is not None and torch.rand(()) <= 0.5)
        value = augment.op_magnitude(op, magnitude, 37, 29, negative)
        ours = augment.apply_op(batch, op, value)[seed % 3]
        assert torch.equal(ours, expected), (op, negative)
        seen.add((op, negative))
    assert {op for op, _ in seen} == set(names) and len(seen) > 20


def test_our_sharpness_kernel_is_torchvisions_adjust_sharpness():
    for seed in range(3):
        batch = images(5, 23, 31, seed=seed)
        for factor in (0.0, 0.1, 0.73, 1.0, 1.27, 1.9):
            assert torch.equal(augment.sharpness(batch, factor), TF.adjust_sharpness(batch, factor)), factor
    tiny = images(2, 2, 5)
    assert torch.equal(augment.sharpness(tiny, 1.5), TF.adjust_sharpness(tiny, 1.5))


def test_randaugment_applies_each_images_own_operations_grouped():
    """The whole batch through RandAugment equals, image by image, the operations it drew."""
    batch = images(24, 37, 29, seed=5)
    out = augment.RandAugment(num_ops=2, magnitude=12)(batch, torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    ops = torch.randint(0, 14, (2, 24), generator=generator)
    negative = torch.rand(2, 24, generator=generator) <= 0.5
    names = list(augment.RANDAUGMENT_OPS)
    for i in range(24):
        image = batch[i:i + 1]
        for slot in range(2):
            op = names[int(ops[slot, i])]
            image = augment.apply_op(image, op, augment.op_magnitude(op, 12, 37, 29, bool(negative[slot, i])))
        assert torch.equal(out[i], image[0]), i
    assert len(set(ops.flatten().tolist())) > 8


# ---------------------------------------------------------------- the same seed, the same batch

ALL = [("pad-crop-flip", None), ("resized-crop-flip", None), ("randaugment", None), ("none", None),
       ("pad-crop-flip", augment.Mixing(0.2, 1.0, 0.8))]


@pytest.mark.parametrize("name, mixing", ALL)
def test_a_fixed_seed_gives_the_same_batch_twice(name, mixing):
    height, width = augment.cache_size(name, 32, 32)
    batch, labels = images(8, height, width, seed=2), torch.arange(8)

    def finished(seed):
        generator = torch.Generator().manual_seed(seed)
        out = augment.batch_augmentation(name, 32, 32)
        x = (out(batch, generator) if out else batch).float()
        return mixing(x, labels, generator) if mixing else (x, labels)

    first, again, other = finished(0), finished(0), finished(1)
    assert torch.equal(first[0], again[0]) and first[0].shape == (8, 3, 32, 32)
    assert (name == "none" and mixing is None) or not torch.equal(first[0], other[0])
    if mixing:
        assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


# ---------------------------------------------------------------- mixup and cutmix

def test_mixup_blends_with_the_reversed_batch_and_cutmix_pastes_a_box():
    x = torch.randn(6, 3, 10, 12).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    out, targets = augment.Mixing(mixup=0.4)(x, labels, torch.Generator().manual_seed(0))
    lam = targets.lam
    assert 0 < lam < 1 and torch.equal(targets.b, labels.flip(0)) and torch.equal(targets.a, labels)
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    assert out.is_contiguous(memory_format=torch.channels_last)
    for seed in range(20):
        out, targets = augment.Mixing(cutmix=1.0)(x, labels, torch.Generator().manual_seed(seed))
        pasted = (out != x).any(dim=1)[0]  # the box, as a mask of the first image
        assert torch.equal(out[:, :, pasted], x.flip(0)[:, :, pasted]) and torch.equal(out[:, :, ~pasted],
                                                                                      x[:, :, ~pasted])
        assert float(targets.lam) == pytest.approx(1 - pasted.float().mean().item())


def test_both_mixes_take_turns_and_mix_prob_leaves_batches_unmixed_bit_for_bit():
    x, labels = torch.randn(4, 3, 8, 8), torch.arange(4)
    mixing, kinds = augment.Mixing(mixup=0.5, cutmix=0.5, prob=0.5), []
    for seed in range(400):
        out, targets = mixing(x, labels, torch.Generator().manual_seed(seed))
        if float(targets.lam) == 1.0:
            kinds.append("none")
            assert torch.equal(out, x)
        else:
            kinds.append("cutmix" if torch.isin(out, torch.cat([x, x.flip(0)])).all() else "mixup")
    share = pd.Series(kinds).value_counts(normalize=True)
    assert abs(share["none"] - 0.5) < 0.08 and abs(share["cutmix"] - 0.25) < 0.07 and abs(share["mixup"] - 0.25) < 0.07
    assert augment.batch_mixing(None, None) is None


def test_training_accuracy_counts_the_larger_shares_label():
    a, b = torch.tensor([1, 2]), torch.tensor([3, 4])
    assert torch.equal(augment.counted_labels(MixedTargets(a, b, torch.tensor(0.7))), a)
    assert torch.equal(augment.counted_labels(MixedTargets(a, b, torch.tensor(0.3))), b)
    assert torch.equal(augment.counted_labels(a), a)


def objective_args(**values):
    return argparse.Namespace(**{**criterion.DEFAULTS, **values})


def test_lambda_1_is_no_mixing_for_every_objective_that_takes_mixed_targets():
    counts = [40, 20, 10, 5]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=generator) * 3
    y, other = torch.randint(0, 4, (16,), generator=generator), torch.randint(0, 4, (16,), generator=generator)
    refused, checked = set(), 0
    for name, row in criterion.OBJECTIVES.items():
        for options in ({}, {"drw": 1}) if row.drw else ({},):
            loss = criterion.build_criterion(name, counts, objective_args(**options))
            loss.set_epoch(0, 10)  # --drw 1: the class weights are on
            if not loss.supports_mixed_targets:
                refused.add(name)
                with pytest.raises(UserError, match=f"--mixup cannot train --objective {name}: .*not a mean"):
                    training.check_mixable(name, loss, augment.Mixing(mixup=0.2))
                continue
            training.check_mixable(name, loss, augment.Mixing(mixup=0.2, cutmix=1.0))
            assert torch.equal(loss(logits, MixedTargets(y, other, torch.tensor(1.0))), loss(logits, y)), name
            assert torch.equal(loss(logits, MixedTargets(other, y, torch.tensor(0.0))), loss(logits, y)), name
            lam = torch.tensor(0.3)
            mixed = loss(logits, MixedTargets(y, other, lam))
            assert torch.allclose(mixed, lam * loss(logits, y) + (1 - lam) * loss(logits, other)), name
            checked += 1
    assert {"CCE", "COT", "GHMC", "SPBL"} <= refused and checked >= 8
    erm = criterion.build_criterion("ERM", counts, objective_args())
    per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none") * 0.3 + \
        torch.nn.functional.cross_entropy(logits, other, reduction="none") * 0.7
    assert torch.allclose(erm(logits, MixedTargets(y, other, torch.tensor(0.3))), per_sample.mean())


def test_drw_weights_each_label_set_by_its_own_classes():
    counts = [40, 20, 10, 5]
    loss = criterion.build_criterion("ERM", counts, objective_args(drw=1))
    loss.set_epoch(0, 10)
    logits, a, b = torch.randn(8, 4), torch.randint(0, 4, (8,)), torch.randint(0, 4, (8,))
    w = loss.class_weight
    weighted = [torch.nn.functional.cross_entropy(logits, t, weight=w) for t in (a, b)]
    torch.testing.assert_close(loss(logits, MixedTargets(a, b, torch.tensor(0.25))),
                               0.25 * weighted[0] + 0.75 * weighted[1])


# ---------------------------------------------------------------- runs

def run_dir_of(logs, folder="ERM"):
    (found,) = list((logs / "ResNet20" / "tiny" / folder).iterdir())
    return found


def test_the_default_is_pad_crop_flip_unchanged(tiny, run):
    """The default run augments with augment.random_crop_flip itself, mixes nothing, caches the
    training split at the training size, and trains the same weights as --augment pad-crop-flip."""
    args = plan.parse_args([*TRAIN_ARGS, *map(str, tiny.data_args)])
    assert (args.augment, args.mixup, args.cutmix) == ("pad-crop-flip", None, None)
    setup = training.build_setup(args, progress=False)
    assert setup.train.augment is augment.random_crop_flip and setup.engine.mix is None
    assert setup.train.image_set.size == (16, 16)
    order, generator = torch.arange(8), torch.Generator().manual_seed(5)
    x, _ = next(setup.train(order, 8, generator))
    raw = setup.train.image_set.images[order]
    expected = data.model_inputs(augment.random_crop_flip(raw, torch.Generator().manual_seed(5)),
                                 setup.train.normalise, setup.train.memory_format)
    assert torch.equal(x, expected)
    default, explicit = tiny.logs / "default", tiny.logs / "explicit"
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args[:4], "--logs-root", default, "--deterministic")[0] == 0
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args[:4], "--logs-root", explicit, "--deterministic",
               "--augment", "pad-crop-flip")[0] == 0
    a, b = (torch.load(run_dir_of(logs) / "last.pth", weights_only=True)["model"] for logs in (default, explicit))
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir_of(default) / "train.csv").drop(columns="seconds"),
                                  pd.read_csv(run_dir_of(explicit) / "train.csv").drop(columns="seconds"))


OPTIONS = [(["--augment", "resized-crop-flip"], "resized-crop-flip"),
           (["--augment", "randaugment", "--randaugment-n", "1", "--randaugment-m", "15"], "randaugment n1 m15"),
           (["--augment", "none", "--mixup", "0.2"], "none + mixup 0.2"),
           (["--cutmix", "1.0", "--mixup", "0.4", "--mix-prob", "0.5", "--objective", "LDAM", "--drw", "2"],
            "pad-crop-flip + mixup 0.4 + cutmix 1 (p 0.5)")]


@pytest.mark.parametrize("options, shown", OPTIONS)
def test_a_two_epoch_run_with_each_option_writes_a_normal_run_directory(tiny, run, options, shown):
    code, out, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, *options)
    assert code == 0, err
    folder = "LDAM-DRW" if "LDAM" in options else "ERM"
    run_dir = run_dir_of(tiny.logs, folder)
    assert {"args.json", "last.pth", "train.csv", "valid.csv", "curves.svg"} <= {p.name for p in run_dir.iterdir()}
    assert runs.best_checkpoint(run_dir) is not None
    train = pd.read_csv(run_dir / "train.csv")
    assert list(train["epoch"]) == [1, 2] and train["loss"].notna().all() and train["acc"].between(0, 100).all()
    recorded = json.loads((run_dir / "args.json").read_text())
    for flag, value in zip(options[::2], options[1::2]):
        assert str(recorded[flag[2:].replace("-", "_")]) in (value, str(float(value)) if "." in value else value)
    assert recorded["height"] == 16  # the record keeps the training size; only the training cache grows
    assert runs.run_summary(run_dir)["augment"] == shown
    code, out, err = run("4_report", tiny.logs)
    assert code == 0 and shown in out and "augment" in out.splitlines()[0], err
    code, _, err = run("1_train", "--resume", run_dir, "--epochs", "3", "--mixup", "0.3", "--no-progress")
    assert code == 2 and "--mixup cannot change" in err


def test_the_enlarged_training_cache_is_resized_back_for_unaugmented_predictions(tiny):
    args = plan.parse_args([*TRAIN_ARGS, *map(str, tiny.data_args), "--augment", "resized-crop-flip"])
    setup = training.build_setup(args, progress=False)
    assert setup.train.image_set.size == (18, 18) and setup.valid.image_set.size == (16, 16)
    x, _ = next(setup.train(torch.arange(4), 4, torch.Generator()))
    plain, _ = next(training.unaugmented(setup.train, 16, 16)(torch.arange(4), 4))
    assert x.shape[-2:] == plain.shape[-2:] == (16, 16)
    assert training.unaugmented(setup.valid, 16, 16).augment is None
    assert dataclasses.replace(setup.valid).augment is None


def test_an_objective_that_cannot_mix_is_refused_before_anything_is_written(tiny, run):
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--objective", "GHMC", "--cutmix", "1")
    assert code == 2 and "--cutmix cannot train --objective GHMC" in err and "gradient norm" in err
    assert not tiny.logs.exists()
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--randaugment-m", "31")
    assert code == 2 and "from 0 to 30" in err
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--randaugment-m", "12")
    assert code == 2 and "--randaugment-m tune --augment randaugment" in err
    code, _, err = run("1_train", *TRAIN_ARGS, *tiny.data_args, "--mix-prob", "0.5")
    assert code == 2 and "add --mixup ALPHA and/or --cutmix ALPHA" in err


def test_the_speed_benchmark_runs_both_sides(capsys, tmp_path):
    benchmark = importlib.import_module("benchmarks.augment_speed")
    code = benchmark.main(["--images", "16", "--batchsize", "8", "--size", "32", "--steps", "1", "--warmup-steps", "0",
                           "--model_index", "41", "--loader-workers", "0", "--keep", str(tmp_path / "jpegs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "CPU " in out and "(b) precision" in out and "cache the training JPEGs at 37x37" in out
    assert "augmentation alone" in out and "training step" in out and out.count("x\n") >= 2
