"""Verified sparse TFLite export for LiteRT and TensorFlow Lite Micro (re-exports only)."""
from tfprune.export.c_array import c_array
from tfprune.export.inspect import InvalidTFLiteError
from tfprune.export.inspect import inspect
from tfprune.export.tflite import ExportResult
from tfprune.export.tflite import convert
from tfprune.export.tflite import save_tflite
from tfprune.export.tflite import to_tflite
from tfprune.export.verify import VerificationError
