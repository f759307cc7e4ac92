"""Aggregation of stored results into per-device characterizations.

Pure functions over contract `PointResult` records: medians and spreads re-computed from the pooled
raw samples (never averages of averages), maximum context, Transformer/SSM crossover lengths, and
quadratic memory fits with the extrapolated length at which a capacity is reached.
"""
