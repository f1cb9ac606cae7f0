"""Which recipe wins on my data? Search objectives and hyper-parameters on validation, then confirm
the best on fresh seeds against ERM, with intervals and paired tests (see docs/search.md).

    python 7_search.py --dataset digits-lt --model_index 42 --trials 40 --epochs 12 --lrstep 8 11
    python 7_search.py --space                                   # what is searched, per recipe
    python 7_search.py --resume logs/search/digits-lt/2026-12-01-23-00-00   # continue a search
    python 7_search.py ... --storage postgresql://user@host/db   # the same command on every machine

writes logs/search/NAME/<YYYY-MM-DD-HH-MM-SS>/: trials.csv, finalists.csv, recipes.csv, report.html;
every trial is an ordinary run directory under its runs/ (python 4_report.py that/runs reports them).
"""
import json
import multiprocessing
import os
import sys
from pathlib import Path

import torch

import criterion
from toolkit import cli, data, plan, recipes, runs, search, search_budget, search_report, search_space, search_storage

# the seed-to-seed spread of the paired difference on digits-lt asks for 7 (docs/search.md, "How many seeds")
DEFAULT_SEEDS = [1, 2, 3, 4, 5, 6, 7]


def build_parser():
    p = cli.ArgumentParser(prog="7_search.py", description="Search recipes on validation, confirm the best on "
                                                           "fresh seeds against ERM. Any other option is "
                                                           "1_train.py's, shared by every trial.")
    p.add_argument("--objectives", nargs="+", metavar="RECIPE", default=list(search_space.DEFAULT_RECIPES),
                   help="the recipes to search: objectives of criterion.py, NAME-DRW for deferred re-weighting "
                        f"(default: {' '.join(search_space.DEFAULT_RECIPES)})")
    p.add_argument("--trials", type=cli.positive_int, help="trials of the study, all processes together; pruned "
                                                           "ones count (default: 40, or the grid's size)")
    p.add_argument("--minutes", type=cli.positive_float,
                   help="the whole answer, search and confirmation, within this many minutes: trials stop early "
                        "enough for the confirmation, whose seeds are cut to those that fit (docs/search.md)")
    p.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS,
                   help="the confirmation's seeds, not the search's --seed (default: 1 to 7)")
    p.add_argument("--finalists", type=cli.non_negative_int, default=3,
                   help="the best K by validation confirmed against ERM (default: 3; 0: search only)")
    p.add_argument("--jobs", type=cli.positive_int, default=1,
                   help="trial processes on this machine: one GPU each, or a share of the CPU cores (default: 1)")
    p.add_argument("--storage", help="an Optuna RDB URL (postgresql://user@host/db: several machines on one "
                                     "study) or a journal file's path (default: study.journal in the search folder)")
    p.add_argument("--study-name", default="recipe-search", help="the study's name in --storage (default: %(default)s)")
    p.add_argument("--resume", type=Path, metavar="SEARCH_DIR", help="continue the search of that folder")
    p.add_argument("--space", action="store_true", help="print what is searched for each recipe, then stop")
    p.add_argument("--pruner", choices=("halving", "hyperband", "unguarded", "none"), default="halving",
                   help="halving: successive halving on the validation value, never before a late change (DRW, "
                        "DRS, SPBL's last stage) has settled; unguarded: without that guard (default: halving)")
    p.add_argument("--min-resource", type=cli.positive_int, metavar="EPOCHS",
                   help="the first rung (default: half of --epochs)")
    p.add_argument("--reduction-factor", type=cli.positive_int, default=3, help="successive halving's (default: 3)")
    p.add_argument("--grid", type=cli.positive_int, metavar="POINTS",
                   help="a grid instead of TPE: every combination, POINTS values per range (the pruning check)")
    p.add_argument("--search-only", nargs="+", metavar="KNOB",
                   help="search only these knobs (e.g. weight_decay la_tau), the others at their defaults")
    p.add_argument("--search-seed", type=int, default=0, help="the sampler's seed (default: 0)")
    p.add_argument("--heartbeat", type=cli.positive_int, default=30, metavar="SECONDS",
                   help="a trial silent for twice this is taken as killed and retried (default: 30)")
    return p


