"""`tfmot.clustering.keras` on Keras 3 (implemented in `tfprune.compat.tfmot._clustering`).

Same public names as TFMOT 0.8: `cluster_weights`, `strip_clustering`,
`CentroidInitialization`, `cluster_scope`.
"""
from tfprune.compat.tfmot._clustering import CentroidInitialization
from tfprune.compat.tfmot._clustering import cluster_scope
from tfprune.compat.tfmot._clustering import cluster_weights
from tfprune.compat.tfmot._clustering import strip_clustering

__all__ = ["CentroidInitialization", "cluster_scope", "cluster_weights",
           "strip_clustering"]
