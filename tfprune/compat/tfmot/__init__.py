"""TFMOT's pruning API on Keras 3: `import tfprune.compat.tfmot as tfmot`.

`tfmot.sparsity.keras` (pruning) and `tfmot.clustering.keras` (weight clustering) are
provided. TFMOT's quantization API is not: `tfmot.quantization` raises an AttributeError
saying what to use instead. See docs/migration.md for the name-by-name table and the
differences in semantics.
"""
from tfprune.compat.tfmot import clustering
from tfprune.compat.tfmot import sparsity

_NOT_PROVIDED = {
    "quantization": (
        "tfprune.compat.tfmot provides tfmot.sparsity and tfmot.clustering. For int8 "
        "post-training quantization export the stripped model with "
        "tfprune.export.save_tflite(model, path, quantize='int8', "
        "representative_data=...); quantization-aware training is not supported."),
}


def __getattr__(name):
  if name in _NOT_PROVIDED:
    raise AttributeError(_NOT_PROVIDED[name])
  raise AttributeError(f"module 'tfprune.compat.tfmot' has no attribute {name!r} "
                       f"(it provides tfmot.sparsity.keras and tfmot.clustering.keras).")
