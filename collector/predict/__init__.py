"""Prediction of an unmeasured device's TTFT and decode curves from a measured device's profiles and
the target's calibration (or, without one, its peak-table entry, marked assumed).

`inputs` reads profiles and calibrations from records; `model` scales per-class device time and
host cost and attaches the uncertainty band.
"""
