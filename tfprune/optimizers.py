"""Optimizer wrappers for pruning methods (re-exports).

Each method owns its optimizer class; this module only re-exports them under their
historical names, so `tfprune.optimizers.ADMM(...)` and saved `.keras` files keep working:

  * `WrappedOptimizer`, `GradientHook`: `tfprune.optimizer_wrapper`;
  * `ADMM` (registered `tfprune>ADMMOptimizer`): `tfprune.methods.admm.ADMMOptimizer`;
  * `L0Projection`: `tfprune.methods.l0_projection.L0Projection`.
"""
from tfprune.methods.admm import ADMMOptimizer as ADMM
from tfprune.methods.l0_projection import L0Projection
from tfprune.optimizer_wrapper import GradientHook
from tfprune.optimizer_wrapper import WrappedOptimizer

__all__ = ["ADMM", "GradientHook", "L0Projection", "WrappedOptimizer"]
