"""Split c_original_dataset/<name>/<class>/* into a_datasets/<name>/{train,valid,test}/<class>/* .

    python 0_data_split.py --dataset=skin            # stratified 0.7 / 0.15 / 0.15, seed 0
    python 0_data_split.py --demo                    # render and split the embedded digits-lt
    python 0_data_split.py --dataset=skin --long-tail 100   # CIFAR-LT protocol: long-tailed train, balanced valid/test
"""
import sys
from pathlib import Path

from toolkit import arguments, cli, demo_data, long_tail, splitting


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="0_data_split.py", description="Stratified, seeded train/valid/test split.")
    p.add_argument("--dataset", help="folder name in c_original_dataset/")
    p.add_argument("--demo", action="store_true",
                   help=f"render scikit-learn's digits as the long-tailed '{demo_data.NAME}' dataset and split it")
    p.add_argument("--ratio", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VALID", "TEST"),
                   help="fractions of each class for train, valid, test (default: 0.7 0.15 0.15; TEST may be 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split of this dataset")
    p.add_argument("--source-root", type=Path, default=cli.SOURCE_ROOT,
                   help="folder holding the original datasets (default: c_original_dataset/)")
    arguments.add_roots(p, logs=False)
    add_long_tail_options(p)
    args = p.parse_args(argv)
    check_long_tail_options(args)
    if args.demo == bool(args.dataset):
        raise cli.UserError("give either --dataset=NAME (a folder in c_original_dataset/) or --demo")
    train, valid, test = args.ratio
    if train <= 0 or valid <= 0 or test < 0 or abs(sum(args.ratio) - 1) > 1e-6:
        raise cli.UserError(f"--ratio {train:g} {valid:g} {test:g}: train and valid must be > 0, test >= 0, "
                            f"and they must sum to 1")
    return args


def add_long_tail_options(p):
    p.add_argument("--long-tail", type=cli.checked(cli.number, lambda r: r >= 1, "at least 1"), metavar="R",
                   help="long-tailed training split (the CIFAR-LT protocol of Cao et al. 2019): the class of rank c "
                        "keeps int(n_max * R^(-c / (C - 1))) training images; valid and test stay balanced, each "
                        "class holding --ratio's VALID and TEST shares of the smallest class; e.g. 100")
    p.add_argument("--n-max", type=cli.positive_int, metavar="N",
                   help="--long-tail: training images of the first class (default: the largest every class can give)")
    p.add_argument("--class-order", type=Path, metavar="FILE",
                   help="--long-tail: a text file of class names, one a line, the first to get n_max "
                        "(default: folder order)")


def check_long_tail_options(args):
    tuning = [flag for flag, value in (("--n-max", args.n_max), ("--class-order", args.class_order)) if value]
    if tuning and args.long_tail is None:
        raise cli.UserError(f"{' and '.join(tuning)} {'tunes' if len(tuning) == 1 else 'tune'} the profile of "
                            f"--long-tail; add --long-tail R")


def split_long_tailed(args, classes, source, target):
    rows, profile, order = long_tail.split_folder(classes, args.ratio, args.long_tail, args.n_max, args.class_order,
                                                  args.seed)
    splitting.write_split(rows, source, target, args.link, args.overwrite, {long_tail.PROFILE_FILE: profile})
    print(long_tail.describe(profile, order))
    left_out = sum(map(len, classes.values())) - len(rows)
    print(f"{len(rows)} images, {len(profile)} classes -> {target}  (imbalance ratio, largest / smallest training "
          f"class: {splitting.imbalance_ratio(profile['train']):.1f}; {left_out} image(s) left out by the profile)")
    return 0


def split(argv=None):
    args = parse_args(argv)
    if args.demo:
        args.dataset = demo_data.NAME
        demo_data.write_demo(args.source_root)
    source = args.source_root / args.dataset
    target = args.data_root / args.dataset
    classes = splitting.source_classes(source)
    if args.long_tail is not None:
        return split_long_tailed(args, classes, source, target)
    rows, too_small = splitting.assign(classes, args.ratio, args.seed)
    if not rows:
        raise cli.UserError(f"no class of {source} has enough images to split (each needs one per split)")
    splitting.write_split(rows, source, target, args.link, args.overwrite)

    table = splitting.count_table(rows, [c for c in classes if c not in too_small])
    print(table.to_string())
    print(f"{len(rows)} images, {len(table)} classes -> {target}  "
          f"(imbalance ratio, largest / smallest training class: {splitting.imbalance_ratio(table['train']):.1f})")
    for name, count in too_small.items():
        print(f"left out: class '{name}' has {count} image(s); it needs at least one per split")
    return 0


def main(argv=None) -> int:
    return cli.run_main(split, argv)


if __name__ == "__main__":
    sys.exit(main())
