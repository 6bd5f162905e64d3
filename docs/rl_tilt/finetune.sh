#!/bin/bash
# usage: docs/rl_tilt/finetune.sh DENSE_CKPT STRATEGY_JSON SEED OUT   (from the repository root)
# The strategy fine-tuned as the comparison's rl cell and the rank check do: l1-filter, hard, the dynamic-gates
# preset's data and 6 epochs at lr 0.05, one thread.
DYNPRUNE_DATA=${DYNPRUNE_DATA:-../shared/data} python -m dynprune.train --init "$1" --prune l1-filter --hard --ratios "$2" \
  --epochs 6 --lr 0.05 --seed "$3" --threads 1 --no-latency --no-progress --wandb disabled --model resnet20 \
  --dataset fashion-mnist --train-subset 10000 --val-size 2000 --out "$4"
