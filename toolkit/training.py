"""Training from 1_train.py's arguments: the set-up (data, model, objective, optimisers), built
and checked before anything is written, and the epoch loop with its checkpoints and logs.

1_train.py, benchmarks/train_speed.py, the tests and 6_active.py's simulation all build a trainer
here, so a training flag means the same everywhere: build_setup from a dataset folder, and
setup_from_images (which build_setup ends in) from images already decoded, as the simulation's
rounds hold them.
"""
import dataclasses
import importlib.metadata
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

import criterion
import get_model
from toolkit import augment, data, engine, files, finetune, metrics, plan, plots, runs, sampling, weight_balancing
from toolkit.cli import StopSignals, UserError, counted
from toolkit.files import save_tensors
from toolkit.record import Checkpoint, RunRecord, load_checkpoint


@dataclass
class Setup:
    """Everything one training needs, on its device: the engine (model, objective, optimisers),
    the training and validation batches, and the record every checkpoint carries."""
    engine: engine.Engine
    train: data.Batches  # finetune.FeatureBatches with --finetune linear
    valid: data.Batches
    record: RunRecord


def build_setup(args, distributed=None, device=None, progress=True, small_map_matmuls=True) -> Setup:
    """Data, model, objective and optimisers from 1_train.py's arguments, all checked first.
    (`small_map_matmuls=False` is for the speed benchmark: PyTorch's convolution kernels only.)"""
    distributed = distributed or engine.Distributed()
    device = device or engine.pick_device(args.device)
    dataset = data.dataset_dir(args.data_root, args.dataset)
    # the test split is scanned too, so a broken one is found now, not after hours of training
    splits = data.scan_dataset(dataset, [s for s in data.SPLITS if s != "test" or (dataset / s).is_dir()])
    # the objective and the model before the images, so a mistake costs no decoding
    network = Network.of_plan(args, splits["train"].class_counts(), distributed)
    train_size = augment.cache_size(args.augment, args.height, args.width)
    train_set, valid_set = (data.load_images(splits[name], *size, device, args.cache_gb, args.workers, progress)
                            for name, size in (("train", train_size), ("valid", (args.height, args.width))))
    return setup_from_images(args, train_set, valid_set, distributed, device, small_map_matmuls, network, progress)


@dataclass
class Network:
    """What a plan trains, before any image is seen: the objective for the training counts, the
    batch mixing it accepts, and the table's model as the objective adapts it (with the ImageNet
    weights it started from, whose mean and std replace the dataset's)."""
    loss: torch.nn.Module
    mixing: augment.Mixing | None
    model: torch.nn.Module
    imagenet: get_model.ImagenetWeights | None = None

    @classmethod
    def of_plan(cls, args, class_counts, distributed=None) -> "Network":
        """Built and checked: an unknown objective, a flag it refuses, mixing it cannot score, a
        model index or image size the table refuses, unusable --pretrained weights: UserError."""
        loss = criterion.build_criterion(args.objective, class_counts, args)
        mixing = augment.batch_mixing(args.mixup, args.cutmix, args.mix_prob)
        check_mixable(args.objective, loss, mixing)
        return cls(loss, mixing, *build_model(args, loss, len(class_counts), distributed or engine.Distributed()))


