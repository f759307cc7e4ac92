"""The measurement engine: honest long-context sweeps (prefill, decode, memory, max context).

Modules: `plan` (validated sweep plans), `loop` (the one measurement loop), `forward` (runtime
adapters: prefill and decode per runtime), `memory` (measured and analytic memory split), `point`
(one point end to end), `worker` / `isolation` (points and probes in child processes) speaking
`protocol` (typed jobs) and `outcome` (typed outcomes, with their phase windows), `maxctx`
(grow-then-bisect search), `manifest` (environment of every result), `recorder` (the framing of
every run: start, progress, results, finish), `runner` (a plan to records) and `cli` (the
`ctxscope agent run` / `maxctx` commands).
"""
