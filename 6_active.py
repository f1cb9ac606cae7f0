"""Active learning in rounds: ask a person to label the pool images the model is least sure of, let
the model label the confident rest itself, ingest both as a new dataset version, train again; or
simulate such rounds on a labelled dataset to see whether a strategy pays.

    python 6_active.py --run logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 --pool unlabelled/ --budget 50
    python 6_active.py --ingest RUN_DIR/active-2026-11-23-10-00-00/queries.csv --dataset digits-lt \\
        --into digits-lt-r1 --pseudo RUN_DIR/active-2026-11-23-10-00-00/pseudo_labels.csv
    python 6_active.py --simulate --dataset digits-lt --initial 0.2 --budget 40 --rounds 4 \\
        --acquisition entropy entropy-balanced random --seeds 0 1 2 --model_index 42 --epochs 15 --warmup

A query writes queries.csv (fill in its label column) and pseudo_labels.csv into
RUN_DIR/active-<YYYY-MM-DD-HH-MM-SS>/; a simulation writes logs/active/NAME/<YYYY-MM-DD-HH-MM-SS>/
(see README.md).
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

from toolkit import acquisition, arguments, cli, dataset_versions, engine, pool, simulation
from toolkit.cli import counted

MODES = ("--ingest", "--simulate")


def add_pseudo_rule(p):
    p.add_argument("--pseudo-threshold", type=cli.number_in(0.0, 1.0, low_open=True),
                   default=acquisition.PSEUDO_THRESHOLD, metavar="P",
                   help="pseudo-label an image when its top probability is at least P, FixMatch's threshold "
                        f"(default: {acquisition.PSEUDO_THRESHOLD})")
    p.add_argument("--pseudo-alpha", type=cli.non_negative_float, default=acquisition.PSEUDO_ALPHA, metavar="A",
                   help="CReST's per-class cap: the class of count rank l keeps (N_{L+1-l}/N_1)^A of its candidates, "
                        "so the rarest keeps all and the most frequent fewest; 0: no cap (default: 1/3)")


def query_parser():
    p = cli.ArgumentParser(prog="6_active.py", description=(
        "Query a pool: which unlabelled images to label next (queries.csv) and which the model labels itself "
        "(pseudo_labels.csv). Other modes: 6_active.py --ingest --help, 6_active.py --simulate --help."))
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR",
                   help="a run directory of 1_train.py; its best checkpoint predicts the pool")
    p.add_argument("--pool", type=Path, required=True, metavar="DIR",
                   help="folder of unlabelled images (searched recursively); images the run's dataset already "
                        "holds (same content) are skipped")
    p.add_argument("--budget", type=cli.positive_int, required=True, metavar="K", help="images to query")
    p.add_argument("--acquisition", choices=acquisition.ACQUISITIONS, default="entropy",
                   help="entropy, margin (1 - top-1 + top-2), least-confidence (1 - top-1), random, kcenter "
                        "(greedy core-set on penultimate-layer features) (default: entropy)")
    p.add_argument("--balance", action="store_true",
                   help="spread the budget over the predicted classes in inverse proportion to their training "
                        "counts, so that rare classes get queried")
    add_pseudo_rule(p)
    p.add_argument("--seed", type=int, default=0, help="seed of --acquisition random (default: 0)")
    p.add_argument("--output", type=Path, metavar="OUT",
                   help="folder for queries.csv and pseudo_labels.csv (default: RUN_DIR/active-<YYYY-MM-DD-HH-MM-SS>/)")
    p.add_argument("--data-root", type=Path,
                   help="folder holding the run's dataset (default: the one it was trained from)")
    arguments.add_batchsize(p)
    arguments.add_device(p, precision="fp32")
    arguments.add_threads(p)
    arguments.add_workers(p, at_least_one=True)
    arguments.add_cache(p)
    arguments.add_progress(p)
    return p


def ingest_parser():
    p = cli.ArgumentParser(prog="6_active.py --ingest", description=(
        "Build a new dataset version: NAME's splits plus the labelled rows (and pseudo-labelled rows) in train/."))
    p.add_argument("--ingest", type=Path, required=True, metavar="LABELLED.csv",
                   help="queries.csv with its label column filled in (rows with an empty label are left out)")
    arguments.add_dataset(p, required=True, help="the dataset to extend (never modified)")
    p.add_argument("--into", type=cli.dataset_name, required=True, metavar="NEW",
                   help="the new dataset's folder name in the data root")
    p.add_argument("--pseudo", type=Path, metavar="PSEUDO.csv",
                   help="also add these pseudo-labelled rows (pseudo_labels.csv); a person's label wins")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NEW")
    arguments.add_roots(p, logs=False)
    arguments.add_workers(p, at_least_one=True)
    arguments.add_progress(p)
    return p


def simulate_parser():
    p = cli.ArgumentParser(prog="6_active.py --simulate", description=(
        "Simulate active-learning rounds on a labelled dataset: its training labels hidden but a fraction, "
        "revealed as the strategies query them. Every other argument is a training argument of 1_train.py "
        "(--model_index is required; see python 1_train.py --help)."))
    p.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)  # the mode, named in prog
    arguments.add_dataset(p, required=True, help="a labelled dataset in the data root")
    p.add_argument("--initial", type=cli.number_in(0.0, 1.0, low_open=True, high_open=True), required=True, metavar="F",
                   help="fraction of each class's training images labelled at the start (at least one)")
    p.add_argument("--budget", type=cli.positive_int, required=True, metavar="K", help="queries per round")
    p.add_argument("--rounds", type=cli.positive_int, required=True, metavar="R", help="rounds after the start")
    p.add_argument("--acquisition", nargs="+", default=["entropy", "random"], metavar="A",
                   help=f"strategies: {', '.join(acquisition.ACQUISITIONS)}, each also with the suffix "
                        f"{acquisition.BALANCED} (e.g. entropy{acquisition.BALANCED}: the budget balanced as by "
                        f"--balance) (default: entropy random)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                   help="seeds: the start, the training, random's draws (default: 0)")
    p.add_argument("--pseudo", action="store_true",
                   help="train each round also on the pool's pseudo-labels (from the previous round's model)")
    add_pseudo_rule(p)
    arguments.add_roots(p)
    arguments.add_progress(p)
    return p


def mode(argv: list) -> str:
    given = [m for m in MODES if any(token == m or token.startswith(m + "=") for token in argv)]
    if len(given) > 1:
        raise cli.UserError("--ingest and --simulate are separate modes; give one of them")
    return given[0][2:] if given else "query"


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = mode(argv)
    if "-h" in argv or "--help" in argv:  # `--ingest --help` has no LABELLED.csv yet
        argv = ["--help"]
    if chosen == "simulate":
        args, rest = simulate_parser().parse_known_args(argv)
        if "--balance" in rest:
            raise cli.UserError(f"--balance: in --simulate, name the balanced strategy instead, e.g. "
                                f"--acquisition entropy entropy{acquisition.BALANCED} random")
        for name in args.acquisition:
            acquisition.parse_strategy(name)
        if len(set(args.acquisition)) < len(args.acquisition) or len(set(args.seeds)) < len(args.seeds):
            raise cli.UserError("--acquisition and --seeds: name each strategy and seed once")
        args.train_argv = rest
    elif chosen == "ingest":
        args = ingest_parser().parse_args(argv)
    else:
        args = query_parser().parse_args(argv)
    args.mode = chosen
    return args


def query_settings(args) -> pool.QuerySettings:
    """The query's settings: the arguments of the same names."""
    names = [f.name for f in dataclasses.fields(pool.QuerySettings) if f.name != "progress"]
    return pool.QuerySettings(**{name: getattr(args, name) for name in names}, progress=not args.no_progress)


