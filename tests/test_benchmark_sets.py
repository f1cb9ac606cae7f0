"""0_data_split.py --from-torchvision: published formats read through torchvision, written bit-exact.

Each test builds tiny files in the published format itself (CIFAR's pickled batches, MNIST's IDX
files, SVHN's .mat). torchvision checks CIFAR's and SVHN's files against the published MD5 sums,
which no stand-in can match: the fixture `stand_in_checksums` passes that check for the stand-ins
of the test that asks for it, and test_a_user_s_altered_file_fails_the_published_checksum shows the
check still stands without it.
"""
import pickle
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def stand_in_checksums(monkeypatch):
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn
    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


def labelled_pixels(counts, shape, seed):
    """(labels, uint8 images of `shape`) with counts[c] images of class c, classes interleaved."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    labels = np.random.default_rng(seed).permutation(labels)
    return labels, np.random.default_rng(seed + 1).integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)


def two_parts(train_counts, test_counts, shape):
    return {"train": labelled_pixels(train_counts, shape, 0), "test": labelled_pixels(test_counts, shape, 2)}


def write_pickle(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))


def cifar(root, name, train_counts, test_counts, names=None):
    """CIFAR-10 (5 batches, batches.meta) or CIFAR-100 (train, test, meta): rows of 3072 bytes, the
    red plane, then green, then blue, each 32 x 32 row-major. Returns {part: (labels, HWC images)}."""
    parts = two_parts(train_counts, test_counts, (32, 32, 3))
    rows = {part: images.transpose(0, 3, 1, 2).reshape(len(images), 3072) for part, (_, images) in parts.items()}
    if name == "CIFAR10":
        folder, key = root / "cifar-10-batches-py", "labels"
        batches = {f"data_batch_{b + 1}": ("train", slice(b, None, 5)) for b in range(5)}
        batches["test_batch"] = ("test", slice(None))
        write_pickle(folder / "batches.meta", {"label_names": names or CIFAR10_NAMES})
    else:
        folder, key = root / "cifar-100-python", "fine_labels"
        batches = {"train": ("train", slice(None)), "test": ("test", slice(None))}
        write_pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["all"]})
    for file, (part, rows_of) in batches.items():
        labels = parts[part][0][rows_of]
        write_pickle(folder / file, {"data": rows[part][rows_of], key: labels.tolist(),
                                     "coarse_labels": [0] * len(labels)})
    # the training images in torchvision's order: batch 1's, then batch 2's, ...
    everyone = np.arange(len(parts["train"][0]))
    order = np.concatenate([everyone[rows_of] for file, (_, rows_of) in batches.items() if file.startswith("data")]) \
        if name == "CIFAR10" else everyone
    parts["train"] = (parts["train"][0][order], parts["train"][1][order])
    return parts


def write_idx(path, array):
    """IDX: 0x08 (unsigned bytes) and the number of dimensions, each dimension, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def mnist(root, name, train_counts, test_counts):
    """MNIST, FashionMNIST, KMNIST: IDX files (big-endian header, then bytes) in ROOT/NAME/raw/."""
    parts = two_parts(train_counts, test_counts, (28, 28))
    for part, prefix in (("train", "train"), ("test", "t10k")):
        labels, images = parts[part]
        write_idx(root / name / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / name / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    return parts


def svhn(root, name, train_counts, test_counts):
    """SVHN: X of shape (32, 32, 3, N), y of shape (N, 1), the digit 0 labelled 10."""
    from scipy.io import savemat
    parts = two_parts(train_counts, test_counts, (32, 32, 3))
    for part, (labels, images) in parts.items():
        savemat(root / f"{part}_32x32.mat", {"X": images.transpose(1, 2, 3, 0),
                                            "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})
    return parts


FORMATS = {"CIFAR10": cifar, "CIFAR100": cifar, "MNIST": mnist, "FashionMNIST": mnist, "KMNIST": mnist, "SVHN": svhn}
FOLDERS = {  # the first three classes' folders: torchvision's names, label-prefixed where they do not sort
    "CIFAR10": ["airplane", "automobile", "bird"],
    "CIFAR100": ["apple", "bear", "cloud"],
    "MNIST": ["0 - zero", "1 - one", "2 - two"],
    "FashionMNIST": ["0-T-shirt-top", "1-Trouser", "2-Pullover"],
    "KMNIST": ["0-o", "1-ki", "2-su"],
    "SVHN": ["0", "1", "2"],
}


def build(root, name, train_counts, test_counts):
    root.mkdir(parents=True, exist_ok=True)
    names = FOLDERS[name] if name == "CIFAR100" else None
    return FORMATS[name](root, name, train_counts, test_counts, **({"names": names} if names else {}))


def convert(run, roots, name, *extra):
    return run("0_data_split", "--from-torchvision", name, "--root", roots.source / "tv", "--dataset", "out",
               "--data-root", roots.data, *extra)


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_is_written_bit_exact_with_its_test_set_apart(roots, run, stand_in_checksums, name):
    parts = build(roots.source / "tv", name, train_counts=[10, 10, 10], test_counts=[3, 2, 1])
    code, out, err = convert(run, roots, name)
    assert code == 0, err
    target = roots.data / "out"
    assert sorted(p.name for p in (target / "train").iterdir()) == FOLDERS[name]
    split = pd.read_csv(target / "split.csv", dtype={"class": str})
    # the published test set whole; 0.1 of each training class (1 of 10) carved out for validation
    counts = split.groupby(["split", "class"]).size().unstack(0)[["train", "valid", "test"]]
    assert counts.values.tolist() == [[9, 1, 3], [9, 1, 2], [9, 1, 1]]
    assert list(counts.index) == FOLDERS[name]
    for row in split.itertuples():
        part, index = row.path.split("/")[1].removesuffix(".png").split("-")
        labels, images = parts["test" if row.split == "test" else "train"]
        assert (part == "test") == (row.split == "test")
        assert row.path.split("/")[0] == FOLDERS[name][labels[int(index)]]
        written = png(target / row.split / row.path)
        assert written.dtype == np.uint8 and np.array_equal(written, images[int(index)]), row.path


def test_long_tail_applies_to_the_training_set_only(roots, run, stand_in_checksums):
    build(roots.source / "tv", "CIFAR10", train_counts=[12] * 10, test_counts=[2] * 10)
    code, out, err = convert(run, roots, "CIFAR10", "--long-tail", 10)
    assert code == 0, err
    profile = pd.read_csv(roots.data / "out" / "long_tail.csv")
    # 1 validation image a class (0.1 of 12, rounded), 11 left: n_max 11, int(11 * 10^(-c/9))
    assert profile["train"].tolist() == [11, 8, 6, 5, 3, 3, 2, 1, 1, 1]
    assert profile["valid"].tolist() == [1] * 10 and profile["test"].tolist() == [2] * 10
    assert profile["class"].tolist() == CIFAR10_NAMES
    assert "folder order, torchvision's label order" in out


def test_ratio_sets_the_validation_share(roots, run, stand_in_checksums):
    build(roots.source / "tv", "MNIST", train_counts=[10, 10], test_counts=[1, 1])
    assert convert(run, roots, "MNIST", "--ratio", 0.8, 0.2, 0)[0] == 0
    split = pd.read_csv(roots.data / "out" / "split.csv")
    assert split["split"].value_counts().to_dict() == {"train": 16, "valid": 4, "test": 2}
    code, _, err = convert(run, roots, "MNIST")
    assert code == 2 and "already holds a split; pass --overwrite" in err


def test_a_user_s_altered_file_fails_the_published_checksum(roots, run):
    build(roots.source / "tv", "CIFAR10", train_counts=[2, 2], test_counts=[1, 1])
    code, _, err = convert(run, roots, "CIFAR10")
    assert code == 2 and err.count("\n") == 1
    assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta in " in err
    assert "do not match the published MD5 checksum" in err
    assert list(roots.data.iterdir()) == []


@pytest.mark.parametrize("name, remove, message", [
    ("CIFAR10", ["data_batch_3", "test_batch"], "missing data_batch_3, test_batch in {root}/cifar-10-batches-py/ "
                                                "(where torchvision.datasets.CIFAR10(root='{root}') expects them)"),
    ("CIFAR100", ["meta"], "missing meta in {root}/cifar-100-python/"),
    ("KMNIST", ["t10k-labels-idx1-ubyte"], "missing t10k-labels-idx1-ubyte in {root}/KMNIST/raw/"),
    ("SVHN", ["test_32x32.mat"], "missing test_32x32.mat in {root}/"),
])
def test_missing_files_are_named_with_where_torchvision_expects_them(roots, run, name, remove, message):
    root = roots.source / "tv"
    build(root, name, train_counts=[2, 2], test_counts=[1, 1])
    for file in remove:
        next(root.rglob(file)).unlink()
    code, _, err = convert(run, roots, name)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message.format(root=root) in err, err
    assert list(roots.data.iterdir()) == []


def test_a_truncated_file_is_one_error_line(roots, run):
    root = roots.source / "tv"
    build(root, "FashionMNIST", train_counts=[2, 2], test_counts=[1, 1])
    images = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])
    code, _, err = convert(run, roots, "FashionMNIST")
    assert code == 2 and err.count("\n") == 1
    assert f"torchvision cannot read the files in {root}/FashionMNIST/raw/" in err


@pytest.mark.parametrize("argv, message", [
    (["--root", "tv", "--dataset", "out"], "--root is the folder of --from-torchvision NAME"),
    (["--from-torchvision", "CIFAR10", "--dataset", "out"], "needs --root DIR"),
    (["--from-torchvision", "CIFAR10", "--root", "tv"], "needs --root DIR"),
    (["--from-torchvision", "cifar10", "--root", "tv", "--dataset", "out"], "invalid choice: 'cifar10'"),
    (["--from-torchvision", "MNIST", "--root", "tv", "--dataset", "out", "--link"], "drop it"),
    (["--from-torchvision", "MNIST", "--root", "tv", "--dataset", "out", "--ratio", "0.7", "0.15", "0.15"],
     "the test split is MNIST's published test set; give --ratio TRAIN VALID 0"),
    (["--from-torchvision", "MNIST", "--root", "nowhere", "--dataset", "out"], "--root nowhere is not a folder"),
])
def test_bad_torchvision_options_are_one_error_line(roots, run, monkeypatch, argv, message):
    build(roots.source / "tv", "MNIST", train_counts=[2, 2], test_counts=[1, 1])
    monkeypatch.chdir(roots.source)
    code, _, err = run("0_data_split", *argv, "--data-root", roots.data)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(roots.data.iterdir()) == []


# ---------------------------------------------------------------- 3_run.sh cifar10-lt

def plan_variable(name) -> str:
    """A variable's default in 3_run.sh: NAME=${NAME:-"value"}."""
    from conftest import REPO
    line = next(line for line in (REPO / "3_run.sh").read_text().splitlines() if line.startswith(f"{name}="))
    return line.split(":-", 1)[1].rstrip("}").strip('"')


def reference_lr(epoch: int) -> float:
    """kaidic/LDAM-DRW cifar_train.py:366-378, adjust_learning_rate over lr 0.1, `epoch` 0-based."""
    epoch = epoch + 1
    if epoch <= 5:
        return 0.1 * epoch / 5
    if epoch > 180:
        return 0.1 * 0.0001
    if epoch > 160:
        return 0.1 * 0.01
    return 0.1


def test_the_cifar10_lt_plan_is_ldam_drw_s_schedule():
    from toolkit import engine, plan
    schedule, drw = plan_variable("LT_SCHEDULE").split(), plan_variable("LT_DRW")
    args = plan.parse_args(["--model_index", "42", "--dataset", "cifar10-lt", "--objective", "LDAM", "--drw", drw,
                            *schedule])
    # cifar_train.py:43-56: 200 epochs, batch 128, lr 0.1, weight decay 2e-4; SGD momentum 0.9 (:116-118)
    assert (args.epochs, args.batchsize, args.lr, args.weight_decay, args.momentum) == (200, 128, 0.1, 2e-4, 0.9)
    assert (args.ldam_max_m, args.ldam_s, args.cb_beta) == (0.5, 30.0, 0.9999)  # :213 and the DRW betas (:202)
    # DRW from the reference's 0-based epoch 160 (epoch // 160 == 1): the 161st epoch, counted from 1
    assert args.drw == 161 and [e for e in range(200) if e // 160 == 1][0] + 1 == args.drw
    factor = engine.lr_schedule(args.lrstep, args.lrstepgamma, plan.WARMUP_EPOCHS if args.warmup else 0)
    # after the warm-up, each epoch's rate is the reference's (mid-epoch, the rate of every step)
    assert all(abs(args.lr * factor(e + 0.5) - reference_lr(e)) < 1e-12 for e in range(5, 200))
    # the warm-up: linear in steps here, reaching at the end of epoch k the rate the reference holds in it
    assert all(abs(args.lr * factor(k) - reference_lr(k - 1)) < 1e-12 for k in (1, 2, 3, 4, 5))


def test_the_cifar10_lt_plan_runs_three_seeds_of_three_recipes_then_the_report(tmp_path):
    import os
    import subprocess
    from conftest import REPO
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "commands"}\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "CIFAR_ROOT": "/data/cifar"}
    subprocess.run(["bash", str(REPO / "3_run.sh"), "cifar10-lt"], env=env, check=True)
    commands = (tmp_path / "commands").read_text().splitlines()
    assert commands[0] == "0_data_split.py --from-torchvision CIFAR10 --root /data/cifar --dataset cifar10-lt " \
                          "--long-tail 100 --overwrite"
    trainings = [c for c in commands if c.startswith("1_train.py")]
    recipes = [(c.split("--objective=")[1].split()[0], "--drw 161" in c, c.split("--seed ")[1]) for c in trainings]
    assert recipes == [(o, o == "LDAM", s) for s in "012" for o in ("ERM", "LA", "LDAM")]
    assert all(plan_variable("LT_SCHEDULE") in c and "--model_index=42" in c for c in trainings)
    assert [c.split("--objective=")[1] for c in commands if c.startswith("2_test.py")] == ["ERM", "LA", "LDAM-DRW"] * 3
    assert commands[-1] == "4_report.py logs/ResNet32/cifar10-lt --baseline ERM" and len(commands) == 20
