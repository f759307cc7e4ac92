"""What every runtime's forward adapter shares: the prefill's output, the decoder contract, and the
synthetic prompt. The adapters are in `hf_decode` (transformers) and `native_decode` (mamba_ssm);
`forward` dispatches between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

LogitsMode = Literal["last", "all"]
# auto: the fastest path the device allows (compiled graph on a GPU); graph: the graph of the
# uncompiled step (no compile time); eager: transformers' default cache, one forward per token.
DecodePreference = Literal["auto", "graph", "eager"]


@dataclass
class PrefillOutput:
    """The logits of one prefill and whatever object holds its cache or state tensors."""

    logits: torch.Tensor
    cache: Any


class Decoder(Protocol):
    path: str
    window: int

    def step(self) -> None:
        """Decode one token at the measured context."""
        ...

    def rewind(self) -> None:
        """Return to the prompt length (untimed)."""
        ...

    def state(self) -> Any:
        """The object holding the decode cache, for measuring its size."""
        ...


def synthetic_prompt(vocab_size: int, length: int, *, seed: int, device: torch.device) -> torch.Tensor:
    """Random token ids (seeded), batch 1."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (1, length), generator=generator).to(device)


def keep_count(mode: LogitsMode) -> int:
    """Positions of logits to keep: 1 for last-token, 0 (= all) for the study's mode."""
    return 1 if mode == "last" else 0