def query(args) -> int:
    engine.use_threads(args.threads)
    found = pool.query_pool(query_settings(args))
    scanned, dataset = found.pool, found.dataset
    output = args.output or args.run / f"active-{time.strftime('%Y-%m-%d-%H-%M-%S')}"
    pool.write_query(output, found)
    print(f"{found.predictor.path}: {counted(len(scanned.paths), 'pool image')} of {args.pool} predicted "
          f"(device {found.predictor.device}, precision {found.predictor.precision.name}); skipped: "
          f"{len(scanned.in_dataset)} already in {dataset.name}, {counted(len(scanned.duplicates), 'duplicate')}, "
          f"{len(scanned.unreadable)} unreadable, {counted(scanned.other_files, 'other file')}")
    for path, reason in scanned.unreadable:
        print(f"  unreadable {path}: {reason}", file=sys.stderr)
    print(f"acquisition {args.acquisition}{', balanced over the predicted classes' if args.balance else ''}; "
          f"pseudo-labels: top probability >= {args.pseudo_threshold:g} ({100 * args.pseudo_threshold:g}%), "
          f"CReST cap alpha {args.pseudo_alpha:.3g}")
    print(found.table.to_string(index=False))
    print(f"wrote {output / 'queries.csv'} ({counted(len(found.queries), 'image')} to label: fill in the label "
          f"column) and {output / 'pseudo_labels.csv'} ({counted(len(found.pseudo), 'pseudo-label')}); "
          f"probabilities in %")
    print(f"then: python 6_active.py --ingest {output / 'queries.csv'} --dataset {dataset.name} --into "
          f"{dataset.name}-r1 --pseudo {output / 'pseudo_labels.csv'}")
    return 0


def ingest(args) -> int:
    version = dataset_versions.ingest(args.ingest, args.data_root, args.dataset, args.into, pseudo_csv=args.pseudo,
                                      overwrite=args.overwrite, workers=args.workers, progress=not args.no_progress)
    added = version.counts()
    print(f"wrote {version.target}: {args.dataset}'s splits ({counted(added['original'], 'image')}) plus "
          f"{added['labelled']} labelled and {added['pseudo']} pseudo-labelled training "
          f"{cli.plural(added['labelled'] + added['pseudo'], 'image')}; split.csv says which")
    if version.pseudo_dropped:
        dropped = version.pseudo_dropped
        print(f"{counted(dropped, 'pseudo-labelled row')} {cli.plural(dropped, 'was', 'were')} also labelled by hand: "
              f"the hand label was used")
    if version.already_in:
        print(f"left out {counted(len(version.already_in), 'row')} whose image {args.dataset} already holds, e.g. "
              f"{version.already_in[0]}")
    print(f"train on it: python 1_train.py --dataset {args.into} ...")
    return 0


def simulate(args) -> int:
    plan = simulation.SimulationSettings(
        dataset=args.dataset, data_root=args.data_root, logs_root=args.logs_root, initial=args.initial,
        budget=args.budget, rounds=args.rounds, strategies=args.acquisition, seeds=args.seeds,
        train_argv=args.train_argv, pseudo=args.pseudo, threshold=args.pseudo_threshold, alpha=args.pseudo_alpha,
        progress=not args.no_progress)
    exit_code, folder, summary = simulation.simulate(plan)
    if summary is not None:
        print(f"wrote {folder}: curve.csv, curve.svg, summary.csv, queries.csv, training.log, plan.json")
    return exit_code


def body(argv=None) -> int:
    args = parse_args(argv)
    return {"query": query, "ingest": ingest, "simulate": simulate}[args.mode](args)


def main(argv=None) -> int:
    return cli.run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
