"""Benchmark: the engine's attention trial (`agent/engine/attention.py` `calibrate`), its decode candidates
timed both ways, in the shapes of the study's Transformers and hybrids.

The trial picks, per device and model shape, the fastest SDPA backend that agrees with a float32
reference. Decode runs from a CUDA graph on the GPU paths, so the trial times decode candidates
replayed from one; this runs the trial that way and with eager calls (each candidate's host cost
included), side by side, to show what the eager timing would have ranked. Each trial is a fresh
`calibrate` at `--length` cached positions (its float32 reference of a whole prefill must fit: 32K
does not on 80 GB); its implementation keys and trials are written as the engine writes them.

    python bench/engine/attention_trials.py --length 4096 --out attention_trials.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ctxscope.agent.engine import attention

# (query heads, key/value heads, head dim) from the zoo's configs
SHAPES = {
    "qwen2.5-0.5b": attention.Shape(14, 2, 64),
    "llama3.2-1b": attention.Shape(32, 8, 64),
    "falcon-h1-0.5b": attention.Shape(8, 2, 64),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=4096, help="cached positions (the engine uses 4096)")
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU: on a CPU every trial is eager")
    device = torch.device("cuda")
    rows = []
    for name in args.models.split(","):
        if name not in SHAPES:
            parser.error(f"unknown model {name!r}; one of {', '.join(SHAPES)}")
        for in_graph in (True, False):
            choice = attention.calibrate(
                SHAPES[name], torch.bfloat16, device, length=args.length, decode_in_graph=in_graph
            )
            record, trials = choice.record(), choice.trials_detail()
            rows.append({"model": name, "decode_in_graph": in_graph, "record": record, "trials": trials})
            print(f"{name} decode_in_graph={in_graph}: decode on {record['attention_backend_decode']}")
            for key, value in trials.items():
                if key.startswith("decode/"):
                    print(f"  {key}: {value}")
    attention.reset()
    args.out.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(),
                "gpu": torch.cuda.get_device_name(device),
                "length": args.length,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
