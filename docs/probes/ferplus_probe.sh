#!/bin/bash
# The FER+ probe as it ran: both modes at once, one TensorFlow thread each, so they share
# the 2 cores under the same load (run from anywhere; logs go to logs/).
cd "$(dirname "$0")/../.."
export FER2013_PATH="${FER2013_PATH:-../shared/data/fer2013.csv.gz}"
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
mkdir -p logs
for mode in majority probability; do
  nohup nice -n 19 python docs/probes/ferplus.py train --mode $mode --epochs 4 \
    --warmup-epochs 1 --precision float32 --seed 0 --save logs/ferplus_$mode.json \
    > logs/ferplus_$mode.log 2>&1 &
  echo $! > logs/ferplus_$mode.pid
done
