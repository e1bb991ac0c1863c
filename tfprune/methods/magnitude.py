"""Gradual magnitude pruning, the baseline (TFMOT parity).

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", 2017. Masks keep the largest |W| at the schedule's sparsity, recomputed
every `frequency` steps (`tfprune.schedules.PolynomialDecay` or `ConstantSparsity`), in
any scope: `layer` (TFMOT's uniform allocation), `global` (one threshold for the model),
`block` (1x4 / 1x16 for LiteRT's fast kernels), `n:m` or `structured`.
The base class already implements exactly this; this class only names it.
"""
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method


@register_method("magnitude")
class Magnitude(PruningMethod):
  """Gradual magnitude pruning; see `PruningMethod` for the arguments."""
