"""Active learning rounds simulated on a labelled dataset, to see whether a strategy pays before a
person labels anything.

A stratified fraction of the training split is the labelled start; the rest is the pool, its
true labels the oracle. Per seed the start is trained once (round 0, shared by every strategy);
then per strategy, each round queries `budget` pool images with the previous round's model,
reveals their labels (and, with pseudo-labels, adds the confident rest of the pool under the
model's labels, recomputed each round), trains a fresh model with 1_train.py's own arguments,
and evaluates the test split with the round's best checkpoint through Predictor. The images are
decoded once: a round trains on an index subset of the training images in memory
(data.subset, training.setup_from_images). Each round's best checkpoint is written to a hidden
folder of the simulation, removed after the round; the simulation keeps curve.csv, curve.svg,
summary.csv, queries.csv, training.log and plan.json.
"""
import argparse
import contextlib
import io
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit import acquisition, augment, data, engine, files, metrics, plots, recipes, runs, training
from toolkit.plan import OPTIONS as TRAINING_OPTIONS, parse_args as parse_training_plan
from toolkit.cli import UserError, counted, plural, progress_bar
from toolkit.predictor import Predictor

CURVE_COLUMNS = ["strategy", "seed", "round", "labelled", "test_acc", "test_bacc", "tail_share",
                 "pseudo_labels", "pseudo_precision"]
QUERY_COLUMNS = ["strategy", "seed", "round", "rank", "path", "label", "predicted", "score"]
BASELINE = "random"
NOT_IN_A_SIMULATION = tuple(o.flag for o in TRAINING_OPTIONS if not o.simulation)  # it sets them itself


@dataclass
class SimulationSettings:
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


def training_args(plan: SimulationSettings, seed: int):
    """1_train.py's parsed arguments for the rounds of `seed`, so every training flag means what it
    means there."""
    given = {token.split("=", 1)[0] for token in plan.train_argv}
    refused = sorted(given.intersection(NOT_IN_A_SIMULATION))
    if "--seed" in refused:
        raise UserError("--seed: a simulation trains with each of --seeds S [S ...]")
    if refused:
        raise UserError(f"{', '.join(refused)}: not a training argument of a simulation (it sets them itself)")
    if not given & {"--model_index", "--model"}:
        raise UserError("--model_index (or --model NAME) is required: the network each round trains (see: python "
                        "get_model.py)")
    argv = [*plan.train_argv, "--dataset", plan.dataset, "--data-root", str(plan.data_root), "--logs-root",
            str(plan.logs_root), "--seed", str(seed), "--no-progress"]
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


ROUND_RECORDS = training.Records(last=False, curves=False)  # a round is never resumed


@dataclass
class Outcome:
    """A round's trained model, judged: test numbers and its predictions of every training image."""
    test_acc: float
    test_bacc: float
    probs: np.ndarray | None = None  # (N_train, K): what the next round's query and pseudo-labels use
    features: np.ndarray | None = None  # (N_train, D) penultimate-layer features, for kcenter


