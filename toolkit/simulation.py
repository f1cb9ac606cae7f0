"""Active learning rounds simulated on a labelled dataset, to see whether a strategy pays before a
person labels anything.

A stratified fraction of the training split is the labelled start; the rest is the pool, its
true labels the oracle. Per seed the start is trained once (round 0, shared by every strategy);
then per strategy, each round queries `budget` pool images with the previous round's model,
reveals their labels (and, with pseudo-labels, adds the confident rest of the pool under the
model's labels, recomputed each round), trains a fresh model through training.build_setup and
the Trainer, with 1_train.py's own arguments, and evaluates the test split with the round's best
checkpoint through Predictor. Rounds train in a hidden folder of the simulation, removed after
each round; the simulation keeps curve.csv, curve.svg, summary.csv, queries.csv, training.log
and plan.json.
"""
import contextlib
import io
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from toolkit import acquisition, data, engine, files, metrics, plots, runs, training
from toolkit.plan import parse_args as parse_training_plan
from toolkit.cli import UserError, progress_bar
from toolkit.pool import logits_and_features
from toolkit.predictor import Predictor
from toolkit.record import Checkpoint

CURVE_COLUMNS = ["strategy", "seed", "round", "labelled", "test_acc", "test_bacc", "tail_share",
                 "pseudo_labels", "pseudo_precision"]
QUERY_COLUMNS = ["strategy", "seed", "round", "rank", "path", "label", "predicted", "score"]
BASELINE = "random"
NOT_IN_A_SIMULATION = ("--seed", "--resume", "--dry-run", "--dataset", "--data-root", "--logs-root")


@dataclass
class Plan:
    """A simulation: the dataset, the schedule, the strategies and seeds, 1_train.py's arguments."""
    dataset: str
    data_root: Path
    logs_root: Path
    initial: float
    budget: int
    rounds: int
    strategies: list
    seeds: list
    train_argv: list
    pseudo: bool = False
    threshold: float = acquisition.PSEUDO_THRESHOLD
    alpha: float = acquisition.PSEUDO_ALPHA
    progress: bool = True


class Stopped(Exception):
    """Ctrl-C or SIGTERM stopped a round's training; exit_code is the Trainer's."""

    def __init__(self, exit_code):
        super().__init__(exit_code)
        self.exit_code = exit_code


def training_args(plan: Plan, data_root: Path, dataset: str, logs_root: Path, seed: int):
    """1_train.py's parsed arguments for one round, so every training flag means what it means there."""
    given = {token.split("=", 1)[0] for token in plan.train_argv}
    refused = sorted(given.intersection(NOT_IN_A_SIMULATION))
    if "--seed" in refused:
        raise UserError("--seed: a simulation trains with each of --seeds S [S ...]")
    if refused:
        raise UserError(f"{', '.join(refused)}: not a training argument of a simulation (it sets them itself)")
    if "--model_index" not in given:
        raise UserError("--model_index is required: the network each round trains (see: python get_model.py)")
    argv = [*plan.train_argv, "--dataset", dataset, "--data-root", str(data_root), "--logs-root", str(logs_root),
            "--seed", str(seed), "--no-progress"]
    try:
        return parse_training_plan(argv)
    except UserError as e:
        raise UserError(f"training arguments (as 1_train.py takes them): {e}") from None


