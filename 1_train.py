"""Train one plan: a model (--model_index) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup
    python 1_train.py --resume logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42      # continue it

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import argparse
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torchvision

import criterion
import get_model
from toolkit import cli, engine, loader, metrics, plots, runs

MONITORS = ("acc", "bacc", "macro_f1")
WARMUP_EPOCHS = 5
# what a resumed run may change; everything else is the run's own, from its args.json
RESUMABLE = {"resume", "epochs", "early_stop", "workers", "device", "precision", "compile", "cache_gb",
             "no_progress", "dry_run", "data_root", "logs_root"}


def build_parser():
    p = cli.ArgumentParser(prog="1_train.py", description="Train one model with one objective.")
    p.add_argument("--model_index", type=int, help="network, see `python get_model.py` (required)")
    p.add_argument("--dataset", help="dataset folder name in a_datasets/ (required)")
    p.add_argument("--objective", default="ERM",
                   help=f"training objective: {', '.join(criterion.objective_names())} (default: ERM)")
    p.add_argument("--lr", type=cli.positive_float, default=0.1, help="initial learning rate (default: 0.1)")
    p.add_argument("--epochs", type=cli.positive_int, default=200, help="epochs (default: 200)")
    p.add_argument("--batchsize", type=cli.positive_int, default=128, help="batch size (default: 128)")
    p.add_argument("--height", type=cli.positive_int, default=32, help="image height (default: 32)")
    p.add_argument("--width", type=cli.positive_int, default=32, help="image width (default: 32)")
    p.add_argument("--lrstep", type=cli.positive_int, nargs="+", default=[60, 120, 160],
                   help="epochs after which the learning rate is multiplied by --lrstepgamma (default: 60 120 160)")
    p.add_argument("--lrstepgamma", type=cli.positive_float, default=0.2,
                   help="learning rate step decay factor (default: 0.2)")
    p.add_argument("--warmup", action="store_true",
                   help=f"raise the learning rate linearly over the first {WARMUP_EPOCHS} epochs")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default: 5e-4)")
    p.add_argument("--monitor", choices=MONITORS, default="acc",
                   help="validation metric that picks (and names) the best checkpoint (default: acc)")
    p.add_argument("--early-stop", type=cli.positive_int, metavar="N",
                   help="stop after N epochs without improvement of --monitor (default: off)")
    p.add_argument("--sampler", choices=loader.SAMPLERS, default="instance",
                   help="instance: every image once an epoch; class: classes uniformly, then an image; sqrt: "
                        "classes in proportion to sqrt(n_c); progressive: from instance to class over the epochs "
                        "(default: instance)")
    p.add_argument("--drs", type=cli.positive_int, metavar="EPOCH",
                   help="deferred re-sampling: instance sampling until EPOCH (counted from 1), class sampling "
                        "from then on (default: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only: a rerun (or a resumed run) repeats exactly")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a run: its directory, or its YYYY-MM-DD-HH-MM-SS with --model_index and --dataset")
    p.add_argument("--workers", type=cli.non_negative_int, default=2,
                   help="threads/processes decoding images (default: 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CPUs and GPUs that run it natively, fp16 on older GPUs, else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    p.add_argument("--cache-gb", type=cli.positive_float, default=4.0,
                   help="hold decoded splits in memory up to this size, else stream from disk (default: 4)")
    p.add_argument("--pretrained", type=Path, metavar="PATH",
                   help="start from a local weights file: a torchvision state_dict or a .pth of this toolkit")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the classifier layer (classifier re-training on a --pretrained backbone)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the data (every image decoded), model and objective, then stop before training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    cli.add_root_arguments(p)
    criterion.add_arguments(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        args = resumed_args(args, cli.given_options(parser, argv), parser)
    elif args.model_index is None or args.dataset is None:
        raise cli.UserError("--model_index and --dataset are required (or --resume RUN)")
    if args.lrstep != sorted(set(args.lrstep)):
        raise cli.UserError(f"--lrstep {' '.join(map(str, args.lrstep))}: milestones must be increasing epochs, "
                            f"e.g. --lrstep 60 120 160")
    return args


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
    run, train_set, valid_set, about = prepare(args, distributed, device, progress)
    class_names, model_name, precision = about["class_names"], about["model_name"], run.precision

    if args.dry_run:
        if main_process:
            print(f"dry run: {len(train_set)} training and {len(valid_set)} validation images of "
                  f"{len(class_names)} classes read, {model_name} and {args.objective} built; "
                  f"nothing was trained or written")
        return 0

    # the run directory: continued, or created (by the main process) only now that all is checked
    if args.resume:
        run_dir = args.resume
        done = restore(run_dir, run, about)
        if done["epoch"] >= args.epochs:
            raise cli.UserError(f"{run_dir} has finished its {done['epoch']} epochs; pass a larger --epochs "
                                f"to train it further")
        say = f"resuming {run_dir} after epoch {done['epoch']}" + (f", batch {done['batch']}" if done["batch"] else "")
    else:
        run_dir = runs.new_run_dir(args.logs_root, model_name, args.dataset, recipe_name(args)) if main_process else None
        done = {"epoch": 0, "batch": 0, "best": {"value": float("-inf"), "epoch": 0}}
        say = f"run directory: {run_dir}"
    if not main_process:
        return train_epochs(args, run, None, about, train_set, valid_set, None, done, progress)[1]
    print(say)
    print(f"device {device}, precision {precision.name}, {len(class_names)} classes, "
          f"{len(train_set)} training and {len(valid_set)} validation images"
          + (f"; {distributed.world} processes of {args.batchsize} images a batch" if distributed.active else ""))
    record = {**vars(args), "resume": None, **about, "precision_used": precision.name, "device_used": str(device),
              "processes": distributed.world, "versions": versions()}
    try:
        runs.write_json(run_dir / "args.json", record)
        with runs.RunLog(run_dir, done["epoch"]) as log:
            best, exit_code = train_epochs(args, run, run_dir, about, train_set, valid_set, log, done, progress)
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


def prepare(args, distributed, device, progress) -> tuple:
    """Data, model, objective and optimisers, all checked before anything is written: the Engine,
    the training and validation image sets, and what every checkpoint records about the run."""
    dataset = loader.dataset_dir(args.data_root, args.dataset)
    splits = loader.scan_dataset(dataset, ("train", "valid"))
    class_names = splits["train"].class_names
    class_counts = splits["train"].class_counts()

    loss = criterion.build_criterion(args.objective, class_counts, args)
    model_name = get_model.model_name(args.model_index)
    model = get_model.build_model(args.model_index, len(class_names), args.height, args.width)
    model = loss.adapt_model(model)
    cosine_scale = get_model.cosine_scale(model)
    if args.pretrained and not args.resume:
        found = get_model.load_pretrained(model, args.pretrained)
        if distributed.is_main:
            print(f"pretrained {args.pretrained}: {found['loaded']} tensors loaded, {found['skipped']} skipped, "
                  f"{found['initialised']} newly initialised")
    if args.freeze_backbone:
        get_model.freeze_backbone(model)

    train_set = loader.load_images(splits["train"], args.height, args.width, device, args.cache_gb,
                                   args.workers, progress)
    valid_set = loader.load_images(splits["valid"], args.height, args.width, device, args.cache_gb,
                                   args.workers, progress)
    mean, std = loader.training_stats(train_set, args.height, args.width)

    model = engine.prepare_model(model, device)
    loss = loss.to(device)
    steps = len(loss.step_losses())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizers = tuple(torch.optim.SGD([{"params": trainable, "initial_lr": args.lr}], lr=args.lr,
                                       momentum=args.momentum, weight_decay=args.weight_decay)
                       for _ in range(steps))
    schedule = engine.lr_schedule(args.lrstep, args.lrstepgamma, WARMUP_EPOCHS if args.warmup else 0)
    precision = engine.pick_precision(args.precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    forward = engine.wrap_for_distribution(model, distributed, device)
    forward = torch.compile(forward) if args.compile else forward
    run = engine.Engine(model, loss, loader.Normalise(mean, std).to(device), device, precision,
                        optimizers, schedule, scaler, forward, distributed)
    about = {"model_index": args.model_index, "model_name": model_name, "dataset": args.dataset,
             "objective": args.objective, "class_names": class_names, "class_counts": class_counts,
             "height": args.height, "width": args.width, "mean": mean, "std": std,
             "cosine_scale": cosine_scale, "monitor": args.monitor}
    return run, train_set, valid_set, about


def train_epochs(args, run, run_dir, about, train_set, valid_set, log, done, progress) -> tuple:
    """The epoch loop, from where `done` says; returns the best {value, epoch} and the exit code
    (0, or 130/143 when Ctrl-C or SIGTERM stopped it). Only the main process (the one with a
    `log`) writes; under torchrun every process trains its share and sees the same validation."""
    best = done["best"]
    unfinished = engine.EpochProgress(done["batch"], done["epoch_sums"]) if done["batch"] else None
    rank, world = run.distributed.rank, run.distributed.world
    with cli.StopSignals() as stop:
        for epoch in range(done["epoch"], args.epochs):
            if run.distributed.agree(stop.requested, 0):
                break
            started = time.monotonic()
            order = loader.epoch_order(train_set.labels, args.seed, epoch, args.sampler, args.epochs, args.drs,
                                       rank, world)
            order = loader.drop_single_last(order, args.batchsize)
            generator = loader.epoch_generator(args.seed + rank, epoch, run.device)
            if unfinished:
                generator.set_state(done["generator"])
            train_row, unfinished = run.train_epoch(train_set, order, args.batchsize, generator, epoch, args.epochs,
                                                    args.workers, progress, unfinished, stop.requested)
            if train_row is None:  # stopped mid-epoch: save exactly where
                if log:
                    save_last(run_dir, run, about, epoch, best, unfinished, generator)
                break
            labels, logits = run.predict(valid_set, args.batchsize, args.workers, progress, desc="validate")
            valid_row = {"epoch": epoch + 1, **metrics.epoch_metrics(labels, logits), "lr": train_row["lr"]}
            improved = valid_row[args.monitor] > best["value"]
            if improved:
                best = {"value": valid_row[args.monitor], "epoch": epoch + 1}
            if log:
                record_epoch(args, run, run_dir, about, log, train_row, valid_row, best, improved)
                print(summary_line(train_row, valid_row, args.epochs, time.monotonic() - started, improved))
            if args.early_stop and epoch + 1 - best["epoch"] >= args.early_stop:
                if log:
                    print(f"early stop: valid {args.monitor} has not improved for {args.early_stop} epochs "
                          f"(best {best['value']:.2f} at epoch {best['epoch']})")
                break
    return best, stop.exit_code if stop.requested() or unfinished else 0


def record_epoch(args, run, run_dir, about, log, train_row, valid_row, best, improved):
    """Logs, the best checkpoint when it improved, last.pth and curves.svg, after an epoch."""
    log.log("train", train_row)
    log.log("valid", valid_row)
    if improved:
        runs.save_best(run_dir, best["value"], {**about, "epoch": best["epoch"], "value": best["value"],
                                                "model": run.model.state_dict()})
    save_last(run_dir, run, about, train_row["epoch"], best)
    plots.training_curves(*log.frames(), run_dir / "curves.svg", monitor=args.monitor)


def save_last(run_dir, run, about, epoch, best, unfinished=None, generator=None):
    """last.pth: everything a resume needs, after `epoch` epochs (and `unfinished.batch` batches)."""
    state = {**about, "epoch": epoch, "best": best, "model": run.model.state_dict(),
             "optimizers": [o.state_dict() for o in run.optimizers],
             "scaler": run.scaler.state_dict() if run.scaler else None,
             "criterion": run.criterion.state_dict(), "rng": runs.rng_states(),
             "batch": unfinished.batch if unfinished else 0,
             "epoch_sums": unfinished.sums if unfinished else None,
             "generator": generator.get_state() if unfinished else None}
    runs.save_checkpoint(run_dir / "last.pth", state)


def restore(run_dir, run, about) -> dict:
    """Load last.pth into the engine; returns where training stands."""
    path = run_dir / "last.pth"
    if not path.exists():
        raise cli.UserError(f"{run_dir} has no last.pth (it stopped before finishing an epoch); start a new run")
    state = runs.load_checkpoint(path)
    try:
        runs.check_resumable(state, about["model_index"], about["class_names"])
    except cli.UserError as e:
        raise cli.UserError(f"cannot resume {run_dir}: {e}") from None
    run.model.load_state_dict(state["model"])
    for optimizer, saved in zip(run.optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
    if run.scaler and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    run.criterion.load_state_dict(state["criterion"])
    runs.restore_rng_states(state["rng"])
    return state


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary_line(train_row, valid_row, epochs, seconds, improved) -> str:
    return (f"epoch {train_row['epoch']:>3}/{epochs}  train loss {train_row['loss']:.4f} acc {train_row['acc']:6.2f}"
            f"  | valid loss {valid_row['loss']:.4f} acc {valid_row['acc']:6.2f} top5 {valid_row['top5acc']:6.2f}"
            f" bacc {valid_row['bacc']:6.2f} f1 {valid_row['macro_f1']:6.2f}  | lr {train_row['lr']:.4g}"
            f"  {seconds:5.1f}s{'  *' if improved else ''}")


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def main(argv=None) -> int:
    return cli.run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())
