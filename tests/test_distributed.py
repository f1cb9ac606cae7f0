"""Class-aware sampling (one process and two ranks together) and torchrun training on CPU."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO, TRAIN_ARGS

from toolkit import data, engine, metrics, runs, sampling
from toolkit.predictor import Predictor

COUNTS = [60, 25, 10, 5]
LABELS = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
EPOCHS = 300
TOLERANCE = 0.015  # absolute, on class frequencies from 30,000 draws (standard error <= 0.003)


def expected_frequencies(sampler, epochs=EPOCHS):
    """The formula, averaged over the epochs (progressive changes every epoch)."""
    counts = torch.tensor(COUNTS)
    return torch.stack([sampling.class_probabilities(counts, sampler, e, epochs) for e in range(epochs)]).mean(0)


def observed_frequencies(sampler, world=1, drs=None):
    drawn = torch.zeros(len(COUNTS))
    for epoch in range(EPOCHS):
        shares = [sampling.epoch_order(LABELS, 7, epoch, sampler, EPOCHS, drs, rank, world) for rank in range(world)]
        for share in shares:
            drawn += torch.bincount(LABELS[share], minlength=len(COUNTS))
    return drawn / drawn.sum()


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_class_frequencies_match_the_formula(sampler, world):
    observed = observed_frequencies(sampler, world).double()
    assert torch.allclose(observed, expected_frequencies(sampler), atol=TOLERANCE), observed


def test_the_formulas():
    counts = torch.tensor(COUNTS)
    assert sampling.class_probabilities(counts, "instance").tolist() == pytest.approx([0.6, 0.25, 0.1, 0.05])
    assert sampling.class_probabilities(counts, "class").tolist() == pytest.approx([0.25] * 4)
    roots = [60 ** 0.5, 5, 10 ** 0.5, 5 ** 0.5]
    assert sampling.class_probabilities(counts, "sqrt").tolist() == pytest.approx([r / sum(roots) for r in roots])
    assert sampling.class_probabilities(counts, "progressive", 0, 11).tolist() == pytest.approx([0.6, 0.25, 0.1, 0.05])
    assert sampling.class_probabilities(counts, "progressive", 5, 11).tolist() == pytest.approx(
        [(0.6 + 0.25) / 2, 0.25, (0.1 + 0.25) / 2, (0.05 + 0.25) / 2])
    assert sampling.class_probabilities(counts, "progressive", 10, 11).tolist() == pytest.approx([0.25] * 4)


def test_instance_sampling_draws_every_image_once():
    order = sampling.epoch_order(LABELS, 7, 3)
    assert sorted(order.tolist()) == list(range(len(LABELS)))
    assert not torch.equal(order, sampling.epoch_order(LABELS, 7, 4))  # seeded by epoch
    assert torch.equal(order, sampling.epoch_order(LABELS, 7, 3))


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_two_ranks_never_share_an_image_and_run_the_same_number_of_steps(sampler):
    for epoch in range(20):
        first, second = (sampling.epoch_order(LABELS, 7, epoch, sampler, 20, None, rank, 2) for rank in (0, 1))
        assert not set(first.tolist()) & set(second.tolist())
        assert len(first) == len(second) >= len(LABELS) // 2 - 3  # at most a few draws dropped


def test_deferred_resampling_switches_from_instance_to_class():
    before = torch.bincount(LABELS[sampling.epoch_order(LABELS, 7, 8, drs=10)], minlength=4)
    assert before.tolist() == COUNTS  # the 9th epoch: every image once
    after = torch.stack([torch.bincount(LABELS[sampling.epoch_order(LABELS, 7, e, drs=10)], minlength=4)
                         for e in range(9, 209)]).sum(0)
    assert torch.allclose(after / after.sum(), torch.full((4,), 0.25), atol=TOLERANCE)


def torchrun(*argv):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "1_train.py"), *map(str, argv)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_torchrun_two_processes_on_cpu_and_resume(tiny):
    out = torchrun(*TRAIN_ARGS, "--epochs", "2", "--precision", "fp32", "--device", "cpu", *tiny.data_args)
    assert out.count("run directory:") == 2  # one process speaks: at the start and at the end
    run_dirs = list(runs.list_runs(tiny.logs))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    out = torchrun("--resume", run_dir, "--epochs", "3", "--no-progress")
    assert out.count(f"resuming {run_dir} after epoch 2") == 1
    assert list(runs.list_runs(tiny.logs)) == [run_dir]
    assert len([p for p in run_dir.glob("*.pth") if p.name != "last.pth"]) == 1
    for log in ("train.csv", "valid.csv"):
        assert list(pd.read_csv(run_dir / log)["epoch"]) == [1, 2, 3]
    assert runs.read_args(run_dir)["processes"] == 2

    # the best epoch's validation accuracy equals a single-process evaluation of its checkpoint
    valid = pd.read_csv(run_dir / "valid.csv")
    single = Predictor.of_run(run_dir, device="cpu", precision="fp32")
    record = single.record
    split = data.scan_split(tiny.data / "tiny", "valid", record.class_names)
    image_set = data.load_images(split, record.height, record.width, "cpu", progress=False)
    labels, logits = single.predict(image_set, 4, progress=False)
    best_epoch = single.checkpoint.epoch
    assert metrics.epoch_metrics(labels, logits)["acc"] == pytest.approx(valid.loc[best_epoch - 1, "acc"])
    assert len(labels) == len(split.paths)  # every validation image, once


def test_single_process_is_unchanged_by_the_distribution_code():
    assert engine.start_distributed("cpu") == (engine.Distributed(), torch.device("cpu"))
