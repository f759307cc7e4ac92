"""Operator-level profiling: device kernel time per operator class, host gaps, and roofline figures.

A profiling pass runs apart from the timed passes (torch.profiler), so its overhead never leaks into
latency figures. Kernels are classified by a data table (kernel_classes.json); analytic FLOPs and
bytes come from the model's config and device peaks from peaks.json.
"""
