#!/usr/bin/env bash
# Your training plans: plain command lines; edit them, then run one:
#
#   bash 3_run.sh            the demo plan (below) on the embedded digits-lt dataset, 2-5 min on 2 CPU cores
#   bash 3_run.sh PLAN       another plan of this file:
#       objectives           every objective on digits-lt, same model, epochs and seed (~15 min on 2 CPU cores)
#       compare              every objective, LDAM-DRW, mixup + DRW + Balanced Softmax and CE + DRW + SAM x seeds
#                            0 1 2 on digits-lt, each tested (ERM also post-hoc logit-adjusted and tau-normalised),
#                            then the recipes report against ERM: intervals over seeds, paired differences,
#                            report.html (3 x (objectives + 3) runs, 42 for 11 objectives, ~35-60 min on 2 CPU
#                            cores, one run at a time; runs already in logs/ResNet32/digits-lt join their recipes:
#                            start from an empty folder)
#       cifar10-lt           CIFAR-10-LT (imbalance 100) from your CIFAR-10 files at CIFAR_ROOT, the LDAM-DRW paper's
#                            schedule: ERM, LA, LDAM-DRW x seeds 0 1 2, then the recipes report (9 runs of 200
#                            epochs: a GPU's work; see docs/benchmarks.md). LT_SCHEDULE and LT_DRW, set in the
#                            environment, replace the schedule, e.g. to check the plan on a tiny stand-in.
#       mislas               MiSLAS's two stages x seeds 0 1 2: ERM with mixup, then the classifier alone with
#                            LAS, class-balanced sampling and BatchNorm statistics updated (~20 min)
#       lt100                every digit cut to imbalance 100 (0_data_split.py --demo --long-tail 100: 126 training
#                            images of digit 0 down to 1 of digit 9, 26 valid and 26 test images a digit): ERM, LA,
#                            LDAM-DRW and ALRP (per image, and pooled as it was) x seeds 0-4, then the recipes
#                            report against ERM (25 runs, ~25 min)
#       finetune             how much of a pretrained network to train (--finetune), on digits-lt100: ResNet20 at 16 px
#                            pretrained on every digit outside digits-lt100's valid and test splits (balanced), then
#                            from scratch, full, last-stage and linear x seeds 0-4, the report against scratch
#                            (21 runs, ~10 min on 1 CPU thread; docs/models-in-use.md)
#
# Each plan stops at the first command that fails.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^# Each plan/s/^# \{0,1\}//p' "$0"   # this header: the plans and what they run
    exit 0
fi
cd "$(dirname "$0")"

DATASET=digits-lt
MODEL=42   # ResNet32, see `python get_model.py`
DEMO_SCHEDULE="--epochs=30 --batchsize=32 --lr=0.05 --lrstep 20 26 --warmup"
every_objective() { python criterion.py --names; }   # every row of criterion.py's table, in its order

# cifar10-lt: where your CIFAR-10 is, the folder given to torchvision as root= (it holds cifar-10-batches-py/)
CIFAR_ROOT=${CIFAR_ROOT:-$HOME/data}
LT_DATASET=cifar10-lt
# kaidic/LDAM-DRW cifar_train.py:43-56 (200 epochs, batch 128, lr 0.1, weight decay 2e-4) and :366-378 (5 warm-up
# epochs; the rate x0.01 after epoch 160 and x0.0001 after 180); DRW from its 0-based epoch 160 (:199-206), which
# is --drw 161 here (counted from 1)
LT_SCHEDULE=${LT_SCHEDULE:-"--epochs=200 --batchsize=128 --lr=0.1 --warmup --lrstep 160 180 --lrstepgamma 0.01 --weight-decay 2e-4"}
LT_DRW=${LT_DRW:-161}

demo() {
    python 0_data_split.py --demo --overwrite
    for objective in ERM CCE LA; do
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=$objective $DEMO_SCHEDULE
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=$objective
    done
    python 4_report.py logs/ResNet32/$DATASET
}

objectives() {
    local objectives
    objectives=$(every_objective)
    python 0_data_split.py --demo --overwrite
    for objective in $objectives; do
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=$objective $DEMO_SCHEDULE
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=$objective
    done
    # LDAM-DRW: the margin loss, re-weighted from epoch 21 on (the standard recipe scaled to 30 epochs)
    python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=LDAM --drw 21 $DEMO_SCHEDULE
    python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=LDAM-DRW
    python 4_report.py logs/ResNet32/$DATASET --latest
}

compare() {
    local objectives
    objectives=$(every_objective)
    python 0_data_split.py --demo --overwrite
    for seed in 0 1 2; do
        for objective in $objectives; do
            python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=$objective $DEMO_SCHEDULE --seed $seed
            python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=$objective
        done
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=LDAM --drw 21 $DEMO_SCHEDULE --seed $seed
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=LDAM-DRW
        # the literature's recipes: mixup + DRW + Balanced Softmax, CE + DRW + SAM, and two post-hoc
        # corrections of the ERM run (each a recipe of its own in the report)
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=LA --mixup 0.2 --drw 21 $DEMO_SCHEDULE --seed $seed
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=LA-DRW
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=ERM --drw 21 --sam 0.05 $DEMO_SCHEDULE --seed $seed
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=ERM-DRW-SAM
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=ERM --logit-adjust auto
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=ERM --tau-norm auto
    done
    # runs that differ only in --seed form one recipe; each recipe against ERM on the seeds both have
    python 4_report.py logs/ResNet32/$DATASET --baseline ERM
}

