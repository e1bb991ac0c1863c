"""tfprune: pruning for Keras 3 and sparse TFLite export.

Public API (re-exports only). The exporter lives in `tfprune.export` and is imported on
its own (it never imports training code).
"""
from tfprune import masks
from tfprune import methods
from tfprune import schedules
from tfprune.callbacks import PruningCallback
from tfprune.methods import available_methods
from tfprune.methods import PruningMethod
from tfprune.model import get_method
from tfprune.model import prune
from tfprune.model import sparsity_report
from tfprune.model import strip
from tfprune.pqi import pq_index
from tfprune.registry import PrunableLayer
from tfprune.schedules import ConstantSparsity
from tfprune.schedules import PolynomialDecay
from tfprune.wrapper import PruneWrapper

__version__ = "0.1.0"
