"""Test-wide settings: one intra-op thread per process.

The suite runs tiny models, where extra threads buy nothing, and several tests start subprocesses
(distributed training, sandboxed programs); a single thread per process keeps 2-core machines from
oversubscribing and the timings stable.
"""

import os

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)
