"""`tfmot.sparsity.keras` on Keras 3 (implemented in `tfprune.compat.tfmot._pruning`).

Same public names as TFMOT 0.8: `prune_low_magnitude`, `strip_pruning`, `prune_scope`,
`UpdatePruningStep`, `PruningSummaries`, `PruningSchedule`, `ConstantSparsity`,
`PolynomialDecay`, `PrunableLayer`, `PruningPolicy`, `PruneForLatencyOnXNNPack`.
"""
from tfprune.compat.tfmot._pruning import ConstantSparsity
from tfprune.compat.tfmot._pruning import PolynomialDecay
from tfprune.compat.tfmot._pruning import PrunableLayer
from tfprune.compat.tfmot._pruning import prune_low_magnitude
from tfprune.compat.tfmot._pruning import prune_scope
from tfprune.compat.tfmot._pruning import PruneForLatencyOnXNNPack
from tfprune.compat.tfmot._pruning import PruneLowMagnitude
from tfprune.compat.tfmot._pruning import PruningPolicy
from tfprune.compat.tfmot._pruning import PruningSchedule
from tfprune.compat.tfmot._pruning import PruningSummaries
from tfprune.compat.tfmot._pruning import strip_pruning
from tfprune.compat.tfmot._pruning import UpdatePruningStep

__all__ = [
    "ConstantSparsity", "PolynomialDecay", "PrunableLayer", "prune_low_magnitude",
    "prune_scope", "PruneForLatencyOnXNNPack", "PruneLowMagnitude", "PruningPolicy",
    "PruningSchedule", "PruningSummaries", "strip_pruning", "UpdatePruningStep",
]