class Simulation:
    """The state every round shares: the dataset's images in memory, the folders, the written rows."""

    def __init__(self, plan: SimulationSettings):
        self.plan = plan
        for strategy in plan.strategies:
            acquisition.parse_strategy(strategy)
        self.args = args = training_args(plan, plan.seeds[0])
        engine.use_threads(args.threads)
        dataset = data.dataset_dir(plan.data_root, plan.dataset)
        splits = data.scan_dataset(dataset, ("train", "valid"))
        self.train_split, valid_split = splits["train"], splits["valid"]
        self.class_names = self.train_split.class_names
        self.labels = self.train_split.labels.numpy()
        self.tail = tail_classes(self.train_split.class_counts())
        self.eval_split = data.scan_split(dataset, data.evaluation_split(dataset), self.class_names)
        # the whole plan checked before anything is decoded or written: the objective, its flags, the model
        training.Network.of_plan(args, self.train_split.class_counts())
        if args.deterministic:
            engine.use_deterministic_algorithms()
        self.device = engine.pick_device(args.device)
        load = dict(device=self.device, cache_gb=args.cache_gb, workers=args.workers, progress=plan.progress)
        size = (args.height, args.width)
        self.everything = data.load_images(self.train_split, *size, **load)  # what a round's model predicts
        train_size = augment.cache_size(args.augment, *size)
        self.train_images = self.everything if train_size == size else \
            data.load_images(self.train_split, *train_size, **load)  # what a round trains from
        self.valid_set = data.load_images(valid_split, *size, **load)
        self.test_set = data.load_images(self.eval_split, *size, **load)
        self.folder = new_simulation_dir(plan.logs_root, plan.dataset)
        self.work = self.folder / ".rounds"
        self.curve, self.queries, self.log_text = [], [], []
        files.write_json(self.folder / "plan.json", {**asdict(plan), "dataset_dir": dataset,
                                                     "evaluated_on": self.eval_split.name,
                                                     "tail_classes": [self.class_names[c] for c in self.tail]})

    # ------------------------------------------------------------ one round

    def round_images(self, labelled, pseudo=(), pseudo_classes=()) -> data.ImageSet:
        """The labelled images with their true labels and the pseudo-labelled ones with the model's,
        ordered as a scanned split is: by class, then by place in the training split."""
        indices = np.concatenate([np.asarray(labelled, dtype=np.int64), np.asarray(pseudo, dtype=np.int64)])
        classes = np.concatenate([self.labels[labelled], np.asarray(pseudo_classes, dtype=np.int64)])
        order = np.lexsort((indices, classes))
        return data.subset(self.train_images, indices[order], classes[order])

    def train_round(self, name: str, seed: int, labelled, pseudo=(), pseudo_classes=(), predict_pool=True) -> Outcome:
        """Train on the labelled (and pseudo-labelled) training images, evaluate the test split."""
        args = argparse.Namespace(**{**vars(self.args), "seed": seed})
        torch.manual_seed(seed)
        setup = training.setup_from_images(args, self.round_images(labelled, pseudo, pseudo_classes), self.valid_set,
                                           device=self.device)
        run_dir = self.work / name
        run_dir.mkdir(parents=True)
        captured = io.StringIO()
        with runs.RunLog(run_dir, tensorboard=False) as log, contextlib.redirect_stdout(captured):
            trainer = training.Trainer(args, setup, run_dir, log, progress=False, records=ROUND_RECORDS)
            best, exit_code = trainer.train(training.Position())
        self.log_text.append(f"== {name}: {len(labelled)} labelled, {len(pseudo)} pseudo-labelled; best valid "
                             f"{args.monitor} {best['value']:.2f} at epoch {best['epoch']}\n{captured.getvalue()}")
        files.write_atomically(self.folder / "training.log", lambda tmp: Path(tmp).write_text("".join(self.log_text)))
        if exit_code:
            raise Stopped(exit_code)
        predictor = Predictor(runs.best_checkpoint(run_dir), device=self.device, precision=args.precision)
        test_labels, test_logits = predictor.predict(self.test_set, args.batchsize, args.workers, False, desc="test")
        scores = metrics.epoch_metrics(test_labels, test_logits)
        outcome = Outcome(scores["acc"], scores["bacc"])
        if predict_pool:
            _, logits, features = predictor.predict_with_features(self.everything, args.batchsize, args.workers, False)
            outcome.probs, outcome.features = logits.softmax(dim=1).numpy(), features.numpy()
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
        pseudo = f", {counted(row['pseudo_labels'], 'pseudo-label')} ({row['pseudo_precision']:.1f}% right)"
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


def half_width(interval: tuple) -> float:
    """The half-width of recipes.t_interval's (mean, std, low, high): what the tables print after ±."""
    return (interval[3] - interval[2]) / 2


def summarise(curve: pd.DataFrame, strategies: list) -> pd.DataFrame:
    """Per strategy: seeds, mean AUC with its 95% interval over seeds, and the paired difference
    from random on the same seeds (mean, 95% interval, paired t-test p-value), from toolkit/recipes.py
    as 4_report.py's recipes have them."""
    found = areas(curve)
    by_seed = {strategy: dict(zip(group["seed"], group["auc"])) for strategy, group in found.groupby("strategy")}
    baseline = by_seed.get(BASELINE, {})
    rows = []
    for strategy in strategies:
        mine = by_seed.get(strategy)
        if not mine:
            continue
        interval = recipes.t_interval(list(mine.values()))
        row = {"strategy": strategy, "seeds": len(mine), "auc": interval[0], "auc_ci95": half_width(interval),
               "vs_random": float("nan"), "vs_random_ci95": float("nan"), "p_value": float("nan")}
        if strategy != BASELINE and set(mine) & set(baseline):
            paired = recipes.paired_difference(mine, baseline)
            row.update(vs_random=paired["bacc_diff_mean"], p_value=paired["p_value"],
                       vs_random_ci95=(paired["bacc_diff_ci_high"] - paired["bacc_diff_ci_low"]) / 2)
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


def simulate(plan: SimulationSettings, say=print) -> tuple:
    """Run a plan; (exit code, the simulation folder, the summary table or None when stopped)."""
    simulation = Simulation(plan)
    say(f"simulation folder: {simulation.folder}")
    say(f"{plan.dataset}: {counted(len(simulation.labels), 'training image')}, "
        f"{counted(len(simulation.test_set), simulation.eval_split.name + ' image')}; start {plan.initial:g} of each "
        f"class, {counted(plan.rounds, 'round')} of {counted(plan.budget, 'query', 'queries')}, "
        f"{plural(len(plan.strategies), 'strategy', 'strategies')} {', '.join(plan.strategies)}, "
        f"{plural(len(plan.seeds), 'seed')} {' '.join(map(str, plan.seeds))}"
        + (f"; pseudo-labels at {plan.threshold:g} (CReST alpha {plan.alpha:.3g})" if plan.pseudo else ""))
    exit_code = simulation.run(say)
    if not simulation.curve:
        return exit_code, simulation.folder, None
    summary = simulation.finish()
    say(format_summary(summary, pd.DataFrame(simulation.curve)))
    return exit_code, simulation.folder, summary
