"""tfprune: pruning for Keras 3 and sparse TFLite export.

Public API (re-exports only). The exporter lives in `tfprune.export` and never imports
training code (tests/boundaries_test.py checks it). No function shadows its submodule:
`tfprune.shrink` is the module, `tfprune.shrink_model` its entry point.
"""
from tfprune import _quiet  # first: quiets TF for the binaries before TF loads
from tfprune import masks
from tfprune import methods
from tfprune import optimizers
from tfprune import report
from tfprune import schedules
from tfprune._liveness import DeadModelError
from tfprune.callbacks import PruningCallback
from tfprune.callbacks import PruningSummaries
from tfprune.clustering import cluster
from tfprune.clustering import ClusterWrapper
from tfprune.gates import L0Gate
from tfprune.methods import available_methods
from tfprune.methods import PostTrainingMethod
from tfprune.methods import PruningMethod
from tfprune.model import prune
from tfprune.model import strip
from tfprune.pqi import pq_index
from tfprune.registry import PrunableLayer
from tfprune.report import model_pq_index
from tfprune.report import pq_index_report
from tfprune.report import sparsity_report
from tfprune.schedules import ConstantSparsity
from tfprune.schedules import PolynomialDecay
from tfprune.shrink import shrink_model
from tfprune.wrapper import get_method
from tfprune.wrapper import PruneWrapper

__version__ = "0.1.0"

# Loaded on first use (`tfprune.data.load`, `tfprune.zoo.lenet5`): a user who only prunes
# their own model does not pay for the data sets and reference models at import time.
_LAZY_SUBMODULES = ("data", "zoo", "plots")


def __getattr__(name):
  if name in _LAZY_SUBMODULES:
    import importlib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module(f"tfprune.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'tfprune' has no attribute {name!r}")

# What `from tfprune import *` gives and the API reference documents; the submodules
# (data, masks, methods, schedules, zoo, export, ...) are documented on their own pages.
__all__ = [
    "prune", "strip", "get_method", "available_methods", "sparsity_report",
    "pq_index", "pq_index_report", "model_pq_index", "shrink_model",
    "PruneWrapper", "PruningMethod", "PostTrainingMethod", "PrunableLayer",
    "PruningCallback",
    "PruningSummaries", "ConstantSparsity", "PolynomialDecay", "L0Gate", "DeadModelError",
    "cluster", "ClusterWrapper",
    "__version__",
]
