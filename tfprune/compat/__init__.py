"""Compatibility layers for code written against other pruning libraries.

`tfprune.compat.tfmot`: TFMOT's pruning and clustering APIs (`tfmot.sparsity.keras`,
`tfmot.clustering.keras`) on Keras 3; change
`import tensorflow_model_optimization as tfmot` to `import tfprune.compat.tfmot as tfmot`.
See docs/migration.md.
"""
