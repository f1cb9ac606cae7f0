"""Split c_original_dataset/<name>/<class>/* into a_datasets/<name>/{train,valid,test}/<class>/* .

    python 0_data_split.py --dataset=skin            # stratified 0.7 / 0.15 / 0.15, seed 0
    python 0_data_split.py --demo                    # render and split the embedded digits-lt
    python 0_data_split.py --demo --long-tail 100    # every digit, cut to the CIFAR-LT protocol: digits-lt100
    python 0_data_split.py --dataset=skin --long-tail 100   # CIFAR-LT protocol: long-tailed train, balanced valid/test
    python 0_data_split.py --from-torchvision CIFAR10 --root ~/data --dataset cifar10-lt --long-tail 100
    python 0_data_split.py --labels c_original_dataset/defects/labels.csv --group-column wafer   # labels in a file
    python 0_data_split.py --demo-labels             # the digits as real sets ship: images/ + labels.csv, by scan
"""
import sys
from pathlib import Path

from toolkit import arguments, benchmark_sets, cli, demo_data, label_files, long_tail, splitting


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="0_data_split.py", description="Stratified, seeded train/valid/test split.")
    arguments.add_dataset(p, where="c_original_dataset/")
    p.add_argument("--demo", action="store_true",
                   help=f"render scikit-learn's digits as the long-tailed '{demo_data.NAME}' dataset and split it; "
                        f"with --long-tail R, render all of them (balanced, '{demo_data.BALANCED_NAME}') and split "
                        f"them to the profile as '{demo_data.BALANCED_NAME}-ltR'")
    p.add_argument("--ratio", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VALID", "TEST"),
                   help="fractions of each class for train, valid, test (default: 0.7 0.15 0.15; TEST may be 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split of this dataset")
    p.add_argument("--source-root", type=Path, default=cli.SOURCE_ROOT,
                   help="folder holding the original datasets (default: c_original_dataset/)")
    arguments.add_roots(p, logs=False)
    add_long_tail_options(p)
    add_torchvision_options(p)
    add_label_file_options(p)
    arguments.add_workers(p, at_least_one=True)
    args = p.parse_args(argv)
    check_long_tail_options(args)
    check_torchvision_options(args, "ratio" in cli.given_options(p, argv))
    check_label_file_options(args, cli.given_options(p, argv))
    if args.labels is None and args.demo == bool(args.dataset):
        raise cli.UserError("give either --dataset=NAME (a folder in c_original_dataset/), --labels FILE or --demo")
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


def add_torchvision_options(p):
    p.add_argument("--from-torchvision", metavar="NAME", choices=benchmark_sets.PARTS,
                   help=f"split a benchmark already on disk in its published format, read by torchvision.datasets.NAME "
                        f"(never downloaded): {', '.join(benchmark_sets.PARTS)}; its test set is the test split, "
                        f"validation is carved from its training set (--ratio TRAIN VALID 0; default 0.9 0.1 0); "
                        f"written as a_datasets/<--dataset>/")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="--from-torchvision: the folder given to torchvision as root= "
                        "(it holds e.g. cifar-10-batches-py/)")


def add_label_file_options(p):
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="a CSV or TSV file of image paths and labels (paths relative to the file's folder, or "
                        "absolute); written as a_datasets/<--dataset>/ (default: the file's folder name)")
    p.add_argument("--path-column", default="path", metavar="COL", help="--labels: the column of paths (default: path)")
    p.add_argument("--label-column", default="label", metavar="COL",
                   help="--labels: the column of labels (default: label)")
    p.add_argument("--group-column", metavar="COL",
                   help="--labels: images sharing a value of COL (a patient, a wafer, a video) go to one split, "
                        "stratified by class as far as the groups allow (scikit-learn's StratifiedGroupKFold)")
    p.add_argument("--demo-labels", action="store_true",
                   help=f"render the demo digits as real sets ship (images/ and labels.csv, three views of each "
                        f"scan) and split them by scan as '{demo_data.LABELLED_NAME}'")


def check_label_file_options(args, given: set):
    if args.demo_labels:
        if args.labels or args.demo:
            raise cli.UserError("--demo-labels makes its own label file; leave out --labels and --demo")
        args.labels = demo_data.labelled_file(args.source_root)  # rendered by split(), not while parsing
        args.group_column = args.group_column or demo_data.GROUP_COLUMN
        args.dataset = args.dataset or demo_data.LABELLED_NAME
    if args.labels is None:
        tuning = [f"--{o.replace('_', '-')}" for o in ("path_column", "label_column", "group_column") if o in given]
        if tuning:
            raise cli.UserError(f"{', '.join(tuning)} name columns of a label file; add --labels FILE")
        return
    if args.demo or args.from_torchvision:
        raise cli.UserError("--labels FILE is the source of the split; leave out --demo and --from-torchvision")
    if args.group_column and args.long_tail is not None:
        raise cli.UserError("--group-column and --long-tail: the long-tail protocol cuts images, not groups; "
                            "drop one of them")
    args.dataset = args.dataset or args.labels.resolve().parent.name


TORCHVISION_VALID_SHARE = 0.1


