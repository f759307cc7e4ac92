"""Calibration of a target device: its operating point and one microbenchmark per kernel family.

The figures let the collector scale a measured device's per-class device time to this device
(`ctxscope.collector.predict`).
"""
