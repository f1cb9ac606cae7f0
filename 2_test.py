"""Evaluate a run's best checkpoint on the test split and write its metrics and figures.

    python 2_test.py --dataset=digits-lt --model_index=42 --objective=CCE   # the newest such run
    python 2_test.py --run logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42            # that run

The work is toolkit/evaluation.py's: the files it writes (with 95% bootstrap intervals, seeded),
the post-hoc corrections (RUN/logit-adjusted/, RUN/tau-normalised/), and the rule that the run's
own test is only rewritten by a test set as it was (others go to RUN/bootstrap-0/, RUN/data-.../).
A decision chosen on the valid split and judged on test goes into a folder of its own too:
--operating-point 9:recall=0.9 (RUN/operating-point-9-recall-0.9/), --costs FILE (RUN/costs-NAME/),
--calibrate temperature (RUN/calibrated/, or a calibrated-... prefix); see docs/decisions.md.
"""
import dataclasses
import sys
from pathlib import Path

import get_model
from toolkit import arguments, chosen_decisions, cli, engine, evaluation, metrics, plan, runs


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="2_test.py", description="Evaluate a trained run on the test split.")
    p.add_argument("--run", type=Path, metavar="RUN_DIR",
                   help="the run directory to test, e.g. logs/ResNet32/digits-lt/ERM/2026-11-22-05-28-42 (instead "
                        "of --model_index, --dataset, --objective, --datetime)")
    p.add_argument("--model_index", type=int, help="network, see `python get_model.py`")
    p.add_argument("--model", metavar="NAME", help="the network by name, as 1_train.py --model took it (instead of "
                                                   "--model_index), e.g. resnet18 or timm/convnext_nano")
    arguments.add_dataset(p)
    p.add_argument("--objective", default="ERM",
                   help="objective the run was trained with, as its logs folder is named, e.g. LDAM-DRW (default: ERM)")
    p.add_argument("--datetime", help="the run's YYYY-MM-DD-HH-MM-SS (default: the newest run)")
    arguments.add_batchsize(p)
    p.add_argument("--shot-thresholds", type=cli.positive_int, nargs=2, default=list(evaluation.SHOT_THRESHOLDS),
                   metavar=("MANY", "FEW"),
                   help="many-shot classes have more than MANY training images, few-shot fewer than FEW "
                        "(default: 100 20; others write into RUN/shots-MANY-FEW/)")
    p.add_argument("--bootstrap", type=cli.non_negative_int, default=evaluation.BOOTSTRAP, metavar="N",
                   help="resamples of the 95%% interval of acc, bacc and macro_f1: a bootstrap over the test "
                        "images, stratified by class and seeded (default: 1000; 0: no intervals; other than "
                        "1000: writes into RUN/bootstrap-N/)")
    p.add_argument("--logit-adjust", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc logit adjustment: logits - TAU * log(training prior) before every metric; "
                        "auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc (the test split is not used "
                        "to choose it); writes into RUN/logit-adjusted/ (default: off)")
    p.add_argument("--tau-norm", type=tau_or_auto, metavar="TAU|auto",
                   help="post-hoc tau-normalisation (Kang et al. 2020): the classifier's per-class rows divided by "
                        "their norm^TAU, the bias dropped; auto: the TAU of 0, 0.1, ..., 2 with the best valid bacc "
                        "(the test split is not used to choose it); writes into RUN/tau-normalised/ (default: off)")
    p.add_argument("--operating-point", metavar="CLASS:recall=R",
                   help="decide CLASS when its probability reaches a threshold chosen on the valid split: the "
                        "largest with valid recall >= R (CLASS:recall=R), or the smallest with valid precision >= P "
                        "(CLASS:precision=P), else the most probable other class; writes into "
                        "RUN/operating-point-CLASS-recall-R/ (default: off)")
    p.add_argument("--costs", type=Path, metavar="FILE",
                   help="a CSV cost matrix (header and first column: class names; row: true class, column: "
                        "decided class): decide the class of least expected cost; writes into RUN/costs-NAME/")
    p.add_argument("--calibrate", choices=("temperature",),
                   help="one temperature fit on the valid split by NLL; ECE and NLL before and after; "
                        "--operating-point and --costs then use the calibrated probabilities (writes into "
                        "RUN/calibrated/ or a calibrated-... folder)")
    arguments.add_device(p)
    arguments.add_threads(p)
    arguments.add_workers(p)
    arguments.add_cache(p)
    arguments.add_progress(p)
    p.add_argument("--data-root", type=Path,
                   help="folder holding the run's dataset (default: the one it was trained from)")
    arguments.add_roots(p, data=False)
    args = p.parse_args(argv)
    given = cli.given_options(p, argv)
    if args.run is not None and given & {"model_index", "model", "dataset", "objective", "datetime"}:
        raise cli.UserError("--run names the run itself; leave out --model_index/--model, --dataset, --objective and "
                            "--datetime")
    if args.model_index is not None and args.model is not None:
        raise cli.UserError("--model_index and --model both name the network; give one of them")
    if args.run is None and ((args.model_index is None and args.model is None) or args.dataset is None):
        raise cli.UserError("name the run: --run RUN_DIR, or --model_index (or --model) and --dataset (with "
                            "--objective and --datetime to pick one)")
    many, few = args.shot_thresholds
    if few > many:
        raise cli.UserError(f"--shot-thresholds {many} {few}: the first (many-shot) must be >= the second (few-shot)")
    if args.logit_adjust is not None and args.tau_norm is not None:
        raise cli.UserError("--logit-adjust and --tau-norm are two post-hoc corrections with folders of their own; "
                            "run 2_test.py once with each")
    if args.operating_point is not None and args.costs is not None:
        raise cli.UserError("--operating-point and --costs are two decision rules; test each in a run of its own")
    if (args.logit_adjust is not None or args.tau_norm is not None) and deciding(args):
        raise cli.UserError("--operating-point, --costs and --calibrate decide on the model's own probabilities; "
                            "leave out --logit-adjust and --tau-norm")
    if args.costs is not None and not args.costs.is_file():
        raise cli.UserError(f"--costs {args.costs}: no such file")
    return args


