"""Suite-wide test settings."""

import torch

# The suite's tensors are tiny: one thread avoids oversubscription on small shared machines and
# keeps timings stable. Tests that check determinism across thread counts start subprocesses.
torch.set_num_threads(1)