def initial_labelled(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded fraction of each class (at least one image), as sorted indices."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen += rng.permutation(members)[:max(1, round(fraction * len(members)))].tolist()
    return np.sort(np.array(chosen, dtype=np.int64))


def tail_classes(train_counts) -> np.ndarray:
    """The rarer half of the classes by training count (ties: the later class is the rarer)."""
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    return order[len(order) - len(order) // 2:]


def new_simulation_dir(logs_root: Path, dataset: str) -> Path:
    """logs/active/<dataset>/<YYYY-MM-DD-HH-MM-SS>/, waiting a second if that name is taken."""
    return runs.new_dated_dir(Path(logs_root) / "active" / dataset, "a simulation folder")


class RoundTrainer(training.Trainer):
    """The epoch loop of one round: its logs and best checkpoint only (a round is never resumed,
    and a figure per epoch would cost more than the round's training)."""

    def record_epoch(self, position, train_row, valid_row, improved):
        self.log.log("train", train_row)
        self.log.log("valid", valid_row)
        if improved:
            runs.save_best(self.run_dir, Checkpoint(self.setup.record, self.setup.engine.model.state_dict(),
                                                    position.best["epoch"], value=position.best["value"]))


@dataclass
class Outcome:
    """A round's trained model, judged: test numbers and its predictions of every training image."""
    test_acc: float
    test_bacc: float
    probs: np.ndarray | None = None  # (N_train, K): what the next round's query and pseudo-labels use
    features: np.ndarray | None = None  # (N_train, D) penultimate-layer features, for kcenter


class Simulation:
    """The state every round shares: the dataset's images in memory, the folders, the written rows."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.args = training_args(plan, plan.data_root, plan.dataset, plan.logs_root, plan.seeds[0])
        for strategy in plan.strategies:
            acquisition.parse_strategy(strategy)
        dataset = data.dataset_dir(plan.data_root, plan.dataset)
        splits = data.scan_dataset(dataset, ("train", "valid"))
        self.train_split, self.valid_split = splits["train"], splits["valid"]
        self.class_names = self.train_split.class_names
        self.labels = self.train_split.labels.numpy()
        self.tail = tail_classes(self.train_split.class_counts())
        self.eval_split = data.scan_split(dataset, data.evaluation_split(dataset), self.class_names)
        if self.args.deterministic:
            engine.use_deterministic_algorithms()
        self.device = engine.pick_device(self.args.device)
        load = dict(height=self.args.height, width=self.args.width, device=self.device, cache_gb=self.args.cache_gb,
                    workers=self.args.workers, progress=plan.progress)
        self.everything = data.load_images(self.train_split, **load)
        self.test_set = data.load_images(self.eval_split, **load)
        self.folder = new_simulation_dir(plan.logs_root, plan.dataset)
        self.work = self.folder / ".rounds"
        self.curve, self.queries, self.log_text = [], [], []
        files.write_json(self.folder / "plan.json", {**asdict(plan), "dataset_dir": dataset,
                                                     "evaluated_on": self.eval_split.name,
                                                     "tail_classes": [self.class_names[c] for c in self.tail]})

    # ------------------------------------------------------------ one round

    def link_split(self, split_root: Path, indices, paths, classes):
        """split_root/<class>/<index><suffix> linking to each image (copied where links fail)."""
        for index, path, c in zip(indices, paths, classes):
            target = split_root / self.class_names[c] / f"{index:06d}{path.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(path.resolve())
            except OSError:
                shutil.copy2(path, target)

    def train_round(self, name: str, seed: int, labelled, pseudo=(), pseudo_classes=(), predict_pool=True) -> Outcome:
        """Train on the labelled (and pseudo-labelled) training images, evaluate the test split."""
        dataset = self.work / "data" / name
        train_paths = self.train_split.paths
        self.link_split(dataset / "train", labelled, [train_paths[i] for i in labelled], self.labels[labelled])
        self.link_split(dataset / "train", pseudo, [train_paths[i] for i in pseudo], pseudo_classes)
        valid = self.valid_split
        self.link_split(dataset / "valid", range(len(valid.paths)), valid.paths, valid.labels.tolist())
        args = training_args(self.plan, self.work / "data", name, self.work / "runs", seed)
        torch.manual_seed(seed)
        setup = training.build_setup(args, device=self.device, progress=False)
        run_dir = self.work / "runs" / name
        run_dir.mkdir(parents=True)
        files.write_json(run_dir / "args.json", {**vars(args), **setup.record.as_dict()})
        captured = io.StringIO()
        with runs.RunLog(run_dir, tensorboard=False) as log, contextlib.redirect_stdout(captured):
            best, exit_code = RoundTrainer(args, setup, run_dir, log, progress=False).train(training.Position())
        self.log_text.append(f"== {name}: {len(labelled)} labelled, {len(pseudo)} pseudo-labelled; best valid "
                             f"{args.monitor} {best['value']:.2f} at epoch {best['epoch']}\n{captured.getvalue()}")
        files.write_atomically(self.folder / "training.log", lambda tmp: Path(tmp).write_text("".join(self.log_text)))
        if exit_code:
            raise Stopped(exit_code)
        predictor = Predictor.of_run(run_dir, device=self.device, precision=args.precision)
        test_labels, test_logits = predictor.predict(self.test_set, args.batchsize, args.workers, False, desc="test")
        scores = metrics.epoch_metrics(test_labels, test_logits)
        outcome = Outcome(scores["acc"], scores["bacc"])
        if predict_pool:
            logits, features = logits_and_features(predictor, self.everything, args.batchsize, args.workers, False)
            outcome.probs, outcome.features = logits.softmax(dim=1).numpy(), features.numpy()
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        return outcome

    def query(self, strategy: str, outcome: Outcome, labelled, pool, seed: int, round_: int) -> tuple:
        """The pool images (indices into the training split) a strategy queries, and their scores."""
        method, balanced = acquisition.parse_strategy(strategy)
        k = len(self.class_names)
        probs = outcome.probs[pool]
        quotas = None
        if balanced:
            quotas = acquisition.balanced_quotas(np.bincount(self.labels[labelled], minlength=k),
                                                 np.bincount(probs.argmax(axis=1), minlength=k), self.plan.budget)
        kcenter = method == "kcenter"
        picked, scores = acquisition.select(method, probs, self.plan.budget, seed=seed * 1009 + round_,
                                            features=outcome.features[pool] if kcenter else None,
                                            labelled_features=outcome.features[labelled] if kcenter else None,
                                            quotas=quotas)
        return pool[picked], scores

    # ------------------------------------------------------------ rows and files

    def add_row(self, strategy, seed, round_, labelled, outcome: Outcome, pseudo=(), pseudo_classes=()):
        pseudo, pseudo_classes = np.asarray(pseudo, dtype=np.int64), np.asarray(pseudo_classes, dtype=np.int64)
        precision = 100.0 * float((self.labels[pseudo] == pseudo_classes).mean()) if len(pseudo) else float("nan")
        row = {"strategy": strategy, "seed": seed, "round": round_, "labelled": len(labelled),
               "test_acc": outcome.test_acc, "test_bacc": outcome.test_bacc,
               "tail_share": 100.0 * float(np.isin(self.labels[labelled], self.tail).mean()),
               "pseudo_labels": len(pseudo), "pseudo_precision": precision}
        self.curve.append(row)
        files.write_csv(self.folder / "curve.csv", self.curve, CURVE_COLUMNS)
        return row

    def add_queries(self, strategy, seed, round_, picked, scores, outcome: Outcome):
        root = self.train_split.root
        for rank, (i, score) in enumerate(zip(picked, scores), start=1):
            self.queries.append({"strategy": strategy, "seed": seed, "round": round_, "rank": rank,
                                 "path": str(self.train_split.paths[i].relative_to(root)),
                                 "label": self.class_names[self.labels[i]],
                                 "predicted": self.class_names[int(outcome.probs[i].argmax())], "score": float(score)})
        files.write_csv(self.folder / "queries.csv", self.queries, QUERY_COLUMNS)

    # ------------------------------------------------------------ the whole

    def run(self, say=print) -> int:
        """Every seed and strategy; 0, or the exit code of a stop signal (the rows so far are written)."""
        plan = self.plan
        total = len(plan.seeds) * (1 + len(plan.strategies) * plan.rounds)
        bar = progress_bar(None, plan.progress, total=total, desc="rounds", unit="training")
        try:
            for seed in plan.seeds:
                start = initial_labelled(self.labels, plan.initial, seed)
                started = time.monotonic()
                first = self.train_round(f"s{seed}-initial", seed, start, predict_pool=plan.rounds > 0)
                bar.update()
                bar.write(round_line("initial", seed, 0, plan.rounds, start, first, self.tail, self.labels,
                                     time.monotonic() - started))
                for strategy in plan.strategies:
                    self.chain(strategy, seed, start, first, bar)
        except Stopped as stop:
            say(f"stopped; the rounds so far are in {self.folder / 'curve.csv'}")
            return stop.exit_code
        finally:
            bar.close()
            shutil.rmtree(self.work, ignore_errors=True)
        return 0

    def chain(self, strategy: str, seed: int, labelled, outcome: Outcome, bar):
        """Round 0 (shared) and the rounds of one strategy and seed."""
        plan, k = self.plan, len(self.class_names)
        self.add_row(strategy, seed, 0, labelled, outcome)
        for round_ in range(1, plan.rounds + 1):
            pool = np.setdiff1d(np.arange(len(self.labels)), labelled)
            if not len(pool):
                bar.write(f"{strategy} seed {seed}: the pool is empty after round {round_ - 1}")
                bar.update(plan.rounds - round_ + 1)
                return
            picked, scores = self.query(strategy, outcome, labelled, pool, seed, round_)
            self.add_queries(strategy, seed, round_, picked, scores, outcome)
            labelled = np.sort(np.concatenate([labelled, picked]))
            pseudo, pseudo_classes = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
            if plan.pseudo:
                rest = np.setdiff1d(pool, picked)
                chosen, pseudo_classes = acquisition.pseudo_labels(outcome.probs[rest], plan.threshold,
                                                              np.bincount(self.labels[labelled], minlength=k),
                                                              plan.alpha)
                pseudo = rest[chosen]
            started = time.monotonic()
            outcome = self.train_round(f"{strategy}-s{seed}-r{round_}", seed, labelled, pseudo, pseudo_classes,
                                       predict_pool=round_ < plan.rounds)
            bar.update()
            self.add_row(strategy, seed, round_, labelled, outcome, pseudo, pseudo_classes)
            bar.write(round_line(strategy, seed, round_, plan.rounds, labelled, outcome, self.tail, self.labels,
                                 time.monotonic() - started, self.curve[-1]))

    def finish(self) -> pd.DataFrame:
        """curve.svg and summary.csv from the rows written; the summary table."""
        curve = pd.DataFrame(self.curve, columns=CURVE_COLUMNS)
        summary = summarise(curve, self.plan.strategies)
        files.write_csv(self.folder / "summary.csv", summary.to_dict("records"))
        labels = {row["strategy"]: f"{row['strategy']} (AUC {row['auc']:.2f})" for row in summary.to_dict("records")}
        plots.active_learning_curve(curve, self.folder / "curve.svg", labels)
        return summary


def round_line(strategy, seed, round_, rounds, labelled, outcome, tail, labels, seconds, row=None) -> str:
    tail_share = float(np.isin(labels[labelled], tail).mean())
    pseudo = ""
    if row is not None and row["pseudo_labels"]:
        pseudo = f", {row['pseudo_labels']} pseudo-labels ({row['pseudo_precision']:.1f}% right)"
    return (f"{strategy:<20} seed {seed} round {round_}/{rounds}: {len(labelled)} labelled "
            f"({100 * tail_share:.0f}% tail){pseudo}  test acc {outcome.test_acc:6.2f} bacc {outcome.test_bacc:6.2f}"
            f"  {seconds:5.1f}s")


# ---------------------------------------------------------------- the area under the curve

def area_under_curve(labelled, values) -> float:
    """The trapezoid area under values(labelled), divided by the labelled range: the mean value
    over the range of labels (a single point is its own value)."""
    x, y = np.asarray(labelled, dtype=np.float64), np.asarray(values, dtype=np.float64)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum() / (x[-1] - x[0]))


def areas(curve: pd.DataFrame) -> pd.DataFrame:
    """The area under each (strategy, seed)'s test bacc curve."""
    rows = [{"strategy": strategy, "seed": seed, "auc": area_under_curve(group["labelled"], group["test_bacc"])}
            for (strategy, seed), group in curve.groupby(["strategy", "seed"], sort=False)]
    return pd.DataFrame(rows, columns=["strategy", "seed", "auc"])


def t_interval(values) -> float:
    """Half-width of the 95% Student-t interval of the mean (NaN for fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def summarise(curve: pd.DataFrame, strategies: list) -> pd.DataFrame:
    """Per strategy: seeds, mean AUC with its 95% interval over seeds, and the paired difference
    from random on the same seeds (mean, 95% interval, paired t-test p-value)."""
    found = areas(curve)
    baseline = found[found["strategy"] == BASELINE].set_index("seed")["auc"]
    rows = []
    for strategy in strategies:
        mine = found[found["strategy"] == strategy].set_index("seed")["auc"]
        if mine.empty:
            continue
        row = {"strategy": strategy, "seeds": len(mine), "auc": float(mine.mean()), "auc_ci95": t_interval(mine),
               "vs_random": float("nan"), "vs_random_ci95": float("nan"), "p_value": float("nan")}
        matched = mine.index.intersection(baseline.index)
        if strategy != BASELINE and len(matched):
            difference = mine[matched] - baseline[matched]
            row.update(vs_random=float(difference.mean()), vs_random_ci95=t_interval(difference))
            if len(matched) > 1 and difference.std(ddof=1) > 0:
                row["p_value"] = float(stats.ttest_rel(mine[matched], baseline[matched]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows, columns=["strategy", "seeds", "auc", "auc_ci95", "vs_random", "vs_random_ci95",
                                       "p_value"])


def format_summary(summary: pd.DataFrame, curve: pd.DataFrame) -> str:
    """The summary as a table a person reads, with what the interval says."""
    low, high = int(curve["labelled"].min()), int(curve["labelled"].max())

    def with_interval(value, half, sign=""):
        if np.isnan(value):
            return "-"
        return f"{value:{sign}.2f}" + ("" if np.isnan(half) else f" ± {half:.2f}")

    lines = [f"area under the test balanced-accuracy curve (its mean over {low}-{high} labels, %), "
             f"mean ± 95% t-interval over seeds; vs random: paired on the same seeds",
             f"{'strategy':<22} {'seeds':>5}  {'AUC':<16} {'vs random':<18} {'p':>6}  verdict"]
    for row in summary.to_dict("records"):
        diff, half = row["vs_random"], row["vs_random_ci95"]
        if row["strategy"] == BASELINE or np.isnan(diff):
            verdict = "baseline" if row["strategy"] == BASELINE else "no random run to compare with"
        elif np.isnan(half):
            verdict = "one seed: no interval"
        elif diff - half > 0:
            verdict = "better than random"
        elif diff + half < 0:
            verdict = "worse than random"
        else:
            verdict = "within noise of random"
        p = "-" if np.isnan(row["p_value"]) else f"{row['p_value']:.3f}"
        lines.append(f"{row['strategy']:<22} {row['seeds']:>5}  {with_interval(row['auc'], row['auc_ci95']):<16} "
                     f"{with_interval(diff, half, '+'):<18} {p:>6}  {verdict}")
    return "\n".join(lines)


def simulate(plan: Plan, say=print) -> tuple:
    """Run a plan; (exit code, the simulation folder, the summary table or None when stopped)."""
    simulation = Simulation(plan)
    say(f"simulation folder: {simulation.folder}")
    say(f"{plan.dataset}: {len(simulation.labels)} training images, {len(simulation.test_set)} {simulation.eval_split.name}"
        f" images; start {plan.initial:g} of each class, {plan.rounds} rounds of {plan.budget} queries, strategies "
        f"{', '.join(plan.strategies)}, seeds {' '.join(map(str, plan.seeds))}"
        + (f"; pseudo-labels at {plan.threshold:g} (CReST alpha {plan.alpha:.3g})" if plan.pseudo else ""))
    exit_code = simulation.run(say)
    if not simulation.curve:
        return exit_code, simulation.folder, None
    summary = simulation.finish()
    say(format_summary(summary, pd.DataFrame(simulation.curve)))
    return exit_code, simulation.folder, summary
