"""Train one plan: a model (--model_index, or --model NAME) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup
    python 1_train.py --dataset=NAME --model resnet18 --pretrained imagenet --finetune linear --objective=LA
    python 1_train.py --resume logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42      # continue it

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import sys

import torch

from toolkit import cli, engine, plan, training


def train(argv=None):
    args = plan.parse_args(argv)
    engine.use_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.deterministic:
        engine.use_deterministic_algorithms()
    distributed, device = engine.start_distributed(args.device)
    try:
        return training.train_on(args, distributed, device).exit_code
    finally:
        engine.stop_distributed(distributed)


def main(argv=None) -> int:
    return cli.run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())
