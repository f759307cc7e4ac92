#!/usr/bin/env bash
# GPU: the decode curves through `ctxscope agent run` (plan bench/engine/plans/h200-curves-fair.toml)
# with the compiled step's one-row products as reductions (agent/engine/onerow.py), at the lengths of
# the decode targets of the fair-comparison issue: Qwen2.5-0.5B at 4K to 128K, Llama-3.2-1B at 64K,
# Falcon-H1-0.5B at 32K. One fresh process per point >= 16K (the plan's isolate_from). One call of
# bench/h200_curves_fair.sh; it archives each model's records as curves-<model>.tgz.
# Run from the repository root after the device README's install line; writes under $OUT (copied to
# results/engine/curves-one-row/<card>/).
#   CTXSCOPE_GIT_REVISION=<commit> bash bench/h200_one_row_curves.sh
set -uo pipefail
bash bench/h200_curves_fair.sh \
  "qwen2.5-0.5b@4096,16384,32768,65536,131072:330 llama3.2-1b@65536:90 falcon-h1-0.5b@32768:150"
