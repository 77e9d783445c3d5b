#!/usr/bin/env bash
# Paper-scale merging benchmark on a lent GPU (issue 7): 40 synthetic adapters of rank 32 on the
# attention of a Llama-3.2-1B-shaped model, every fast method side by side, on CUDA.
#
# Installs nothing: it needs python3 with torch (CUDA), transformers and peft (any recent versions;
# the ones used are recorded in the JSON). Run from anywhere:
#
#     OUT=/some/dir bash bench/gpu_check.sh
#
# Writes to $OUT: llama-3.2-1b-cuda.json (rewritten after every method, so a timeout keeps what
# finished; "complete": true at the end), bench.log, env.txt. Designed to finish in under 2 minutes
# on an H200; hard stop after 150 s. Methods left out here (peft ties_svd / dare_ties_svd, our
# TIES) cost one more full SVD per module each and add nothing to the comparison with peft's svd.
# To commit the result: copy $OUT/llama-3.2-1b-cuda.json to data/bench/ (the Performance chapter
# shows it when present).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python3 -c "import sys, torch, transformers, peft; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')" 2>&1
  nproc
} > "$OUT/env.txt"
cat "$OUT/env.txt"

timeout 150 python3 -m hydralib.cli bench --preset llama-3.2-1b --device cuda --repeats 3 --budget 10 \
  --methods hydraopt-exact peft-svd hydraopt-adam hydraopt-exact-k1 ta-factored ta-dense peft-cat \
  --out "$OUT/llama-3.2-1b-cuda.json" --overwrite --quiet 2>&1 | tee "$OUT/bench.log"
status=${PIPESTATUS[0]}
echo "exit status $status" | tee -a "$OUT/bench.log"
exit "$status"