cifar10_lt() {
    # the training set long-tailed (5000 -> 50 in the paper; here 4500 -> 45, as 500 images a class are
    # validation), validation balanced, CIFAR-10's test set whole
    python 0_data_split.py --from-torchvision CIFAR10 --root "$CIFAR_ROOT" --dataset $LT_DATASET --long-tail 100 --overwrite
    for seed in 0 1 2; do
        for objective in ERM LA; do
            python 1_train.py --dataset=$LT_DATASET --model_index=$MODEL --objective=$objective $LT_SCHEDULE --seed $seed
            python 2_test.py --dataset=$LT_DATASET --model_index=$MODEL --objective=$objective
        done
        python 1_train.py --dataset=$LT_DATASET --model_index=$MODEL --objective=LDAM --drw $LT_DRW $LT_SCHEDULE --seed $seed
        python 2_test.py --dataset=$LT_DATASET --model_index=$MODEL --objective=LDAM-DRW
    done
    python 4_report.py logs/ResNet32/$LT_DATASET --baseline ERM
}

mislas() {
    python 0_data_split.py --demo --overwrite
    for seed in 0 1 2; do
        # stage 1: the whole network, ERM on mixed batches (mixup alpha 1, MiSLAS's CIFAR-LT setting)
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=ERM --mixup 1.0 $DEMO_SCHEDULE --seed $seed
        stage1=$(ls -d logs/ResNet32/$DATASET/ERM/*/ | tail -1)
        # stage 2: from stage 1's best checkpoint, the classifier alone, 10 epochs
        python 1_train.py --dataset=$DATASET --model_index=$MODEL --objective=LAS --pretrained "$stage1" \
            --freeze-backbone --update-bn-stats --sampler class --epochs=10 --batchsize=32 --lr=0.05 --lrstep 6 8 \
            --seed $seed
        python 2_test.py --dataset=$DATASET --model_index=$MODEL --objective=LAS
    done
    python 4_report.py logs/ResNet32/$DATASET --baseline ERM
}

lt100() {
    python 0_data_split.py --demo --long-tail 100 --overwrite
    local lt=digits-lt100
    for seed in 0 1 2 3 4; do
        for objective in ERM LA ALRP; do
            python 1_train.py --dataset=$lt --model_index=$MODEL --objective=$objective $DEMO_SCHEDULE --seed $seed
            python 2_test.py --dataset=$lt --model_index=$MODEL --objective=$objective
        done
        python 1_train.py --dataset=$lt --model_index=$MODEL --objective=LDAM --drw 21 $DEMO_SCHEDULE --seed $seed
        python 2_test.py --dataset=$lt --model_index=$MODEL --objective=LDAM-DRW
        # ALRP's ranking as it was: the batch's B x C raw logits pooled into one ranking
        python 1_train.py --dataset=$lt --model_index=$MODEL --objective=ALRP --alrp-ranking pooled --alrp-tau 0 \
            $DEMO_SCHEDULE --seed $seed
        python 2_test.py --dataset=$lt --model_index=$MODEL --objective=ALRP
    done
    python 4_report.py logs/ResNet32/$lt --baseline ERM
}

finetune() {
    python 0_data_split.py --demo --long-tail 100 --overwrite
    local lt=digits-lt100 schedule="--model_index 41 --height 16 --width 16 --epochs 15 --batchsize 32 --lr 0.05
        --lrstep 10 13 --warmup --monitor bacc --threads 1"
    # the pretraining set: every rendered digit except digits-lt100's validation and test images (no leak)
    rm -rf c_original_dataset/digits-pre
    for folder in c_original_dataset/digits/*/; do
        digit=$(basename "$folder")
        mkdir -p c_original_dataset/digits-pre/$digit
        for image in "$folder"*.png; do
            name=$(basename "$image")
            [[ -e a_datasets/$lt/valid/$digit/$name || -e a_datasets/$lt/test/$digit/$name ]] \
                || cp "$image" c_original_dataset/digits-pre/$digit/
        done
    done
    python 0_data_split.py --dataset digits-pre --overwrite
    python 1_train.py --dataset digits-pre $schedule
    local start=$(ls -d logs/ResNet20/digits-pre/ERM/*/ | tail -1)
    for seed in 0 1 2 3 4; do
        python 1_train.py --dataset=$lt $schedule --seed $seed   # from scratch: the baseline
        python 2_test.py --run "$(ls -d logs/ResNet20/$lt/ERM/*/ | tail -1)"
        for mode in full last-stage linear; do
            python 1_train.py --dataset=$lt $schedule --seed $seed --pretrained "$start" --finetune $mode
            folder=ERM$([[ $mode == full ]] || echo "-$mode")
            python 2_test.py --run "$(ls -d logs/ResNet20/$lt/$folder/*/ | tail -1)"
        done
    done
    python 4_report.py logs/ResNet20/$lt --baseline ERM
}

plan=${1:-demo}
case "$plan" in
    demo) demo ;;
    objectives) objectives ;;
    compare) compare ;;
    cifar10-lt) cifar10_lt ;;
    mislas) mislas ;;
    lt100) lt100 ;;
    finetune) finetune ;;
    *) echo "error: unknown plan '$plan'; plans in 3_run.sh: demo, objectives, compare, cifar10-lt, mislas, lt100, finetune" >&2; exit 2 ;;
esac
