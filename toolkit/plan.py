"""The training plan: every option of 1_train.py, its type, default and help, written once.

1_train.py, 4_report.py (the defaults of older runs), 6_active.py's simulation, the benchmarks and
the recipe search all parse a plan here, so a training flag means the same everywhere. The plan is
the argparse parser itself, not a typed object beside it: the parser already holds each option's
type, default, check and help, and a second description would have to be kept equal to it. What an
option is beyond its parsing (may a resume change it, does it change the recipe, does a simulation
take it, does a search draw it or refuse it) is its row in OPTIONS, and every list of options that
another module reads is derived from those rows.
"""
import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import criterion
from toolkit import arguments, augment, cli, finetune, runs, sam, sampling
from toolkit.space import Choice, HyperParameter, LogUniform, Uniform

WARMUP_EPOCHS = 5
MONITORS = ("acc", "bacc", "macro_f1")


def build_parser():
    p = cli.ArgumentParser(prog="1_train.py", description="Train one model with one objective.")
    p.add_argument("--model_index", type=int, help="network, see `python get_model.py` (this or --model)")
    p.add_argument("--model", metavar="NAME",
                   help="network by name instead of --model_index: a torchvision classification model (e.g. "
                        "resnet18, mobilenet_v3_small) or timm/NAME (e.g. timm/convnext_nano); "
                        "`python get_model.py --list [PATTERN]` lists them")
    p.add_argument("--pretrained", type=Path, metavar="PATH",
                   help="start from `imagenet` (the library's own ImageNet weights, fetched once into its cache, "
                        "TORCH_HOME or HF_HOME, read offline from there; their mean and std replace the dataset's), "
                        "a local weights file (a torchvision state_dict, safetensors, a timm checkpoint or a .pth "
                        "of this toolkit) or a run directory of this toolkit (its best checkpoint)")
    p.add_argument("--finetune", choices=finetune.MODES, default="full",
                   help="full: every layer trains; last-stage: the backbone's last stage and the classifier; "
                        "linear: the classifier alone, on features of the frozen backbone computed once per image "
                        "(unaugmented) and cached beside the dataset, so an epoch trains one layer; runs go to "
                        "<objective>-last-stage/ or <objective>-linear/ (default: full)")
    p.add_argument("--backbone-lr-scale", type=cli.number_in(0.0, 1.0, low_open=True), default=1.0, metavar="F",
                   help="the backbone's learning rate is F times --lr, the classifier's (0 < F <= 1; "
                        "default: 1)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the classifier layer (classifier re-training on a --pretrained backbone); "
                        "its BatchNorm layers keep their running statistics unless --update-bn-stats")
    p.add_argument("--update-bn-stats", action="store_true",
                   help="--freeze-backbone: the frozen BatchNorm layers normalise with the batch's statistics and "
                        "update their running ones as in training (MiSLAS's shift learning); their weights stay "
                        "frozen (default: off)")
    arguments.add_dataset(p, help="dataset folder name in a_datasets/ (required)")
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
                   help=f"raise the learning rate linearly over the first {WARMUP_EPOCHS} epochs")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default: 5e-4)")
    p.add_argument("--sam", type=cli.positive_float, nargs="?", const=sam.USUAL_RHO, metavar="RHO",
                   help=f"sharpness-aware minimisation (Foret et al. 2021): each step takes the gradient at w + RHO "
                        f"g/||g||, a second pass on the batch; --sam alone is RHO {sam.USUAL_RHO} (Saddle-LongTail "
                        f"used 0.5 for CE + DRW on CIFAR-10-LT); runs go to <objective>-SAM/ (default: off)")
    p.add_argument("--max-norm", type=cli.non_negative_float, metavar="THRESH",
                   help="weight balancing's MaxNorm (Alshammari et al. 2022): after each step, the classifier's "
                        "per-class weight rows are scaled down to norm min + THRESH (max - min) of their norms at "
                        "the start, e.g. 0.1 in their stage 2 (--pretrained STAGE1 --freeze-backbone --objective CB "
                        "--weight-decay 0.1); runs go to <objective>-MaxNorm/ (default: off)")
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
    p.add_argument("--randaugment-n", type=cli.non_negative_int, default=augment.RANDAUGMENT_N, metavar="N",
                   help="--augment randaugment: operations applied to each image (default: %(default)s)")
    p.add_argument("--randaugment-m", type=augment.magnitude_bin, default=augment.RANDAUGMENT_M, metavar="M",
                   help=f"--augment randaugment: magnitude, a bin from 0 to {augment.MAGNITUDE_BINS - 1} as in "
                        f"torchvision (default: %(default)s)")
    p.add_argument("--mixup", type=cli.positive_float, metavar="ALPHA",
                   help="mixup: mix each batch with itself reversed, lambda ~ Beta(ALPHA, ALPHA), e.g. 0.2; the "
                        "objective scores lambda L(y_a) + (1 - lambda) L(y_b) (per-sample objectives only) "
                        "(default: off)")
    p.add_argument("--cutmix", type=cli.positive_float, metavar="ALPHA",
                   help="cutmix: paste a box of the reversed batch, its area 1 - lambda, lambda ~ Beta(ALPHA, "
                        "ALPHA), e.g. 1.0; with --mixup, each mixed batch is cutmix or mixup with probability 1/2 "
                        "(default: off)")
    p.add_argument("--mix-prob", type=cli.number_in(0.0, 1.0, low_open=True), default=1.0, metavar="P",
                   help="--mixup/--cutmix: the probability that a batch is mixed (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only: a rerun (or a resumed run) repeats exactly")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a run: its directory, or its YYYY-MM-DD-HH-MM-SS with --model_index and --dataset")
    arguments.add_workers(p)
    arguments.add_device(p)
    arguments.add_threads(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    arguments.add_cache(p)
    p.add_argument("--dry-run", action="store_true",
                   help="check the data (every image decoded), model and objective, time one training batch and "
                        "print the whole run's estimated time, then stop before training (nothing written)")
    arguments.add_progress(p)
    criterion.add_arguments(p)
    return p


# ---------------------------------------------------------------- what each option is to the rest of the toolkit
# build_parser says how an option is typed; its row in OPTIONS says what it is to resume, to recipes,
# to a simulation and to a search. The lists those read (RESUMABLE, recipes.NEUTRAL,
# simulation.NOT_IN_A_SIMULATION, the search's refusals and knobs) are derived from the rows, and
# tests/test_plan.py fails while an option of the parser has no row. The objectives' flags are
# declared by the objectives (losses/) and are of the default kind; a row here only for --drw.

@dataclass(frozen=True)
class Refused:
    """A search refuses the option, for this reason (a trial sets it itself)."""
    why: str


@dataclass(frozen=True)
class Option:
    """One option of the plan, by its flag; the defaults are the usual kind: it changes what is
    trained, so resume keeps the run's own value and runs that differ in it are different recipes."""
    flag: str
    resumable: bool = False  # a resumed run may change it (else it keeps its args.json's value)
    recipe: bool = True  # it changes what is trained (False: in recipes.NEUTRAL, runs differing in it are repeats)
    simulation: bool = True  # 6_active.py --simulate passes it to its rounds (False: refused, it sets it itself)
    search: Uniform | Choice | Refused | None = None  # the range a search draws it from, or why it refuses it;
    # None: not searched, a value given to 7_search.py is every trial's
    mixes: bool = False  # it mixes batches: only objectives that take mixed batches train with it

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def searched(self) -> bool:
        return self.search is not None and not isinstance(self.search, Refused)


def options(*flags, **kind) -> tuple:
    """Rows for several flags of one kind."""
    return tuple(Option(flag, **kind) for flag in flags)


OPTIONS = (
    # what is trained. The searched ones first, in the order a search draws them (tests/test_search.py)
    Option("--lr", search=LogUniform(0.01, 0.4)),
    # Alshammari et al., CVPR 2022: tuned weight decay alone lifts plain CE on long-tailed data
    Option("--weight-decay", search=LogUniform(1e-5, 1e-2)),
    Option("--sampler", search=Choice(sampling.SAMPLERS)),
    # Foret et al. 2021; Rangwani et al. 2022 for long tails (each trial with SAM costs two passes a step)
    Option("--sam", search=Choice((None, 0.05, 0.1))),
    Option("--mixup", search=Choice((None, 0.1, 0.2, 0.4)), mixes=True),  # drawn where the objective takes it
    Option("--cutmix", mixes=True),
    Option("--objective", search=Refused("name recipes with --objectives")),
    Option("--drw", search=Refused("name a -DRW recipe in --objectives (its epoch is searched)")),
    Option("--dataset", simulation=False),
    # the rest of what is trained
    *options("--model_index", "--model", "--pretrained", "--finetune", "--backbone-lr-scale", "--freeze-backbone",
             "--update-bn-stats", "--batchsize", "--height", "--width", "--lrstep", "--lrstepgamma", "--warmup",
             "--momentum", "--max-norm", "--monitor", "--drs", "--augment", "--randaugment-n", "--randaugment-m",
             "--mix-prob"),
    # how long: a resumed run may train longer, or stop earlier
    *options("--epochs", "--early-stop", resumable=True),
    # the repeats of a recipe: the seed tells them apart, --deterministic repeats one bit for bit
    Option("--seed", recipe=False, simulation=False),
    Option("--deterministic", recipe=False),
    # where and how it runs: the same training anywhere, so a resumed run may change it
    *options("--workers", "--device", "--threads", "--compile", "--cache-gb", "--no-progress", resumable=True,
             recipe=False),
    Option("--precision", resumable=True),  # bf16 and fp16 train other numbers; recipes drops it when auto
    # bookkeeping: where things are, and what a command does
    *options("--data-root", "--logs-root", "--dry-run", resumable=True, recipe=False, simulation=False),
    Option("--resume", resumable=True, recipe=False, simulation=False, search=Refused("use --resume SEARCH_DIR")),
)
# what a resumed run may change; everything else is the run's own, from its args.json
RESUMABLE = frozenset(o.dest for o in OPTIONS if o.resumable)


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    given = cli.given_options(parser, argv)
    check_augment_options(args, given)
    if args.resume:
        args = resumed_args(args, given, parser)
    elif (args.model_index is None and args.model is None) or args.dataset is None:
        raise cli.UserError("--model_index (or --model NAME) and --dataset are required (or --resume RUN)")
    if args.model_index is not None and args.model is not None:
        raise cli.UserError(f"--model {args.model} and --model_index {args.model_index} both name the network; "
                            f"give one of them")
    finetune.check_plan(args, given)
    if args.lrstep != sorted(set(args.lrstep)):
        raise cli.UserError(f"--lrstep {' '.join(map(str, args.lrstep))}: milestones must be increasing epochs, "
                            f"e.g. --lrstep 60 120 160")
    check_objective_options(args, given)
    check_schedule_options(args)
    return args


def check_objective_options(args, given: set):
    """An objective's flag given to another objective would be read by nobody: refused, naming
    the objectives that read it (from their declarations)."""
    if args.objective not in criterion.OBJECTIVES:
        raise cli.UserError(f"unknown --objective {args.objective!r}; choose one of: "
                            f"{', '.join(criterion.objective_names())}")
    objective_flags = {h.dest: h.flag for h in criterion.hyper_parameters() if h.dest != "drw"}  # its own message
    read = criterion.OBJECTIVES[args.objective].flags
    unread = [dest for dest in objective_flags if dest in given and dest not in read]
    if unread:
        dest = unread[0]
        readers = [name for name, row in criterion.OBJECTIVES.items() if dest in row.flags]
        raise cli.UserError(f"{objective_flags[dest]} is read by --objective {', '.join(readers)}, not by "
                            f"{args.objective}; drop it or change --objective")


def check_schedule_options(args):
    """Options that would do nothing in this plan, or be overridden by another: refused."""
    if args.freeze_backbone and args.pretrained is None:
        raise cli.UserError("--freeze-backbone trains only the classifier on a pretrained backbone; add "
                            "--pretrained PATH (a random backbone's features are noise)")
    if args.drs is not None and args.sampler != "instance":
        raise cli.UserError(f"--drs samples by instance until its epoch, then by class: it replaces --sampler "
                            f"{args.sampler}; give one of them")
    for flag, epoch in (("--drs", args.drs), ("--drw", args.drw)):
        if epoch is not None and epoch > args.epochs:
            raise cli.UserError(f"{flag} {epoch} starts after the last epoch ({args.epochs}): it would do nothing; "
                                f"give an epoch up to --epochs, e.g. {flag} {max(1, round(args.epochs * 0.7))}")
        if epoch is not None and epoch == args.epochs and not args.resume:
            warnings.warn(f"{flag} {epoch} starts at the last epoch: only epoch {epoch} is "
                          f"{'class-sampled' if flag == '--drs' else 're-weighted'}", stacklevel=3)


def check_augment_options(args, given: set):
    """Options that only tune another one: refused alone, rather than silently doing nothing."""
    tuning = [f"--{name.replace('_', '-')}" for name in ("randaugment_n", "randaugment_m") if name in given]
    if tuning and args.augment != "randaugment" and not args.resume:
        raise cli.UserError(f"{' and '.join(tuning)} tune --augment randaugment; add --augment randaugment "
                            f"(now --augment {args.augment})")
    if "update_bn_stats" in given and not args.freeze_backbone and not args.resume:
        raise cli.UserError("--update-bn-stats updates the BatchNorm statistics of a frozen backbone; add "
                            "--freeze-backbone (without it every BatchNorm layer trains and updates them anyway)")
    if "mix_prob" in given and args.mixup is None and args.cutmix is None and not args.resume:
        raise cli.UserError("--mix-prob is the probability of mixing a batch; add --mixup ALPHA and/or --cutmix ALPHA")


def resumed_args(args, given: set, parser):
    """The run's own arguments from its args.json, with the few a resumed run may change."""
    run_dir = runs.resolve_resume(args.resume, args.logs_root, model_of(args), args.dataset, recipe_name(args))
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
    """The objective's folder name: deferred re-weighting, SAM, MaxNorm and a lighter --finetune
    make recipes of their own, e.g. LDAM-DRW, ERM-DRW-SAM, CB-MaxNorm, LA-linear."""
    return (args.objective + ("-DRW" if args.drw else "") + ("-SAM" if args.sam else "")
            + ("-MaxNorm" if args.max_norm is not None else "")
            + ("" if getattr(args, "finetune", "full") == "full" else f"-{args.finetune}"))


def model_of(args) -> int | str:
    """The network a plan names: --model's name, or --model_index's row of the table."""
    name = getattr(args, "model", None)
    return name if name is not None else args.model_index


def defaults() -> dict:
    """Every option's default."""
    return {a.dest: a.default for a in build_parser()._actions if a.dest not in ("help", argparse.SUPPRESS)}


def defaults_of_older_runs() -> dict:
    """What a run whose args.json predates an option trained with: the option's default, or what
    its declaration says training did before it existed (`HyperParameter.absent`)."""
    before = {h.dest: h.absent for h in criterion.hyper_parameters() if h.absent is not None}
    return {**defaults(), **before}


# ---------------------------------------------------------------- the shared knobs a recipe search tunes
# 7_search.py draws these for every objective (beside the objective's own, declared in losses/), from
# the ranges of OPTIONS. A knob given on 7_search.py's command line is fixed, not searched. The defaults
# and help are the parser's (the DRW share is not a flag: --drw EPOCH = round(share * --epochs) + 1).

def knobs(mixing: bool) -> tuple:
    """The searched options (those that mix batches, or the others) as HyperParameters, with the
    parser's defaults and help."""
    actions = {a.dest: a for a in build_parser()._actions}
    return tuple(HyperParameter(o.flag, actions[o.dest].default, actions[o.dest].help, search=o.search)
                 for o in OPTIONS if o.searched and o.mixes == mixing)


SEARCHED_KNOBS = knobs(mixing=False)
# exactly one, drawn only for objectives that take mixed batches (search.recipe_knobs adds it there)
MIXUP_ALPHA, = knobs(mixing=True)
DRW_SHARE = HyperParameter("--drw-share", 0.8, "a -DRW recipe's re-weighting start as a share of --epochs "
                           "(LDAM-DRW's reference: epoch 160 of 200)", search=Uniform(0.5, 0.9))


def drw_epoch(share: float, epochs: int) -> int:
    """--drw (counted from 1) of a DRW share: re-weighting over the last (1 - share) of the epochs."""
    return min(epochs, round(share * epochs) + 1)
