"""Train one plan: a model (--model_index) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup
    python 1_train.py --resume logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42      # continue it

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import argparse
import platform
import shutil
import sys
from pathlib import Path

import torch
import torchvision

import criterion
from toolkit import arguments, augment, cli, engine, files, runs, sampling, training

MONITORS = ("acc", "bacc", "macro_f1")
# what a resumed run may change; everything else is the run's own, from its args.json
RESUMABLE = {"resume", "epochs", "early_stop", "workers", "device", "precision", "compile", "cache_gb",
             "no_progress", "dry_run", "data_root", "logs_root"}


def build_parser():
    p = cli.ArgumentParser(prog="1_train.py", description="Train one model with one objective.")
    p.add_argument("--model_index", type=int, help="network, see `python get_model.py` (required)")
    p.add_argument("--pretrained", type=Path, metavar="PATH",
                   help="start from a local weights file: a torchvision state_dict or a .pth of this toolkit")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the classifier layer (classifier re-training on a --pretrained backbone)")
    p.add_argument("--dataset", help="dataset folder name in a_datasets/ (required)")
    arguments.add_roots(p)
    p.add_argument("--objective", default="ERM",
                   help=f"training objective: {', '.join(criterion.objective_names())} (default: ERM)")
    p.add_argument("--lr", type=cli.positive_float, default=0.1, help="initial learning rate (default: 0.1)")
    p.add_argument("--epochs", type=cli.positive_int, default=200, help="epochs (default: 200)")
    arguments.add_batchsize(p)
    arguments.add_image_size(p)
    p.add_argument("--lrstep", type=cli.positive_int, nargs="+", default=[60, 120, 160],
                   help="epochs after which the learning rate is multiplied by --lrstepgamma (default: 60 120 160)")
    p.add_argument("--lrstepgamma", type=cli.positive_float, default=0.2,
                   help="learning rate step decay factor (default: 0.2)")
    p.add_argument("--warmup", action="store_true",
                   help=f"raise the learning rate linearly over the first {training.WARMUP_EPOCHS} epochs")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default: 5e-4)")
    p.add_argument("--monitor", choices=MONITORS, default="acc",
                   help="validation metric that picks (and names) the best checkpoint (default: acc)")
    p.add_argument("--early-stop", type=cli.positive_int, metavar="N",
                   help="stop after N epochs without improvement of --monitor (default: off)")
    p.add_argument("--sampler", choices=sampling.SAMPLERS, default="instance",
                   help="instance: every image once an epoch; class: classes uniformly, then an image; sqrt: "
                        "classes in proportion to sqrt(n_c); progressive: from instance to class over the epochs "
                        "(default: instance)")
    p.add_argument("--drs", type=cli.positive_int, metavar="EPOCH",
                   help="deferred re-sampling: instance sampling until EPOCH (counted from 1), class sampling "
                        "from then on (default: off)")
    p.add_argument("--augment", choices=augment.AUGMENTATIONS, default=augment.DEFAULT,
                   help="training augmentation, on whole batches on the device: pad-crop-flip (CIFAR's 4-pixel "
                        "padded crop and flip), resized-crop-flip (RandomResizedCrop, scale 0.08-1, ratio 3/4-4/3, "
                        "and flip; the training images are cached at 8/7 of --height x --width), randaugment "
                        "(resized-crop-flip, then RandAugment), none (default: pad-crop-flip)")
    p.add_argument("--randaugment-n", type=cli.non_negative_int, default=2, metavar="N",
                   help="--augment randaugment: operations applied to each image (default: 2)")
    p.add_argument("--randaugment-m", type=augment.magnitude_bin, default=9, metavar="M",
                   help=f"--augment randaugment: magnitude, a bin from 0 to {augment.MAGNITUDE_BINS - 1} as in "
                        f"torchvision (default: 9)")
    p.add_argument("--mixup", type=cli.positive_float, metavar="ALPHA",
                   help="mixup: mix each batch with itself reversed, lambda ~ Beta(ALPHA, ALPHA), e.g. 0.2; the "
                        "objective scores lambda L(y_a) + (1 - lambda) L(y_b) (per-sample objectives only) "
                        "(default: off)")
    p.add_argument("--cutmix", type=cli.positive_float, metavar="ALPHA",
                   help="cutmix: paste a box of the reversed batch, its area 1 - lambda, lambda ~ Beta(ALPHA, "
                        "ALPHA), e.g. 1.0; with --mixup, each mixed batch is cutmix or mixup with probability 1/2 "
                        "(default: off)")
    p.add_argument("--mix-prob", type=augment.probability, default=1.0, metavar="P",
                   help="--mixup/--cutmix: the probability that a batch is mixed (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only: a rerun (or a resumed run) repeats exactly")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a run: its directory, or its YYYY-MM-DD-HH-MM-SS with --model_index and --dataset")
    arguments.add_workers(p)
    arguments.add_device(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    arguments.add_cache(p)
    p.add_argument("--dry-run", action="store_true",
                   help="check the data (every image decoded), model and objective, then stop before training")
    arguments.add_progress(p)
    criterion.add_arguments(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_augment_options(args, cli.given_options(parser, argv))
    if args.resume:
        args = resumed_args(args, cli.given_options(parser, argv), parser)
    elif args.model_index is None or args.dataset is None:
        raise cli.UserError("--model_index and --dataset are required (or --resume RUN)")
    if args.lrstep != sorted(set(args.lrstep)):
        raise cli.UserError(f"--lrstep {' '.join(map(str, args.lrstep))}: milestones must be increasing epochs, "
                            f"e.g. --lrstep 60 120 160")
    return args


def check_augment_options(args, given: set):
    """Options that only tune another one: refused alone, rather than silently doing nothing."""
    tuning = [f"--{name.replace('_', '-')}" for name in ("randaugment_n", "randaugment_m") if name in given]
    if tuning and args.augment != "randaugment" and not args.resume:
        raise cli.UserError(f"{' and '.join(tuning)} tune --augment randaugment; add --augment randaugment "
                            f"(now --augment {args.augment})")
    if "mix_prob" in given and args.mixup is None and args.cutmix is None and not args.resume:
        raise cli.UserError("--mix-prob is the probability of mixing a batch; add --mixup ALPHA and/or --cutmix ALPHA")


def resumed_args(args, given: set, parser):
    """The run's own arguments from its args.json, with the few a resumed run may change."""
    run_dir = runs.resolve_resume(args.resume, args.logs_root, args.model_index, args.dataset, recipe_name(args))
    stored = runs.read_args(run_dir)
    changed = [a.option_strings[0] for a in parser._actions
               if a.dest in given - RESUMABLE and stored.get(a.dest) != getattr(args, a.dest)]
    if changed:
        raise cli.UserError(f"a resumed run keeps its own arguments; {', '.join(changed)} cannot change "
                            f"(start a new run instead)")
    merged = {name: stored.get(name, value) for name, value in vars(args).items()}
    merged.update({name: getattr(args, name) for name in given & RESUMABLE})
    for name in ("data_root", "logs_root", "pretrained"):
        merged[name] = Path(merged[name]) if merged[name] is not None else None
    merged["resume"] = run_dir
    return argparse.Namespace(**merged)


