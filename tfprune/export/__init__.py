"""Verified sparse TFLite export for LiteRT and TensorFlow Lite Micro (re-exports only).

Entry point: `convert(model, ...) -> ExportResult` (`.flatbuffer`, `.save(path)`).
`to_tflite` (returns the bytes) and `save_tflite` (writes the file, returns the
`ExportResult`) are aliases of it kept for existing code.

`inspect_tflite` and `write_c_array` are the functions of the `inspect` and
`c_array` submodules; the names `inspect` and `c_array` here are the same
functions (kept callable: `tfprune.export.inspect(path)`), so import the
submodules' other names as `from tfprune.export.inspect import ...`.
"""
from tfprune.export.c_array import c_array
from tfprune.export.c_array import c_array as write_c_array
from tfprune.export.errors import ExportError
from tfprune.export.errors import InvalidTFLiteError
from tfprune.export.errors import VerificationError
from tfprune.export.inspect import inspect
from tfprune.export.inspect import inspect as inspect_tflite
from tfprune.export.tflite import ExportResult
from tfprune.export.tflite import convert
from tfprune.export.tflite import save_tflite
from tfprune.export.tflite import to_tflite

__all__ = [
    "convert", "to_tflite", "save_tflite", "ExportResult", "inspect", "inspect_tflite",
    "c_array", "write_c_array", "ExportError", "InvalidTFLiteError", "VerificationError",
]