def setup_from_images(args, train_set: data.ImageSet, valid_set: data.ImageSet, distributed=None, device=None,
                      small_map_matmuls=True, network: Network | None = None, progress=True) -> Setup:
    """The set-up of images already decoded (on `device`): the training set at its cache size
    (augment.cache_size), the validation set at the training size; the class names and counts are
    the training set's. `network` is built here unless given (build_setup builds it before
    decoding, to check the plan first)."""
    distributed = distributed or engine.Distributed()
    device = device or engine.pick_device(args.device)
    train_size = augment.cache_size(args.augment, args.height, args.width)
    if train_set.size != train_size or valid_set.size != (args.height, args.width):
        raise ValueError(f"image sets of {train_set.size} and {valid_set.size}, the plan trains from {train_size} "
                         f"and validates at {(args.height, args.width)}")
    class_names, class_counts = train_set.split.class_names, train_set.split.class_counts()
    network = network or Network.of_plan(args, class_counts, distributed)
    if network.imagenet:  # the weights' own preprocessing
        mean, std = network.imagenet.mean, network.imagenet.std
    else:  # of the enlarged cache: the same to resampling
        mean, std = data.training_stats(train_set, *train_size)
    normalise = data.Normalise(mean, std).to(device)
    memory_format = engine.memory_format(network.model)

    model = engine.prepare_model(network.model, device, small_map_matmuls)
    mode = getattr(args, "finetune", "full")
    record = RunRecord(args.model_index, class_names, args.height, args.width, mean, std,
                       model_name=get_model.model_name(plan.model_of(args)), dataset=args.dataset,
                       objective=args.objective, class_counts=class_counts,
                       cosine_scale=get_model.cosine_scale(network.model), monitor=args.monitor,
                       pretrained_weights=network.imagenet.name if network.imagenet else None, finetune=mode)
    augmenting = augment.batch_augmentation(args.augment, args.height, args.width, args.randaugment_n,
                                            args.randaugment_m)
    train = data.Batches(train_set, normalise, memory_format, augmenting, args.workers)
    valid = data.Batches(valid_set, normalise, memory_format, workers=args.workers)
    runs_on = None
    if mode == "linear":  # the classifier alone, on features computed once: the engine runs only it
        progress = progress and distributed.is_main
        train, valid = (finetune.feature_batches(model, batches, record.model_name, args.batchsize, progress)
                        for batches in (train, valid))
        runs_on = get_model.classifier_layer(model)
    run = build_engine(args, model, network.loss.to(device), device, distributed, network.mixing, runs_on)
    return Setup(run, train, valid, record)


def build_model(args, loss, num_classes: int, distributed) -> tuple:
    """The model as the objective adapts it, maybe started from --pretrained (a file, a run, or
    `imagenet`: the library's weights, whose description comes back with it), maybe partly frozen."""
    spec = get_model.model_spec(plan.model_of(args))
    model = loss.adapt_model(get_model.build_model(plan.model_of(args), num_classes, args.height, args.width))
    imagenet = get_model.imagenet_weights(spec) if str(args.pretrained) == "imagenet" else None
    if args.pretrained and not args.resume:
        if imagenet:
            source, found = imagenet.name, get_model.load_matching(model, imagenet.fetch(), imagenet.name, None)
        else:
            source = runs.require_best_checkpoint(args.pretrained) if args.pretrained.is_dir() else args.pretrained
            found = get_model.load_pretrained(model, source)
        if distributed.is_main:
            print(f"pretrained {source}: {found['loaded']} tensors loaded, {found['skipped']} skipped, "
                  f"{found['initialised']} newly initialised")
    if args.resume and getattr(args, "finetune", "full") == "linear" and (args.resume / "last.pth").exists():
        # the features are computed before restore(): they must be the trained run's backbone's, not a fresh one's
        model.load_state_dict(load_checkpoint(args.resume / "last.pth").model)
    if imagenet and distributed.is_main and not args.resume:
        height, width = imagenet.input_size
        print(f"{imagenet.name}: images normalised with their mean {fmt(imagenet.mean)} and std {fmt(imagenet.std)}; "
              f"they were trained at {height}x{width}" + ("" if (args.height, args.width) == (height, width) else
                                                          f", --height {height} --width {width} usually does better"))
    if args.freeze_backbone:
        get_model.freeze_backbone(model)
    mode = getattr(args, "finetune", "full")
    finetune.freeze(model, mode, args.height, args.width)
    if mode != "full" and distributed.is_main and not args.resume:
        print(finetune.counts_line(model, mode))
    return model, imagenet


def fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def build_engine(args, model, loss, device, distributed, mixing=None, runs_on=None) -> engine.Engine:
    """The engine for a prepared model: precision, optimisers, schedule, scaler, mixing, DDP and compile.
    `runs_on`: the part of the model a step runs (--finetune linear: its classifier on cached features)."""
    run = engine.Engine(model, loss, device, engine.pick_precision(args.precision, device),
                        optimizers=sgd_optimizers(model, len(loss.step_losses()), args),
                        lr_factor=engine.lr_schedule(args.lrstep, args.lrstepgamma,
                                                     plan.WARMUP_EPOCHS if args.warmup else 0),
                        distributed=distributed, mix=mixing, update_frozen_bn=args.update_bn_stats, sam_rho=args.sam)
    if args.max_norm is not None:
        run.max_norm = weight_balancing.MaxNorm(model, args.max_norm)
    run.scaler = torch.amp.GradScaler(device.type) if run.precision.needs_scaler else None
    run.forward = engine.wrap_for_distribution(runs_on or model, distributed, device)
    if args.compile:
        run.forward = torch.compile(run.forward)
        if distributed.is_main:  # compiling happens in the first steps, silently
            print("--compile: torch.compile compiles the model in the first training and validation steps "
                  "(it takes a while: docs/speed.md)", flush=True)
    return run


