#!/bin/bash
# `alignpro overopt` end to end on CUDA with tiny random models: a 2-layer Llama with SmolLM2's tokenizer as π_F
# and ρ_sft, a 1-layer BERT with MiniLM's tokenizer as the proxies' base, a length-based `python:` gold reward.
# Stages: labelling, two Bradley–Terry proxies (N = 16, 48), distill runs of the prompter and the oracle, the
# closed-form pool and the checkpoint measurement (CheckpointPolicy on cuda); then the same study again, which must
# skip every stage and give the same points. Writes DIR/overopt.log, DIR/overopt.md and DIR/overopt.png.
#
# Needs: a GPU machine whose python3 has torch with CUDA (no network needed), run from the repository root, with
#   .gpu/whl/*.whl       wheels of the dependencies missing from that image
#   .gpu/a/tok/          SmolLM2-135M-Instruct's tokenizer files, tokenizer.json compressed as tokenizer.json.xz
#   .gpu/c/bert-tok/     all-MiniLM-L6-v2's tokenizer files
#   .gpu/c/gpu_gold.py   `length_gold(prompts, answers) -> list[float]`, the gold reward (a `python:` reward spec)
#   OUT=DIR              where the log, table and figure go
# Run:  OUT=/tmp/out bash scripts/device/gpu-overopt-tiny.sh
# Last run at 53fbf46 on one NVIDIA H200 (docs/benchmarks.md, "alignpro overopt on CUDA").
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
source scripts/device/gpu-env.sh
export PYTHONPATH=$PYTHONPATH:$PWD/.gpu/c
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/overopt.log
/usr/bin/time -f "overopt on cuda %e s" timeout 420 python3 - <<'PY' 2>&1 | grep -v "Loading weights\|Writing model" | tail -80 | tee -a $OUT/overopt.log
import lzma, math, pathlib, shutil, time, torch, yaml
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM)
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
tok = pathlib.Path("/tmp/tok"); shutil.copytree(".gpu/a/tok", tok, dirs_exist_ok=True)
(tok / "tokenizer.json").write_bytes(lzma.decompress((tok / "tokenizer.json.xz").read_bytes()))
t = AutoTokenizer.from_pretrained(str(tok)); torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=len(t), max_position_embeddings=2048, tie_word_embeddings=True,
    bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)).save_pretrained("/tmp/tiny")
t.save_pretrained("/tmp/tiny")
bt = AutoTokenizer.from_pretrained(".gpu/c/bert-tok")
BertForSequenceClassification(BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    vocab_size=bt.vocab_size, max_position_embeddings=256, num_labels=1)).save_pretrained("/tmp/bert")
bt.save_pretrained("/tmp/bert")
common = dict(algo="distill", kl_coef=0.1, kl_control="fixed", batch_size=4, k=2, lr=1e-2, epochs=1, lora=True,
              lora_r=4, lora_alpha=8, max_new_tokens=16)
pathlib.Path("/tmp/prompter.yaml").write_text(yaml.safe_dump(dict(role="prompter", template="rewrite-reminder", m=1,
                                                                  baseline_m=1, identity_prior=0.5, **common)))
pathlib.Path("/tmp/oracle.yaml").write_text(yaml.safe_dump(dict(role="oracle", **common)))
from alignpro.config import build_config
from alignpro.overopt.config import OveroptConfig
from alignpro.overopt.run import run_overopt
cfg = build_config(OveroptConfig, dict(
    out="/tmp/oo", gold="python:gpu_gold:length_gold", train_prompts="builtin:train", eval_prompts="builtin-ifeval:eval",
    n_eval_prompts=16, target="hf:/tmp/tiny", prompter="hf:/tmp/tiny", n_label_prompts=32, answers_per_prompt=3,
    label_max_new_tokens=16, n_pairs=[16, 48], rm_base="hf:/tmp/bert", rm_epochs=1, rm_lr=1e-3, answer_max_new_tokens=16,
    k=2, m=1, lams=[math.inf, 0.1, 0.0], prompter_recipe="/tmp/prompter.yaml", oracle_recipe="/tmp/oracle.yaml",
    train_steps=4, checkpoint_every=2, n_fresh=2, rewrites_per_prompt=2, batch_size=64, progress=False))
print("checkpoint device:", cfg.torch_device)
t0 = time.time(); result = run_overopt(cfg); first = time.time() - t0
t0 = time.time(); again = run_overopt(cfg); print(f"first run {first:.1f} s, rerun (all stages skipped) {time.time() - t0:.1f} s, "
      f"same points: {[p.to_dict() for p in again.points] == [p.to_dict() for p in result.points]}")
print("cuda max memory allocated (GiB):", round(torch.cuda.max_memory_allocated() / 2**30, 2))
for rm in ("rm-16", "rm-48"):
    print(rm, pathlib.Path(f"/tmp/oo/{rm}/reward_model.json").read_text().count('"device": "auto"'), "device auto in its config")
PY
cp /tmp/oo/overopt.md /tmp/oo/overopt.png $OUT/ 2>/dev/null; ls /tmp/oo
