import os

# Tests never reach a model hub: hub ids fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run fastest on one thread, and subprocess tests must not oversubscribe a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
