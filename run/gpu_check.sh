#!/usr/bin/env bash
# GPU checks, for a machine with CUDA (the test suite and CI run on CPU):
#   1. a two-epoch CUDA training run of every model on the bundled ml-100k in the all_positions
#      regime, each ending in its results table (epoch time in the table's header line);
#   2. the tests marked `gpu`, and the model, layer and baseline tests, which then build their
#      models on the GPU (RecBole picks CUDA when it is there).
# Usage, from the repository root with the package importable:
#   bash run/gpu_check.sh [output folder [run folders' parent]]   # PYTHON=python3.12 bash run/gpu_check.sh …
set -u
PY=${PYTHON:-python}
OUT=${1:-gpu-check}
RUNS=${2:-$OUT/runs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee "$OUT/device.txt" || exit 1
for model in SASRec BERT4Rec GRU4Rec NARM HyMoERec FuXiAlpha FuxiMME Mamba4Rec HM2Rec; do
    echo "== $model"
    start=$(date +%s)
    $PY run/run_recbole.py --model=$model --dataset=ml-100k --train_regime=all_positions --epochs=2 \
        --show_progress=False --state=WARNING --run_dir="$RUNS/$model" 2>&1 | tail -n 10
    echo "($model: $(( $(date +%s) - start )) s for the whole command)"
done 2>&1 | tee "$OUT/training.log"
$PY -m pytest -q -p no:cacheprovider tests/nn tests/models tests/test_baselines.py 2>&1 | tail -n 40 \
    | tee "$OUT/pytest.log"
