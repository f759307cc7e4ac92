"""Telemetry: power, energy, temperature, memory and clocks from NVML, jtop, tegrastats and the host,
sampled in a separate process and summarized per inference phase.

Entry points: `detect_backends()` (detect.py), `TelemetrySession` (session.py), and the
`ctxscope agent telemetry` command (cli.py). Nothing is imported or probed at import time.
"""
