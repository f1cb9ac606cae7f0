"""Train one plan: a model (--model_index, or --model NAME) on a dataset with an objective.

    python 1_train.py --dataset=digits-lt --model_index=42 --objective=CCE --epochs=30 --warmup
    python 1_train.py --dataset=NAME --model resnet18 --pretrained imagenet --finetune linear --objective=LA
    python 1_train.py --resume logs/ResNet32/digits-lt/CCE/2026-11-22-05-28-42      # continue it

writes logs/<Model>/<dataset>/<objective>/<YYYY-MM-DD-HH-MM-SS>/ (see README.md).
"""
import sys

from toolkit import cli, plan, training


def train(argv=None):
    return training.start(plan.parse_args(argv)).exit_code


def main(argv=None) -> int:
    return cli.run_main(train, argv)


if __name__ == "__main__":
    sys.exit(main())