def split_options(argv) -> tuple:
    """(7_search.py's options, 1_train.py's options)."""
    return build_parser().parse_known_args(argv)


def training_argv(train_argv: list, args) -> tuple:
    """The options every trial shares, checked by 1_train.py's own parser; and the given dests."""
    parser = plan.build_parser()
    given = cli.given_options(parser, train_argv)
    for option in plan.OPTIONS:
        if isinstance(option.search, plan.Refused) and option.dest in given:
            raise cli.UserError(f"{option.flag} is not for 7_search.py: {option.search.why}")
    objective_flags = set(criterion.DEFAULTS)
    readers = {d for recipe in args.objectives
               for d in criterion.OBJECTIVES[search_space.split_recipe(recipe)[0]].flags}
    unread = sorted(given & objective_flags - readers)
    if unread:
        raise cli.UserError(f"no objective of --objectives {' '.join(args.objectives)} takes "
                            f"{', '.join('--' + d.replace('_', '-') for d in unread)}; drop it or add the "
                            f"objective that does")
    shared = [*train_argv, "--no-progress"] + ([] if "monitor" in given else ["--monitor", "bacc"])
    base = plan.parse_args(search_space.for_objective(shared, search_space.BASELINE)
                           + ["--objective", search_space.BASELINE])
    mixing = sorted(given & {o.dest for o in plan.OPTIONS if o.mixes})
    refusing = [r for r in args.objectives
                if criterion.OBJECTIVES[search_space.split_recipe(r)[0]].loss.mixing_refusal is not None]
    if mixing and refusing:
        raise cli.UserError(f"{' and '.join('--' + m for m in mixing)} cannot train {', '.join(refusing)} (not a mean "
                            f"of per-sample losses, see criterion.py); drop them from --objectives, or drop "
                            f"{' and '.join('--' + m for m in mixing)} (the search draws mixup where it applies)")
    return shared, base, given


def known_knobs(recipes_: list) -> set:
    return {h.dest for recipe in recipes_ for h in search_space.recipe_knobs(recipe)}


def unsearchable(finetune: str) -> set:
    """--finetune linear trains on features computed once, unaugmented: mixup is never drawn."""
    return {"mixup"} if finetune == "linear" else set()


def check_seeds(seeds: list, search_seed: int):
    if len(set(seeds)) != len(seeds):
        raise cli.UserError(f"--seeds {' '.join(map(str, seeds))}: a seed is repeated")
    if search_seed in seeds:
        raise cli.UserError(f"--seeds must be fresh: the search trains with --seed {search_seed}; "
                            f"drop it from --seeds or pass another --seed")


def fingerprint(base, args) -> dict:
    """What makes two commands the same search (paths and where it runs left out)."""
    settings = recipes.recipe_settings(json.loads(json.dumps(vars(base), default=str)))
    settings.pop("objective", None)
    return {"training": settings, "recipes": args.objectives, "trials": args.trials, "minutes": args.minutes,
            "seeds": args.seeds, "finalists": args.finalists, "pruner": args.pruner,
            "min_resource": args.min_resource, "reduction_factor": args.reduction_factor, "grid": args.grid,
            "search_only": args.search_only,
            "search_seed": args.search_seed}