def check_torchvision_options(args, ratio_given: bool):
    if args.from_torchvision is None:
        if args.root is not None:
            raise cli.UserError("--root is the folder of --from-torchvision NAME; add --from-torchvision NAME")
        return
    name = args.from_torchvision
    if args.root is None or args.dataset is None or args.demo:
        raise cli.UserError(f"--from-torchvision {name} needs --root DIR (what torchvision was given as root=) and "
                            f"--dataset OUT (the folder to write in a_datasets/), and no --demo")
    if args.link:
        raise cli.UserError(f"--from-torchvision {name} writes each image as a PNG; there are no image files to "
                            f"--link, drop it")
    if ratio_given and args.ratio[2] != 0:
        raise cli.UserError(f"--ratio {' '.join(f'{r:g}' for r in args.ratio)}: with --from-torchvision the test split "
                            f"is {name}'s published test set; give --ratio TRAIN VALID 0")
    args.valid_share = args.ratio[1] / sum(args.ratio[:2]) if ratio_given else TORCHVISION_VALID_SHARE


def split_torchvision(args):
    target = args.data_root / args.dataset
    parts = benchmark_sets.open_parts(args.from_torchvision, args.root)
    rows, profile, order = benchmark_sets.assign(parts, args.valid_share, args.long_tail, args.n_max,
                                                 args.class_order, args.seed)
    side_files = {long_tail.PROFILE_FILE: profile} if profile is not None else {}
    benchmark_sets.write_split(rows, parts, target, args.overwrite, side_files)
    if profile is not None:
        print(long_tail.describe(profile, order))
    else:
        print(splitting.count_table(rows, list(dict.fromkeys(name for _, name, _ in rows))).to_string())
    left_out = sum(map(len, parts)) - len(rows)
    print(f"{args.from_torchvision} from {args.root}: {len(rows)} images -> {target}  (test: the published test set; "
          f"{left_out} image(s) left out)")
    return 0


def split_long_tailed(args, classes, source, target, unreadable, labelled=None):
    rows, profile, order = long_tail.split_folder(classes, args.ratio, args.long_tail, args.n_max, args.class_order,
                                                  args.seed)
    splitting.write_split(rows, source, target, args.link, args.overwrite, {long_tail.PROFILE_FILE: profile},
                          labelled)
    print(long_tail.describe(profile, order))
    left_out = sum(map(len, classes.values())) - len(rows)
    print(f"{len(rows)} images, {len(profile)} classes -> {target}  (imbalance ratio, largest / smallest training "
          f"class: {splitting.imbalance_ratio(profile['train']):.1f}; {left_out} image(s) left out by the profile)")
    report_unreadable(unreadable)
    return 0


def report_unreadable(unreadable):
    for path, why in unreadable:
        print(f"left out: {path} does not decode ({why}); replace it and split again to use it")


def demo_source(args):
    """Render the demo's images if they are not there yet; (source folder, target folder). The
    long-tail protocol needs a balanced source, so --long-tail R renders every digit and names the
    split digits-ltR."""
    if args.long_tail is None:
        return demo_data.write_demo(args.source_root), args.data_root / demo_data.NAME
    return (demo_data.write_all(args.source_root),
            args.data_root / f"{demo_data.BALANCED_NAME}-lt{args.long_tail:g}")


def split(argv=None):
    args = parse_args(argv)
    if args.from_torchvision:
        return split_torchvision(args)
    if args.demo_labels:
        demo_data.write_labelled(args.source_root)
    if args.labels:
        labelled = label_files.read_labels(args.labels, args.path_column, args.label_column, args.group_column)
        source, target, classes = labelled.base, args.data_root / args.dataset, labelled.classes
    else:
        labelled = None
        source, target = demo_source(args) if args.demo else (args.source_root / args.dataset,
                                                                args.data_root / args.dataset)
        classes = splitting.source_classes(source)
        splitting.refuse_single_class(list(classes), source)  # before every image is decoded
    classes, unreadable = splitting.readable_only(classes, args.workers)
    if args.long_tail is not None:
        return split_long_tailed(args, classes, source, target, unreadable, labelled)
    if labelled and labelled.groups is not None:
        rows, too_small = label_files.assign_groups(classes, labelled.groups, args.ratio, args.seed), {}
    else:
        rows, too_small = splitting.assign(classes, args.ratio, args.seed)
    if not rows:
        raise cli.UserError(f"no class of {source} has enough images to split (each needs one per split)")
    kept = [c for c in classes if c not in too_small]
    splitting.refuse_single_class(kept, source, from_label_file=labelled is not None)
    splitting.write_split(rows, source, target, args.link, args.overwrite, labelled=labelled)

    table = splitting.count_table(rows, kept)
    print(table.to_string())
    if labelled and labelled.groups is not None:
        print(label_files.describe_groups(rows, labelled.groups, args.group_column))
    print(f"{len(rows)} images, {len(table)} classes -> {target}  "
          f"(imbalance ratio, largest / smallest training class: {splitting.imbalance_ratio(table['train']):.1f})")
    for name, count in too_small.items():
        print(f"left out: class '{name}' has {cli.counted(count, 'image')}; it needs at least one per split")
    report_unreadable(unreadable)
    return 0


def main(argv=None) -> int:
    return cli.run_main(split, argv)


if __name__ == "__main__":
    sys.exit(main())
