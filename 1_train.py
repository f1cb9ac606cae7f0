"""Train one plan: a model (--model_index) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup
    python 1_train.py --resume logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42      # continue it

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import platform
import shutil
import sys
from pathlib import Path

import torch
import torchvision

from toolkit import cli, engine, files, plan, runs, training


def train(argv=None):
    args = plan.parse_args(argv)
    engine.use_threads(args.threads)
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
            print(f"dry run: {len(setup.train)} training and {cli.counted(len(setup.valid), 'validation image')} of "
                  f"{len(record.class_names)} classes read, {record.model_name} and {args.objective} built; "
                  f"nothing was trained or written")
        return 0

    run_dir, position, say = open_run(args, setup, main_process)
    if not main_process:
        return training.Trainer(args, setup, progress=False).train(position)[1]
    print(say)
    print(f"device {device}, precision {setup.engine.precision.name}, {len(record.class_names)} classes, "
          f"{len(setup.train)} training and {cli.counted(len(setup.valid), 'validation image')}"
          + (f"; {distributed.world} processes of {args.batchsize} images a batch" if distributed.active else ""))
    files.write_json(run_dir / "args.json", {**vars(args), "resume": None, **record.as_dict(),
                                             "precision_used": setup.engine.precision.name,
                                             "device_used": str(device), "processes": distributed.world,
                                             "versions": versions()})
    try:
        with runs.RunLog(run_dir, position.epoch) as log:
            best, exit_code = training.Trainer(args, setup, run_dir, log, progress).train(position)
    except engine.NonFiniteLoss as e:
        kept = remove_if_empty(args, run_dir)
        raise cli.UserError(f"{e}; {kept}; try {non_finite_advice(args, setup.engine.precision.name)}") from None
    except BaseException:
        remove_if_empty(args, run_dir)
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
            raise cli.UserError(f"{args.resume} has finished its {cli.counted(position.epoch, 'epoch')}; pass a larger "
                                f"--epochs to train it further")
        batch = f", batch {position.batch}" if position.batch else ""
        return args.resume, position, f"resuming {args.resume} after epoch {position.epoch}{batch}"
    run_dir = runs.new_run_dir(args.logs_root, setup.record.model_name, args.dataset, plan.recipe_name(args)) \
        if main_process else None
    return run_dir, training.Position(), f"run directory: {run_dir} (kept once its first epoch finishes)"


def remove_if_empty(args, run_dir: Path) -> str:
    """A new run that never finished an epoch leaves nothing; says what is left."""
    if args.resume or (run_dir / "last.pth").exists():
        return f"{shown_path(run_dir)} keeps the checkpoints of the last good epoch"
    shutil.rmtree(run_dir, ignore_errors=True)
    return f"no epoch finished, so {shown_path(run_dir)} was removed"


def non_finite_advice(args, precision: str) -> str:
    advice = ["a lower --lr"] + ([] if args.warmup else ["--warmup"]) + ([] if precision == "fp32" else
                                                                         ["--precision fp32"])
    return ", ".join(advice[:-1]) + (" or " if len(advice) > 1 else "") + advice[-1]


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