def check_mixable(objective: str, loss, mixing):
    """Refuse --mixup/--cutmix with an objective that cannot score mixed targets, saying why."""
    if mixing is None or loss.supports_mixed_targets:
        return
    why = loss.mixing_refusal
    flags = " and ".join(f for f, alpha in (("--mixup", mixing.mixup), ("--cutmix", mixing.cutmix)) if alpha)
    raise UserError(f"{flags} cannot train --objective {objective}: a mixed batch is scored as lambda L(y_a) + "
                    f"(1 - lambda) L(y_b) sample by sample, and {objective} is not a mean of per-sample losses "
                    f"({why}); drop {flags} or use a per-sample objective such as ERM, FL, CB, LDAM or LA")


def unaugmented(batches: data.Batches, height: int, width: int) -> data.Batches:
    """The batches without augmentation at height x width: the training set's enlarged cache of the
    resized crops is resized back, so the model sees what it sees in validation. Cached features
    (--finetune linear) are unaugmented already."""
    if isinstance(batches, finetune.FeatureBatches):
        return batches
    size = batches.image_set.size
    fit = None if size == (height, width) else (lambda images, generator: augment.resize(images, height, width))
    return dataclasses.replace(batches, augment=fit)


def sgd_optimizers(model, count: int, args) -> tuple:
    """One SGD optimiser over the trainable parameters for each of the objective's step losses: the
    classifier at --lr, the rest of what trains at --backbone-lr-scale times it."""
    return tuple(torch.optim.SGD(finetune.parameter_groups(model, args.lr, getattr(args, "backbone_lr_scale", 1.0)),
                                 lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
                 for _ in range(count))


# ---------------------------------------------------------------- where training stands

@dataclass
class Position:
    """Where training stands: `epoch` epochs done, `batch` batches of the next one (with the running
    sums and the augmentation generator's state to go on from), and the best epoch so far."""
    epoch: int = 0
    batch: int = 0
    best: dict = field(default_factory=lambda: {"value": float("-inf"), "epoch": 0})
    unfinished: engine.EpochProgress | None = None
    generator_state: torch.Tensor | None = None


def save_last(run_dir, setup: Setup, position: Position):
    """last.pth: everything a resume needs, at `position`."""
    run = setup.engine
    unfinished = position.unfinished
    resume = {"best": position.best, "optimizers": [o.state_dict() for o in run.optimizers],
              "scaler": run.scaler.state_dict() if run.scaler else None,
              "criterion": run.criterion.state_dict(), "rng": runs.rng_states(),
              "max_norm": run.max_norm.state_dict() if run.max_norm else None,
              "batch": unfinished.batch if unfinished else 0,
              "epoch_sums": unfinished.sums if unfinished else None,
              "generator": position.generator_state if unfinished else None}
    checkpoint = Checkpoint(setup.record, run.model.state_dict(), position.epoch, resume=resume)
    save_tensors(run_dir / "last.pth", checkpoint.to_state())


def restore(run_dir, setup: Setup) -> Position:
    """Load last.pth into the set-up; returns where training stands."""
    path = run_dir / "last.pth"
    if not path.exists():
        raise UserError(f"{run_dir} has no last.pth (it stopped before finishing an epoch); start a new run")
    checkpoint = load_checkpoint(path)
    try:
        runs.check_resumable(checkpoint.record, setup.record.model, setup.record.class_names)
    except UserError as e:
        raise UserError(f"cannot resume {run_dir}: {e}") from None
    run, saved = setup.engine, checkpoint.resume
    run.model.load_state_dict(checkpoint.model)
    for optimizer, state in zip(run.optimizers, saved["optimizers"]):
        optimizer.load_state_dict(state)
    if run.scaler and saved["scaler"]:
        run.scaler.load_state_dict(saved["scaler"])
    try:
        run.criterion.load_state_dict(saved["criterion"])
    except RuntimeError as e:  # e.g. an SPBL run of the withdrawn first definition
        raise UserError(f"cannot resume {run_dir}: its {setup.record.objective} state was written by another "
                        f"version of the objective ({str(e).splitlines()[0]}); start a new run") from None
    runs.restore_rng_states(saved["rng"])
    if run.max_norm is not None:
        run.max_norm.load_state_dict(saved["max_norm"])
    unfinished = engine.EpochProgress(saved["batch"], saved["epoch_sums"]) if saved["batch"] else None
    return Position(checkpoint.epoch, saved["batch"], saved["best"], unfinished, saved["generator"])


# ---------------------------------------------------------------- the epoch loop

@dataclass(frozen=True)
class Records:
    """What the Trainer writes after each epoch besides train.csv, valid.csv and the best
    checkpoint: last.pth (what --resume needs; also written when a stop ends an epoch early) and
    curves.svg. A simulated round keeps neither: it is never resumed, and a figure per epoch would
    cost more than its training."""
    last: bool = True
    curves: bool = True


class Trainer:
    """Runs the epochs of one set-up from a position. Only the main process (the one with a
    `log`) writes; under torchrun every process trains its share and sees the same validation."""

    def __init__(self, args, setup: Setup, run_dir=None, log: runs.RunLog | None = None, progress=True,
                 records: Records = Records(), after_epoch=None):
        """`after_epoch(run_dir, epochs_done, valid_row, best)`, when given, is called after every epoch
        (the recipe search reports to its trial there) and returns True to stop the training there."""
        self.args, self.setup, self.run_dir, self.log, self.progress = args, setup, run_dir, log, progress
        self.records, self.after_epoch = records, after_epoch

    def train(self, position: Position) -> tuple:
        """Train until --epochs, an early stop or a stop signal; returns the best {value, epoch} and
        the exit code (0, or 130/143 when Ctrl-C or SIGTERM stopped it)."""
        args, distributed = self.args, self.setup.engine.distributed
        timed = []  # seconds of the epochs run in this process: the time left is their mean times the epochs left
        with StopSignals() as stop:
            while position.epoch < args.epochs and not distributed.agree(stop.requested, 0):
                started = time.monotonic()
                train_row = self.train_epoch(position, stop.requested)
                if train_row is None:  # stopped mid-epoch: saved exactly where
                    break
                valid_row, unpredicted = self.validate(position.epoch, train_row["lr"])
                improved = valid_row[args.monitor] > position.best["value"]
                if improved:
                    position.best = {"value": valid_row[args.monitor], "epoch": position.epoch + 1,
                                     "unpredicted": unpredicted}
                position.epoch += 1
                timed.append(time.monotonic() - started)
                train_row["seconds"] = timed[-1]
                if self.log:
                    self.record_epoch(position, train_row, valid_row, improved)
                    left = sum(timed) / len(timed) * (args.epochs - position.epoch)
                    print(summary_line(train_row, valid_row, args.epochs, timed[-1], improved, left))
                if args.early_stop and position.epoch - position.best["epoch"] >= args.early_stop:
                    if self.log:
                        print(f"early stop: valid {args.monitor} has not improved for "
                              f"{counted(args.early_stop, 'epoch')} "
                              f"(best {position.best['value']:.2f} at epoch {position.best['epoch']})")
                    break
                if self.after_epoch and self.after_epoch(self.run_dir, position.epoch, valid_row, position.best):
                    break
        return position.best, stop.exit_code if stop.requested() or position.unfinished else 0

    def train_epoch(self, position: Position, stop_requested):
        """One training epoch from `position` (maybe part-way through it); its train.csv row, or
        None when a stop request ended it early (last.pth then records exactly where)."""
        args, run = self.args, self.setup.engine
        epoch, rank, world = position.epoch, run.distributed.rank, run.distributed.world
        labels = self.setup.train.labels.cpu()
        draws = run.criterion.epoch_draws(epoch, args.epochs, labels, self.training_logits)
        order = sampling.epoch_order(labels, args.seed, epoch, args.sampler, args.epochs, args.drs, rank, world,
                                     draws)
        order = sampling.drop_single_last(order, args.batchsize)
        generator = sampling.epoch_generator(args.seed + rank, epoch, run.device)
        if position.unfinished:
            generator.set_state(position.generator_state)
        row, unfinished = run.train_epoch(self.setup.train, order, args.batchsize, generator, epoch, args.epochs,
                                          self.progress, position.unfinished, stop_requested)
        position.unfinished, position.batch = unfinished, unfinished.batch if unfinished else 0
        if unfinished:
            position.generator_state = generator.get_state()
            if self.log and self.records.last:
                save_last(self.run_dir, self.setup, position)
            return None
        return {**row, **run.criterion.epoch_log()}

    def training_logits(self) -> torch.Tensor:
        """The model's logits of every training image, unaugmented (for objectives that choose samples)."""
        plain = unaugmented(self.setup.train, self.args.height, self.args.width)
        return self.setup.engine.predict(plain, self.args.batchsize, self.progress, desc="score training images")[1]

    def validate(self, epoch: int, lr: float) -> tuple:
        """(valid.csv's row, the classes the model never predicts right on the valid split)."""
        labels, logits = self.setup.engine.predict(self.setup.valid, self.args.batchsize, self.progress,
                                                   desc="validate")
        return ({"epoch": epoch + 1, **metrics.epoch_metrics(labels, logits), "lr": lr},
                metrics.zero_recall_classes(labels, logits, self.setup.record.class_names))

    def record_epoch(self, position: Position, train_row, valid_row, improved):
        """Logs and the best checkpoint when it improved, after an epoch; last.pth and curves.svg
        as `records` says."""
        self.log.log("train", train_row)
        self.log.log("valid", valid_row)
        if improved:
            runs.save_best(self.run_dir, Checkpoint(self.setup.record, self.setup.engine.model.state_dict(),
                                                    position.best["epoch"], value=position.best["value"]))
        if self.records.last:
            save_last(self.run_dir, self.setup, position)
        if self.records.curves:
            plots.training_curves(*self.log.frames(), self.run_dir / "curves.svg", monitor=self.args.monitor)


def summary_line(train_row, valid_row, epochs, seconds, improved, left) -> str:
    return (f"epoch {train_row['epoch']:>3}/{epochs}  train loss {train_row['loss']:.4f} acc {train_row['acc']:6.2f}"
            f"  | valid loss {valid_row['loss']:.4f} acc {valid_row['acc']:6.2f} top5 {valid_row['top5acc']:6.2f}"
            f" bacc {valid_row['bacc']:6.2f} f1 {valid_row['macro_f1']:6.2f}  | lr {train_row['lr']:.4g}"
            f"  {seconds:5.1f}s{' *' if improved else '  '}  left {duration(left)}")


def duration(seconds: float) -> str:
    """'45s', '12m05s', '3h20m': a time left as a person reads it."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def warn_degenerate_best(best: dict, recipe: str):
    """One warning line when the best checkpoint never predicts a class of the valid split right."""
    metrics.warn_zero_recall(best.get("unpredicted") or [],
                             f"the best checkpoint (epoch {best['epoch']}) on the valid split", recipe)


# ---------------------------------------------------------------- one run, as 1_train.py runs it

@dataclass
class Trained:
    """How a training ended: the exit code, and (main process) its run directory and best {value, epoch}."""
    exit_code: int
    run_dir: Path | None = None
    best: dict | None = None


def start(args, after_epoch=None) -> Trained:
    """A run as 1_train.py starts it, and so a search's trial: PyTorch's threads (--threads, else
    the count already set), the seed, deterministic algorithms, this process's place among
    torchrun's, then `train_on`."""
    engine.use_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.deterministic:
        engine.use_deterministic_algorithms()
    distributed, device = engine.start_distributed(args.device)
    try:
        return train_on(args, distributed, device, after_epoch)
    finally:
        engine.stop_distributed(distributed)


def train_on(args, distributed, device, after_epoch=None) -> Trained:
    """Training in this process (the whole of it, or its share under torchrun), as 1_train.py runs it:
    the run directory created once all is checked, args.json, the epochs (`after_epoch` as Trainer
    takes it, also called once before the first epoch with valid_row None), the lines a user reads."""
    main_process = distributed.is_main
    progress = not args.no_progress and main_process
    setup = build_setup(args, distributed, device, progress)
    record = setup.record

    if args.dry_run:
        estimate = estimated_run(args, setup)
        if main_process:
            print(f"dry run: {len(setup.train)} training and {counted(len(setup.valid), 'validation image')} of "
                  f"{len(record.class_names)} classes read, {record.model_name} and {args.objective} built; "
                  f"nothing was trained or written")
            print(estimate)
        return Trained(0)

    run_dir, position, say = open_run(args, setup, main_process)
    if not main_process:
        return Trained(Trainer(args, setup, progress=False).train(position)[1])
    print(say)
    print(f"device {device}, precision {setup.engine.precision.name}, {len(record.class_names)} classes, "
          f"{len(setup.train)} training and {counted(len(setup.valid), 'validation image')}"
          + (f"; {distributed.world} processes of {args.batchsize} images a batch" if distributed.active else ""))
    files.write_json(run_dir / "args.json", {**vars(args), "resume": None, **record.as_dict(),
                                             "precision_used": setup.engine.precision.name,
                                             "device_used": str(device), "processes": distributed.world,
                                             "versions": versions()})
    if after_epoch:
        after_epoch(run_dir, position.epoch, None, position.best)  # the run directory, before any epoch
    try:
        with runs.RunLog(run_dir, position.epoch) as log:
            best, exit_code = Trainer(args, setup, run_dir, log, progress, after_epoch=after_epoch).train(position)
    except engine.NonFiniteLoss as e:
        kept = remove_if_empty(args, run_dir)
        raise UserError(f"{e}; {kept}; try {non_finite_advice(args, setup.engine.precision.name)}") from None
    except BaseException:
        remove_if_empty(args, run_dir)
        raise
    if exit_code:
        print(f"stopped; to continue: python 1_train.py --resume {shown_path(run_dir)}")
        return Trained(exit_code, run_dir, best)
    print(f"best valid {args.monitor} {best['value']:.2f} at epoch {best['epoch']}")
    warn_degenerate_best(best, plan.recipe_name(args))
    print(f"run directory: {run_dir}")
    return Trained(0, run_dir, best)


VALIDATION_SHARE = 1 / 3  # a validation image costs about a third of a training one: a forward pass, no backward


def estimated_run(args, setup: Setup) -> str:
    """The whole run's time from one timed training batch (after an untimed one, which pays for
    allocations and autotuning): the line --dry-run prints. Validation is counted as a third of a
    training image; the first epoch's decoding and augmentation of a stream are not counted."""
    run, generator = setup.engine, torch.Generator().manual_seed(args.seed)
    size = min(args.batchsize, len(setup.train))
    order = torch.randperm(len(setup.train), generator=generator)[:size]
    seconds = []
    for _ in range(2):
        started = time.monotonic()
        run.train_epoch(setup.train, order, size, sampling.epoch_generator(args.seed, 0, run.device), 0, args.epochs,
                        progress=False)
        seconds.append(time.monotonic() - started)
    per_image = seconds[-1] / size
    epoch = per_image * (len(setup.train) + VALIDATION_SHARE * len(setup.valid))
    return (f"time: one training batch of {size} took {seconds[-1]:.2f}s on {run.device}: about {duration(epoch)} an "
            f"epoch, {duration(epoch * args.epochs)} for {counted(args.epochs, 'epoch')} (validation counted as a "
            f"third of a training image; from one batch, so a rough figure)")


def open_run(args, setup: Setup, main_process: bool) -> tuple:
    """The run directory (continued, or created by the main process only now that all is checked),
    where training stands in it, and the line that says so."""
    if args.resume:
        position = restore(args.resume, setup)
        if position.epoch >= args.epochs:
            raise UserError(f"{args.resume} has finished its {counted(position.epoch, 'epoch')}; pass a larger "
                                f"--epochs to train it further")
        batch = f", batch {position.batch}" if position.batch else ""
        return args.resume, position, f"resuming {args.resume} after epoch {position.epoch}{batch}"
    run_dir = runs.new_run_dir(args.logs_root, setup.record.model_name, args.dataset, plan.recipe_name(args)) \
        if main_process else None
    return run_dir, Position(), f"run directory: {run_dir} (kept once its first epoch finishes)"


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
            "torchvision": torchvision.__version__, "timm": importlib.metadata.version("timm")}
