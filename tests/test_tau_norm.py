"""2_test.py --tau-norm: tau-normalised logits by hand, tau chosen on validation only, its folder."""
import numpy as np
import pandas as pd
import pytest
from conftest import TRAIN_ARGS
from test_bootstrap import copied, rotate_test_classes  # noqa: F401 (copied: the shared trained run, a fixture)

from toolkit import data, metrics
from toolkit.predictor import Predictor


def test_tau_normalised_logits_by_hand():
    """Rows (3, 4) and (0, 2) have norms 5 and 2; f = (1, 2) (pnorm, tau_norm.py:102-107)."""
    features, weight = np.array([[1.0, 2.0]]), np.array([[3.0, 4.0], [0.0, 2.0]])
    assert metrics.tau_normalised_logits(features, weight, 0.0).tolist() == [[11.0, 4.0]]
    assert metrics.tau_normalised_logits(features, weight, 1.0)[0].tolist() == pytest.approx([2.2, 2.0])
    assert metrics.tau_normalised_logits(features, weight, 2.0)[0].tolist() == pytest.approx([0.44, 1.0])


def test_choose_tau_norm_by_hand():
    """Rows (4, 0) and (0, 1): a class-1 image f = (1, 2) scores (4^(1 - tau), 2), right once
    tau > 0.5 (at 0.5 the tie goes to class 0); a class-0 image (1, 0.5) scores (4^(1 - tau),
    0.5), right while tau <= 1.5 (a tie again). The smallest best tau of the grid is 0.6."""
    features, weight, labels = np.array([[1.0, 2.0], [1.0, 0.5]]), np.array([[4.0, 0.0], [0.0, 1.0]]), [1, 0]
    tau, by_tau = metrics.choose_tau_norm(labels, features, weight)
    assert tau == 0.6 and by_tau[0.5] == 50.0 and by_tau[1.5] == 100.0 and by_tau[1.6] == 50.0
    assert list(by_tau) == list(metrics.TAU_GRID)


def test_tau_norm_0_is_the_plain_logits_without_the_bias(copied, run):
    args, run_dir, dataset = copied
    code, out, err = run("2_test", *args, "--tau-norm", "0")
    assert code == 0, err
    folder = run_dir / "tau-normalised"
    scores = pd.read_csv(folder / "test_metrics.csv")
    assert list(scores.columns[:3]) == ["split", "checkpoint", "tau_norm"] and scores.loc[0, "tau_norm"] == 0
    assert "classifier tau-normalised with tau 0" in out
    predictor = Predictor.of_run(run_dir, device="cpu", precision="fp32")
    split = data.scan_split(dataset, "test", predictor.record.class_names)
    image_set = data.load_images(split, predictor.record.height, predictor.record.width, "cpu", progress=False)
    labels, logits = predictor.predict(image_set, 4, progress=False)
    unbiased = logits - predictor.model.fc.bias.detach()
    names = predictor.record.class_names
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions["top1"]) == [names[i] for i in unbiased.argmax(1).tolist()]
    assert not (run_dir / "test_metrics.csv").exists()  # the run's own results are not touched


def test_tau_norm_auto_chooses_tau_on_the_valid_split_only(copied, run, monkeypatch):
    args, run_dir, dataset = copied
    seen, choose = [], metrics.choose_tau_norm

    def spy(labels, features, weight, *rest):
        seen.append((np.asarray(labels).copy(), np.asarray(features, dtype=np.float64).copy()))
        return choose(labels, features, weight, *rest)
    monkeypatch.setattr(metrics, "choose_tau_norm", spy)
    assert run("2_test", *args, "--tau-norm", "auto")[0] == 0
    before = pd.read_csv(run_dir / "tau-normalised" / "test_metrics.csv")
    tau = before.loc[0, "tau_norm"]
    valid_counts = [len(list((dataset / "valid" / c).iterdir())) for c in ("alpha", "beta", "gamma")]
    assert len(seen) == 1 and np.bincount(seen[0][0], minlength=3).tolist() == valid_counts
    # every test image moves to another class: the choice sees the same and picks the same tau
    rotate_test_classes(dataset)
    assert run("2_test", *args, "--tau-norm", "auto")[0] == 0
    kept = pd.read_csv(run_dir / "tau-normalised" / "test_metrics.csv")
    assert kept.equals(before)  # a test of other data goes beside the canonical one (2_test.py's data-<hash>/)
    after = pd.read_csv(next((run_dir / "tau-normalised").glob("data-*/test_metrics.csv")))
    assert len(seen) == 2 and (seen[1][0] == seen[0][0]).all() and np.array_equal(seen[1][1], seen[0][1])
    assert after.loc[0, "tau_norm"] == tau
    assert not after.drop(columns="tau_norm").equals(before.drop(columns="tau_norm"))


@pytest.mark.parametrize("extra, message", [
    (["--tau-norm", "-1"], "--tau-norm"), (["--tau-norm", "best"], "--tau-norm"),
    (["--tau-norm", "1", "--logit-adjust", "1"], "run 2_test.py once with each"),
])
def test_bad_input_is_one_error_line(copied, run, extra, message):
    args, run_dir, _ = copied
    code, _, err = run("2_test", *args, *extra)
    assert code == 2 and err.count("error:") == 1 and message in err and "Traceback" not in err
    assert not (run_dir / "tau-normalised").exists()


def test_a_cosine_classifier_is_refused_with_the_reason(tiny, run):
    assert run("1_train", *TRAIN_ARGS, *tiny.data_args, "--objective", "LDAM", "--epochs", "1")[0] == 0
    code, _, err = run("2_test", "--model_index", "41", "--objective", "LDAM", "--no-progress", *tiny.data_args,
                       "--tau-norm", "1")
    assert code == 2 and err.count("error:") == 1 and "cosine classifier" in err