def recipe_name(args) -> str:
    """The objective's folder name: deferred re-weighting is its own recipe, e.g. LDAM-DRW."""
    return args.objective + ("-DRW" if args.drw else "")


def train(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.deterministic:
        engine.use_deterministic_algorithms()
    distributed, device = engine.start_distributed(args.device)
    try:
        return train_on(args, distributed, device)
    finally:
        engine.stop_distributed(distributed)


def train_on(args, distributed, device):
    """Training in this process: the whole of it, or its share under torchrun."""
    main_process = distributed.is_main
    progress = not args.no_progress and main_process
    setup = training.build_setup(args, distributed, device, progress)
    record = setup.record

    if args.dry_run:
        if main_process:
            print(f"dry run: {len(setup.train)} training and {len(setup.valid)} validation images of "
                  f"{len(record.class_names)} classes read, {record.model_name} and {args.objective} built; "
                  f"nothing was trained or written")
        return 0

    run_dir, position, say = open_run(args, setup, main_process)
    if not main_process:
        return training.Trainer(args, setup, progress=False).train(position)[1]
    print(say)
    print(f"device {device}, precision {setup.engine.precision.name}, {len(record.class_names)} classes, "
          f"{len(setup.train)} training and {len(setup.valid)} validation images"
          + (f"; {distributed.world} processes of {args.batchsize} images a batch" if distributed.active else ""))
    files.write_json(run_dir / "args.json", {**vars(args), "resume": None, **record.as_dict(),
                                             "precision_used": setup.engine.precision.name,
                                             "device_used": str(device), "processes": distributed.world,
                                             "versions": versions()})
    try:
        with runs.RunLog(run_dir, position.epoch) as log:
            best, exit_code = training.Trainer(args, setup, run_dir, log, progress).train(position)
    except BaseException:
        if not args.resume and not (run_dir / "last.pth").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that never finished an epoch leaves nothing
        raise
    if exit_code:
        print(f"stopped; to continue: python 1_train.py --resume {shown_path(run_dir)}")
        return exit_code
    print(f"best valid {args.monitor} {best['value']:.2f} at epoch {best['epoch']}")
    print(f"run directory: {run_dir}")
    return 0


def open_run(args, setup: training.Setup, main_process: bool) -> tuple:
    """The run directory (continued, or created by the main process only now that all is checked),
    where training stands in it, and the line that says so."""
    if args.resume:
        position = training.restore(args.resume, setup)
        if position.epoch >= args.epochs:
            raise cli.UserError(f"{args.resume} has finished its {position.epoch} epochs; pass a larger --epochs "
                                f"to train it further")
        batch = f", batch {position.batch}" if position.batch else ""
        return args.resume, position, f"resuming {args.resume} after epoch {position.epoch}{batch}"
    run_dir = runs.new_run_dir(args.logs_root, setup.record.model_name, args.dataset, recipe_name(args)) \
        if main_process else None
    return run_dir, training.Position(), f"run directory: {run_dir}"


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def main(argv=None) -> int:
    return cli.run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())
