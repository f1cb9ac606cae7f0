"""The pruning check: does a pruned search keep the recipe an unpruned grid ranks first?

    python 7_search.py ... --grid 2 --pruner none --finalists 0      # every trial trains every epoch
    python benchmarks/pruning_check.py logs/search/digits-lt/<YYYY-MM-DD-HH-MM-SS>

replays Optuna's pruner (the search's own, toolkit/search_space.py) on the curves the grid recorded, the
trials in the grid's order and in 200 shuffled orders: the same decisions a pruned search over
that grid takes, without training again. Prints, for each pruner and first rung: the rank
correlation of the value at the first rung with the final value, how often the grid's best is
kept, the DRW trials pruned, and the epochs saved.
"""
import sys
from pathlib import Path

import numpy as np
import optuna
from scipy import stats

from toolkit import cli, plan, search_space, search_storage


def curves(folder: Path) -> list:
    """(number, recipe, {epoch: best valid so far}, final value, settles_at) of each complete trial."""
    settings = search_storage.Settings.read(folder)
    study = search_storage.load(settings, settings.study)
    found = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        args = plan.parse_args(["--resume", t.user_attrs["run_dir"]])
        change = search_space.late_change(args)
        found.append((t.number, t.params["recipe"], dict(t.intermediate_values), t.value,
                      change + search_space.SETTLE_EPOCHS if change else 0))
    return found, settings.epochs


def replay(trials: list, epochs: int, kind: str, min_resource: int, reduction_factor: int) -> dict:
    """The pruner's decisions over `trials` in their order: {number: epochs trained, or None if complete}."""
    study = optuna.create_study(direction="maximize",
                                pruner=search_space.build_pruner(kind, min_resource, reduction_factor, epochs))
    stopped = {}
    for number, _, values, final, settles in trials:
        trial = study.ask()
        trial.set_user_attr("settles_at", settles)
        stopped[number] = None
        for epoch in range(1, epochs + 1):
            trial.report(values[epoch], epoch)
            if epoch < epochs and trial.should_prune():
                stopped[number] = epoch
                break
        if stopped[number]:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, final)
    return stopped


def check(folder: Path, orders=200) -> str:
    trials, epochs = curves(folder)
    finals = np.array([t[3] for t in trials])
    best = trials[int(np.argmax(finals))][0]
    late = {t[0] for t in trials if t[4]}
    lines = [f"{len(trials)} grid trials of {epochs} epochs; the grid's best: trial {best} "
             f"({trials[int(np.argmax(finals))][1]}, valid {finals.max():.2f}); {len(late)} with a late change"]
    rng = np.random.default_rng(0)
    for min_resource in sorted({1, max(1, epochs // 3), max(1, epochs // 2)}):
        at_rung = np.array([t[2][min_resource] for t in trials])
        rho = stats.spearmanr(at_rung, finals).statistic
        rho_late = stats.spearmanr([t[2][min_resource] for t in trials if t[0] in late],
                                   [t[3] for t in trials if t[0] in late]).statistic if len(late) > 2 else np.nan
        late_rank_rung = np.mean([stats.rankdata(-at_rung)[i] for i, t in enumerate(trials) if t[0] in late])
        late_rank_final = np.mean([stats.rankdata(-finals)[i] for i, t in enumerate(trials) if t[0] in late])
        lines.append(f"first rung epoch {min_resource}: Spearman(value there, final) {rho:.2f}; late-change "
                     f"trials' mean rank {late_rank_rung:.1f} there, {late_rank_final:.1f} at the end "
                     f"(Spearman among them {rho_late:.2f})")
        for kind in ("unguarded", "halving"):
            kept, late_pruned, spent, rhos = 0, 0, 0, []
            for k in range(orders + 1):
                order = trials if k == 0 else [trials[i] for i in rng.permutation(len(trials))]
                stopped = replay(order, epochs, kind, min_resource, 3)
                kept += stopped[best] is None
                late_pruned += sum(1 for n in late if stopped[n])
                spent += sum(epochs if s is None else s for s in stopped.values())
                searched = [t[3] if stopped[t[0]] is None else -1000 + stopped[t[0]] for t in trials]
                rhos.append(stats.spearmanr(searched, finals).statistic)
            lines.append(f"  {kind:<9}: keeps the grid's best in {kept}/{orders + 1} orders, prunes "
                         f"{late_pruned / (orders + 1):.1f} of {len(late)} late-change trials, trains "
                         f"{spent / (orders + 1) / (epochs * len(trials)):.0%} of the grid's epochs; "
                         f"rank correlation with the grid {np.mean(rhos):.2f}")
    return "\n".join(lines)


def body(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise cli.UserError("usage: python benchmarks/pruning_check.py SEARCH_DIR (a --grid search run with "
                            "--pruner none)")
    print(check(Path(argv[0])))
    return 0


def main(argv=None) -> int:
    return cli.run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
