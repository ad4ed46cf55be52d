# Sourced by the scripts/device/gpu-*.sh scripts on a GPU machine (python3 = its PyTorch image; no network):
# the wheels installed into /tmp/site and this checkout on the path, every hub offline, the embedded model's
# converted folder under /tmp/alignpro-home.
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       ALIGNPRO_HOME=/tmp/alignpro-home TOKENIZERS_PARALLELISM=false
