"""Train one plan: a model (--model_index) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import platform
import sys
import time

import torch
import torchvision

import cli
import criterion
import engine
import get_model
import loader
import metrics
import plots
import runs

MONITORS = ("acc", "bacc", "macro_f1")
WARMUP_EPOCHS = 5


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="1_train.py", description="Train one model with one objective.")
    p.add_argument("--model_index", type=int, required=True, help="network, see `python get_model.py`")
    p.add_argument("--dataset", required=True, help="dataset folder name in a_datasets/")
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
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=cli.non_negative_int, default=2,
                   help="processes decoding images when a split streams from disk (default: 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CPUs and GPUs that run it natively, fp16 on older GPUs, else fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    p.add_argument("--cache-gb", type=cli.positive_float, default=4.0,
                   help="hold decoded splits in memory up to this size, else stream from disk (default: 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    cli.add_root_arguments(p)
    criterion.add_arguments(p)
    args = p.parse_args(argv)
    if args.lrstep != sorted(set(args.lrstep)):
        raise cli.UserError(f"--lrstep {' '.join(map(str, args.lrstep))}: milestones must be increasing epochs, "
                            f"e.g. --lrstep 60 120 160")
    return args


def train(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = engine.pick_device(args.device)
    precision = engine.pick_precision(args.precision, device)

    # data: scanned and checked before anything is written
    dataset = loader.dataset_dir(args.data_root, args.dataset)
    splits = loader.scan_dataset(dataset, ("train", "valid"))
    class_names = splits["train"].class_names
    class_counts = splits["train"].class_counts()

    # model and objective
    loss = criterion.build_criterion(args.objective, class_counts, args)
    model_name = get_model.model_name(args.model_index)
    model = get_model.build_model(args.model_index, len(class_names), args.height, args.width)
    cosine_scale = getattr(loss, "cosine_classifier_scale", None)
    if cosine_scale:
        model = get_model.use_cosine_classifier(model, cosine_scale)

    progress = not args.no_progress
    train_set = loader.load_images(splits["train"], args.height, args.width, device, args.cache_gb,
                                   args.workers, progress)
    valid_set = loader.load_images(splits["valid"], args.height, args.width, device, args.cache_gb,
                                   args.workers, progress)
    mean, std = loader.training_stats(train_set, args.height, args.width)

    model = model.to(device, memory_format=engine.memory_format(model))
    loss = loss.to(device)
    steps_per_epoch = -(-len(loader.drop_single_last(torch.arange(len(train_set)), args.batchsize))
                        // args.batchsize)
    schedule = engine.lr_factor(args.lrstep, args.lrstepgamma, WARMUP_EPOCHS if args.warmup else 0, steps_per_epoch)
    steps = 2 if getattr(loss, "complement_objective", False) else 1
    optimizers = tuple(torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                       weight_decay=args.weight_decay) for _ in range(steps))
    schedulers = tuple(torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    run = engine.Engine(model, loss, loader.Normalise(mean, std).to(device), device, precision,
                        optimizers, schedulers, scaler, torch.compile(model) if args.compile else None)

    run_dir = runs.new_run_dir(args.logs_root, model_name, args.dataset, args.objective)
    print(f"run directory: {run_dir}")
    print(f"device {device}, precision {precision.name}, {len(class_names)} classes, "
          f"{len(train_set)} training and {len(valid_set)} validation images")
    record = {"model_name": model_name, "class_names": class_names, "class_counts": class_counts,
              "mean": mean, "std": std, "precision_used": precision.name, "device_used": str(device),
              "versions": versions()}
    runs.write_json(run_dir / "args.json", {**vars(args), **record})
    about = {"model_index": args.model_index, "model_name": model_name, "dataset": args.dataset,
             "objective": args.objective, "class_names": class_names, "class_counts": class_counts,
             "height": args.height, "width": args.width, "mean": mean, "std": std,
             "cosine_scale": cosine_scale, "monitor": args.monitor}

    log = runs.RunLog(run_dir)
    best = {"value": float("-inf"), "epoch": 0}
    try:
        for epoch in range(args.epochs):
            started = time.monotonic()
            order = loader.drop_single_last(loader.epoch_order(len(train_set), args.seed, epoch), args.batchsize)
            generator = loader.epoch_generator(args.seed, epoch, device)
            train_row = run.train_epoch(train_set, order, args.batchsize, generator, epoch, args.epochs,
                                        args.workers, progress)
            labels, logits = run.predict(valid_set, args.batchsize, args.workers, progress, desc="validate")
            valid_row = {"epoch": epoch + 1, **metrics.epoch_metrics(labels, logits), "lr": train_row["lr"]}
            log.log("train", train_row)
            log.log("valid", valid_row)
            improved = valid_row[args.monitor] > best["value"]
            if improved:
                best = {"value": valid_row[args.monitor], "epoch": epoch + 1}
                runs.save_best(run_dir, best["value"], {**about, "epoch": epoch + 1, "value": best["value"],
                                                        "model": model.state_dict()})
            runs.save_checkpoint(run_dir / "last.pth", {**about, "epoch": epoch + 1, "best": best,
                                                         "model": model.state_dict()})
            plots.training_curves(*log.frames(), run_dir / "curves.svg", monitor=args.monitor)
            print(summary_line(train_row, valid_row, args.epochs, time.monotonic() - started, improved))
    finally:
        log.close()
    print(f"best valid {args.monitor} {best['value']:.2f} at epoch {best['epoch']}")
    print(f"run directory: {run_dir}")
    return 0


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