def new_settings(args, train_argv) -> search_storage.Settings:
    for recipe in args.objectives:
        search_space.split_recipe(recipe)
    if len(set(args.objectives)) != len(args.objectives):
        raise cli.UserError("--objectives: a recipe is repeated")
    shared, base, given = training_argv(train_argv, args)
    unknown = sorted(set(args.search_only or ()) - known_knobs(args.objectives))
    if unknown:
        raise cli.UserError(f"--search-only {' '.join(unknown)}: not a knob of these recipes; see --space")
    check_seeds(args.seeds, base.seed)
    data.scan_dataset(data.dataset_dir(base.data_root, base.dataset), ("train", "valid"))
    fixed = sorted(given | (known_knobs(args.objectives) - set(args.search_only) if args.search_only else set())
                   | unsearchable(base.finetune))
    if args.grid and args.trials is None:
        args.trials = len(search_space.grid(args.objectives, set(fixed), args.grid))
    if args.trials is None and args.minutes is None:
        args.trials = 40
    args.min_resource = args.min_resource or max(1, base.epochs // 2)  # docs/search.md: earlier values mislead
    return search_storage.Settings(
        storage=args.storage or "", study=args.study_name, search_dir="", train_argv=shared, recipes=args.objectives,
        fixed=fixed, dataset=base.dataset, epochs=base.epochs, seed=base.seed, trials=args.trials,
        minutes=args.minutes, seeds=args.seeds, finalists=args.finalists, pruner=args.pruner,
        min_resource=args.min_resource, reduction_factor=args.reduction_factor, heartbeat=args.heartbeat,
        search_seed=args.search_seed, grid=args.grid, fingerprint=fingerprint(base, args), jobs=args.jobs)


def start(args, train_argv) -> search_storage.Settings:
    """A new search, or one joined in --storage: everything checked before the folder is made."""
    settings = new_settings(args, train_argv)
    logs_root = plan.parse_args([*settings.train_argv, "--objective", search_space.BASELINE]).logs_root
    if settings.storage:
        storage, study = search_storage.open_study(settings, create=True)
        settings.joined = study is not None
    folder = runs.new_dated_dir(Path(logs_root) / "search" / settings.dataset, "a search folder")
    settings.search_dir, settings.runs_root = str(folder), str(folder / "runs")  # the user's logs/ left as it was
    if not settings.storage:
        settings.storage = str(folder / "study.journal")
        storage, study = search_storage.open_study(settings, create=True)
    if study is None:
        search_storage.create_study(settings, storage)
    settings.write()
    return settings


def run_workers(settings: search_storage.Settings, jobs: int):
    """`jobs` worker processes (this one when 1), each with a GPU or its share of the cores."""
    if jobs == 1:
        search.work(settings)
        return
    gpus = torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=search.work,
                               args=(settings, i, None if gpus else max(1, cores // jobs),
                                     str(i % gpus) if gpus else None))
               for i in range(jobs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [i for i, w in enumerate(workers) if w.exitcode]
    if failed:
        raise cli.UserError(f"worker(s) {', '.join(map(str, failed))} stopped with an error (see above); "
                            f"continue with: python 7_search.py --resume {settings.search_dir}")


def body(argv=None) -> int:
    args, train_argv = split_options(argv)
    if args.space:
        for recipe in args.objectives:
            search_space.split_recipe(recipe)
        fixed = cli.given_options(plan.build_parser(), train_argv)
        fixed |= known_knobs(args.objectives) - set(args.search_only) if args.search_only else set()
        fixed |= unsearchable(plan.build_parser().parse_known_args(train_argv)[0].finetune)
        print(search_space.describe_space(args.objectives, fixed))
        return 0
    if args.resume:
        if train_argv:
            raise cli.UserError(f"--resume continues a search with its own arguments; drop {' '.join(train_argv)}")
        settings = search_storage.Settings.read(args.resume)
        search_storage.open_study(settings, create=False)
        print(f"resuming the search in {settings.search_dir}")
    else:
        settings = start(args, train_argv)
        print(f"search folder: {settings.search_dir} (storage {settings.storage}, study {settings.study})")
    settings.jobs = args.jobs
    print(search_budget.opening_line(settings, search_storage.load(settings, settings.study).user_attrs["started"]))
    run_workers(settings, args.jobs)
    search_report.write_results(settings)
    return 0


def main(argv=None) -> int:
    return cli.run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
