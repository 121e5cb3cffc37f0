#!/usr/bin/env bash
# The GPU benchmark, as run on a lent device machine (one NVIDIA H100/H200, no network). Prepare first,
# on a machine with the PyPI packages:  python bench/prepare_gpu.py   (writes .gpu/ and .whl/)
#
#   bash bench/gpu_bench.sh                 # results and logs go to $OUT (default docs/benchmarks)
#   DRY_RUN=1 bash bench/gpu_bench.sh       # the same commands on a tiny slice, on any machine, to check the script
#                                           # (results to a scratch folder unless OUT is set)
#   SMOKE=1 bash bench/gpu_bench.sh         # on the card, about a minute: the two CUDA-graph systems on 512 texts for
#                                           # one epoch, to see that the capture works before the full run
#
# Two invocations of bench/train_bench.py on all-MiniLM-L6-v2 and the built-in rotten_tomatoes splits
# (all 10,207 training texts, 3 epochs), most important first (a run stopped at its time limit keeps
# what finished):
#   A  the claim: taskembed with CUDA graphs (train.cuda_graphs) at B1's own batch and rates, and the
#      large-batch recipe with graphs (batch 128, rates x sqrt(4); on the CPU it kept accuracy,
#      docs/ablations.md), against the tuned Trainer (B1), 3 seeds each
#   B  what each part is worth, seed 0: taskembed's default recipe and the large-batch one without graphs,
#      B1 at the large batch and rate, B0 (run_classification defaults), plus inference: predict against
#      pipeline("text-classification"), embeddings against SentenceTransformer.encode
# and the card's measured bf16 matrix-product rate, which the docs divide the achieved rate by.
# Only the JSON reports and one log go to $OUT (the device tool returns 8 files at most); the Markdown
# tables are rendered from the JSON afterwards: python bench/train_bench.py --render FILE.json
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
if [[ -n "${DRY_RUN:-}" ]]; then
  # A check of the script, not GPU figures: its reports go to a scratch folder unless OUT says otherwise.
  OUT="${OUT:-$(mktemp -d)}"
  extra=(--max-train 64 --max-test 32 --epochs 1 --infer-repeats 1)
elif [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BENCH_COMMAND="bash bench/gpu_bench.sh (see docs/benchmarks.md, GPU)"
OUT="${OUT:-docs/benchmarks}"
mkdir -p "$OUT"
echo "results go to $OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 - <<'EOF' | tee "$OUT/gpu-ceiling.txt"
import json, torch
if not torch.cuda.is_available():
    print(json.dumps({"device": "cpu", "note": "no GPU: no ceiling measured"}))
else:
    # The bf16 matrix-product ceiling, as METHOD.md measures it: 8192^3 on random data, median of 10 after 3 warm-ups.
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); a @ b; e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    t = sorted(times)[5]
    print(json.dumps({"device": torch.cuda.get_device_name(0), "bf16_matmul_tflops": 2 * 8192**3 / t / 1e12,
                      "torch": torch.__version__}))
EOF
scratch="$(mktemp -d)"
if [[ -n "${SMOKE:-}" ]]; then
  python3 bench/train_bench.py --mode quick --model .gpu/minilm --datasets .gpu/data/rotten_tomatoes --out-dir "$scratch" \
    --systems taskembed_graphs,taskembed_large_graphs --large-batch 128 --no-inference --name gpu-smoke 2>&1 | tee "$OUT/gpu-smoke-log.txt"
  python3 bench/train_bench.py --render "$scratch/gpu-smoke.json" >/dev/null && cat "$scratch/gpu-smoke.md"
  exit 0
fi
common=(--mode full --model .gpu/minilm --datasets .gpu/data/rotten_tomatoes --out-dir "$scratch" --timeout 150 "${extra[@]}")
run() { python3 bench/train_bench.py "${common[@]}" "$@" 2>&1 | tee -a "$OUT/gpu-log.txt"; }
run --systems taskembed_graphs,taskembed_large_graphs,b1 --large-batch 128 --seeds 0,1,2 --no-inference --name train-gpu-full
cp "$scratch/train-gpu-full.json" "$OUT/"
run --systems taskembed,taskembed_large,b1_large,b0 --large-batch 128 --seeds 0 --infer-batch-sizes "${INFER_BATCH_SIZES:-8,32,64,256}" --name train-gpu-seed0
cp "$scratch/train-gpu-seed0.json" "$OUT/"
