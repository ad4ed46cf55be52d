# Sourced by a.sh / b.sh on the leased GPU machine (python3 = its PyTorch image; no network there).
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       ALIGNPRO_HOME=/tmp/alignpro-home TOKENIZERS_PARALLELISM=false
