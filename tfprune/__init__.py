"""tfprune: pruning for Keras 3 and sparse TFLite export."""
__version__ = "0.1.0"
