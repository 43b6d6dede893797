"""Turning a trained model into something other tools run: ONNX graphs (:mod:`~asczoo.deploy.export`,
with the frontend inside: :mod:`~asczoo.deploy.waveform_export`), int8/fp16 models
(:mod:`~asczoo.deploy.quantize`), DCASE Task 1 inference packages (:mod:`~asczoo.deploy.dcase_package`),
the HEAR 2021 module (:mod:`~asczoo.deploy.hear`, offered to the HEAR tools as ``asczoo.hear``) and
the demo page of ``asczoo demo`` and of a model's Hugging Face Space (:mod:`~asczoo.deploy.demo`).

How quantised weights are stored and read back is part of the model format, not of this package:
:mod:`asczoo.stored_weights`. Measuring a model (complexity, explanations) is :mod:`asczoo.analysis`.
"""