def deciding(args) -> bool:
    return args.operating_point is not None or args.costs is not None or args.calibrate is not None


def tau_or_auto(text: str):
    return text if text == "auto" else cli.non_negative_float(text)


def test(argv=None):
    args = parse_args(argv)
    engine.use_threads(args.threads)
    run_dir = args.run or runs.find_run(args.logs_root, get_model.model_name(plan.model_of(args)), args.dataset,
                                        args.objective, args.datetime)
    names = [f.name for f in dataclasses.fields(evaluation.Options) if f.name != "progress"]
    options = evaluation.Options(**{name: getattr(args, name) for name in names}, progress=not args.no_progress)
    if deciding(args):
        print_decision(chosen_decisions.evaluate(run_dir, options, args.operating_point, args.costs,
                                                 args.calibrate is not None))
        return 0
    tested = evaluation.evaluate(run_dir, options)
    settings, scores, adjusted = tested.settings, tested.scores, tested.correction.columns
    if tested.correction.chosen:
        print(tested.correction.chosen)
    print(f"{run_dir}: {settings['checkpoint']} on the {settings['split']} split "
          f"({cli.counted(settings['images'], 'image')})"
          + (f", logits adjusted with tau {adjusted['tau']:g}" if "tau" in adjusted else "")
          + (f", classifier tau-normalised with tau {adjusted['tau_norm']:g}" if "tau_norm" in adjusted else ""))
    print(f"top-1 accuracy {scores['acc']:.2f}%   top-5 accuracy {scores['top5acc']:.2f}%")
    print(metrics.format_table(scores))
    if args.bootstrap:
        print(f"[95% interval: stratified bootstrap over the {cli.counted(settings['images'], 'test image')}, "
              f"{cli.counted(args.bootstrap, 'resample')}]")
    record = tested.subject.record
    print(metrics.describe_shot_groups(record.class_counts, args.shot_thresholds, record.class_names))
    metrics.warn_zero_recall(metrics.zero_recall_classes(tested.labels, tested.logits, record.class_names),
                             f"{settings['checkpoint']} on the {settings['split']} split", run_dir.parent.name)
    print(f"wrote {', '.join(evaluation.TEST_FILES)} into {tested.out_dir}")
    if tested.out_dir != tested.canonical_dir:
        print(f"(this test is set otherwise than the one in {tested.canonical_dir}, which is kept)")
    return 0


def print_decision(tested: chosen_decisions.DecisionTested):
    chosen, row, scores = tested.chosen, tested.row, tested.scores
    if chosen.decision.temperature != 1.0:
        print(f"temperature {chosen.decision.temperature:.4g} (fit on the valid split): test ECE "
              f"{row['ece_before']:.2f}% -> {row['ece_after']:.2f}%, "
              f"NLL {row['nll_before']:.4f} -> {row['nll_after']:.4f}")
    if chosen.point is not None:
        saved = chosen.chosen_files[chosen_decisions.OPERATING_POINT_FILE]
        argmax = saved["valid_argmax"]
        print(f"operating point {chosen.point}: threshold {row['threshold']:.4g} on p({row['class']}), chosen on the "
              f"valid split (recall {saved['valid']['recall']:.2f}, precision "
              f"{metrics.format_value(saved['valid']['precision'])}; the argmax there: recall "
              f"{metrics.format_value(argmax['recall'])}, precision {metrics.format_value(argmax['precision'])})"
              + ("" if saved["target_reached_on_valid"] else f"; no threshold reaches {chosen.point.kind} "
                 f"{chosen.point.target:g} on the valid split: the best one is used")
              + (f"; the argmax reaches {chosen.point.kind} {chosen.point.target:g} there already: the rule "
                 f"may cost {'precision' if chosen.point.kind == 'recall' else 'recall'} for nothing"
                 if argmax[chosen.point.kind] >= 100 * chosen.point.target else ""))
        for name in ("recall", "precision", "false_positive_rate"):
            print(f"  test {name:<19} {interval(row, name)}   argmax {interval(row, 'argmax_' + name)}")
    if chosen.decision.costs is not None:
        print(f"mean cost per image: {interval(row, 'cost')}   argmax {interval(row, 'argmax_cost')}   "
              f"difference {interval(row, 'cost_difference')}")
    print(f"under the rule: bacc {interval(row, 'bacc')}, macro F1 {interval(row, 'macro_f1')}, worst class "
          f"{row['worst_class']} recall {row['worst_recall']:.2f}   (argmax: bacc {interval(scores, 'bacc')})")
    print(f"[95% intervals: stratified bootstrap over the {cli.counted(tested.images, 'test image')}]")
    print(f"wrote {', '.join(sorted(p.name for p in tested.out_dir.iterdir() if p.is_file()))} "
          f"into {tested.out_dir}")


def interval(row: dict, name: str) -> str:
    return metrics.format_value(row[name], row.get(name + "_ci_low"), row.get(name + "_ci_high"))


def main(argv=None) -> int:
    return cli.run_main(test, argv)


if __name__ == "__main__":
    sys.exit(main())
