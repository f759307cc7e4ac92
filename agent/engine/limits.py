"""Bounds on what a plan may ask for, in a module of their own so that the commands' options can share
them without importing the engine (torch) when they are declared.

Plans arrive over the network, and a plan far past any device (a 10^12-token context, a million
models) is refused with its reason instead of being attempted; a command's option is refused the same.
"""

from __future__ import annotations

MAX_CONTEXT_TOKENS = 1 << 24  # 16,777,216 tokens: 16x the longest context the zoo's models were trained on
MAX_LIST_LEN = 256
MAX_TIMEOUT_S = 86_400.0
# A memory cap below 64 MiB cannot hold a CUDA context; above 1 PiB it is no cap (and no longer fits
# the records' 64-bit integers).
MIN_MEMORY_CAP, MAX_MEMORY_CAP = 64 << 20, 1 << 50
