"""Evaluation: anchors (x264 / x265 / SVT-AV1 through PyAV), BD-rate, RD plots, ``evaluate`` and the demo.

Submodules are imported on use (``from progvc.evaluation.evaluate import evaluate``); this package
imports nothing heavy by itself.
"""
