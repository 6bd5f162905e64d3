#!/bin/bash
# usage: scratch.sh T S   topk trained jointly from scratch, 15 epochs (= the preset's 9 dense + 6 fine-tune epochs)
cd /work/main; . .venv/bin/activate; export DYNPRUNE_DATA=/work/shared/data
T=$1; S=$2; out=/work/exp/scratch/topk-$T-s$S
[ -f $out/result.json ] && exit 0
rm -rf $out; mkdir -p /work/exp/scratch
python -m dynprune.train --model resnet20 --gate topk --target-macs $T --epochs 15 --train-subset 10000 --val-size 2000 \
  --lr 0.2 --budget-warmup-epochs 4 --seed $S --threads 1 --wandb disabled --no-progress --no-latency --out $out > $out.log 2>&1
