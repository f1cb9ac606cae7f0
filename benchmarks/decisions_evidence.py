"""The figures of docs/decisions.md: an operating point, a cost matrix, calibration and a shifted
prior on trained runs of the embedded digits (one run per seed), summarised over the seeds.

    python 0_data_split.py --demo --long-tail 10          # digits-lt10: 26 valid and 26 test images a digit
    for seed in 0 1 2 3 4; do python 1_train.py --dataset digits-lt10 --model_index 41 --height 16 --width 16 \
        --epochs 30 --batchsize 32 --lr 0.05 --lrstep 20 26 --warmup --threads 1 --seed $seed; done
    python -m benchmarks.decisions_evidence logs/ResNet20/digits-lt10/ERM/*

For each run: what 2_test.py --operating-point RARE:recall=0.9 --calibrate temperature and --costs
(a missed RARE costs 20, any other mistake 1) --calibrate temperature run, their folders written
below the run as 2_test.py writes them; then the
shifted prior: the test split re-sampled (with replacement, 10 draws of 500 images) to the
training prior reversed (the rarest class the most frequent) and to the balanced test's own
(uniform) prior, decided by the calibrated argmax with and without EM's prior adaptation (and EM on
the uncalibrated probabilities, to see what calibration gives it).
Every figure: the mean over the runs with a Student-t 95% interval; the *_gain and *_change
columns are differences within each run (paired).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import chosen_decisions, data, decisions, evaluation, recipes, runs
from toolkit.predictor import Predictor

DRAWS, DRAWN_IMAGES = 10, 500


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-root", type=Path, help="the runs' data root (default: each run's own)")
    p.add_argument("--recall", type=float, default=0.9)
    p.add_argument("--missed-cost", type=float, default=20.0)
    args = p.parse_args(argv)
    options = evaluation.Options(progress=False, data_root=args.data_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in args.runs:
            record = runs.read_record(run_dir)
            rare = record.class_names[int(np.argmin(record.class_counts))]
            costs = cost_file(Path(tmp) / f"missed_{rare}.csv", record.class_names, rare, args.missed_cost)
            # what 2_test.py --calibrate temperature --operating-point RARE:recall=R (then --costs FILE) runs
            point = chosen_decisions.evaluate(run_dir, options, f"{rare}:recall={args.recall:g}", calibrate=True)
            cost = chosen_decisions.evaluate(run_dir, options, costs_path=costs, calibrate=True).row
            row = point.row
            rows.append({"run": run_dir.name, "rare": rare, **shifted_prior(run_dir, args.data_root),
                         **{f"op_{k}": row[k] for k in ("recall", "precision", "false_positive_rate",
                                                         "argmax_recall", "argmax_precision",
                                                         "argmax_false_positive_rate", "bacc", "worst_recall")},
                         "op_argmax_bacc": point.scores["bacc"],
                         "cost": cost["cost"], "argmax_cost": cost["argmax_cost"],
                         "cost_difference": cost["cost_difference"], "temperature": row["temperature"],
                         **{k: row[k] for k in ("ece_before", "ece_after", "nll_before", "nll_after")}})
    table = pd.DataFrame(rows)
    for gain, ours, theirs in (("op_recall_gain", "op_recall", "op_argmax_recall"),
                               ("op_precision_change", "op_precision", "op_argmax_precision"),
                               ("op_bacc_change", "op_bacc", "op_argmax_bacc"),
                               ("ece_change", "ece_after", "ece_before"),
                               ("reversed_acc_gain", "reversed_acc_adapted", "reversed_acc"),
                               ("reversed_bacc_change", "reversed_bacc_adapted", "reversed_bacc"),
                               ("uniform_acc_gain", "uniform_acc_adapted", "uniform_acc"),
                               ("reversed_calibration_gain", "reversed_acc_adapted",
                                "reversed_acc_adapted_uncalibrated")):
        table[gain] = table[ours] - table[theirs]  # paired by run: the interval of the difference
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nmean over {len(table)} runs [Student-t 95% interval]:")
    for column in table.columns[2:]:
        mean, std, low, high = recipes.t_interval(table[column])
        print(f"  {column:<30} {mean:8.3f} [{low:.3f}, {high:.3f}]  (std {std:.3f})")
    return 0


def cost_file(path: Path, class_names, rare: str, missed: float) -> Path:
    matrix = pd.DataFrame(1.0 - np.eye(len(class_names)), index=class_names, columns=class_names)
    matrix.loc[rare] = missed
    matrix.loc[rare, rare] = 0.0
    matrix.index.name = "true"
    matrix.to_csv(path)
    return path


def shifted_prior(run_dir: Path, data_root) -> dict:
    """acc and bacc of the calibrated argmax with and without EM's adapted prior, on the test split
    re-sampled to the reversed training prior and to a uniform one (means over DRAWS draws)."""
    predictor = Predictor.of_run(run_dir, device="cpu", precision="fp32")
    record = predictor.record
    root = Path(data_root or runs.read_args(run_dir).get("data_root"))
    found = {}
    for split in ("valid", "test"):
        scanned = data.scan_split(root / record.dataset, split, record.class_names)
        image_set = data.load_images(scanned, record.height, record.width, predictor.device, 0, 1, False)
        labels, logits = predictor.predict(image_set, 256, 1, False)
        found[split] = labels.numpy(), logits.double().numpy()
    temperature = decisions.fit_temperature(*found["valid"])
    labels, logits = found["test"]
    probs = decisions.calibrated(logits, temperature)
    counts = np.asarray(record.class_counts, dtype=np.float64)
    train_prior = counts / counts.sum()
    results = {}
    for name, prior in (("reversed", counts[::-1] / counts.sum()), ("uniform", np.full(len(counts), 1 / len(counts)))):
        figures = []
        for draw in range(DRAWS):
            rng = np.random.default_rng(draw)
            drawn = rng.multinomial(DRAWN_IMAGES, prior)
            chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), size=n) for c, n in enumerate(drawn)])
            estimated, adapted, _ = decisions.estimate_prior(probs[chosen], train_prior)
            _, uncalibrated, _ = decisions.estimate_prior(decisions.calibrated(logits[chosen]), train_prior)
            truth = labels[chosen]
            figures.append({f"{name}_acc": accuracy(truth, probs[chosen]),
                            f"{name}_acc_adapted": accuracy(truth, adapted),
                            f"{name}_acc_adapted_uncalibrated": accuracy(truth, uncalibrated),
                            f"{name}_bacc": balanced(truth, probs[chosen]),
                            f"{name}_bacc_adapted": balanced(truth, adapted),
                            f"{name}_prior_error": 100 * np.abs(estimated - drawn / drawn.sum()).sum() / 2})
        results.update(pd.DataFrame(figures).mean().to_dict())
    return results


def accuracy(labels, probs) -> float:
    return 100.0 * (probs.argmax(axis=1) == labels).mean()


def balanced(labels, probs) -> float:
    decided = probs.argmax(axis=1)
    return 100.0 * np.mean([(decided[labels == c] == c).mean() for c in np.unique(labels)])


if __name__ == "__main__":
    sys.exit(main())
