"""Pruning methods: one module per algorithm behind `base.PruningMethod` (training-time)
or `base.PostTrainingMethod` (after training); the contract is docs/methods.md.

Importing this package registers every method (needed before loading a saved model).
"""
from tfprune.methods import admm  # registers "admm"
from tfprune.methods import l0  # registers "l0"
from tfprune.methods import l0_gates  # registers "l0_gates"
from tfprune.methods import l0_projection  # registers "l0_projection"
from tfprune.methods import logsum  # registers "logsum"
from tfprune.methods import magnitude  # registers "magnitude"
from tfprune.methods import movement  # registers "movement"
from tfprune.methods import sap  # registers "sap"
from tfprune.methods import sparsegpt  # registers "sparsegpt"
from tfprune.methods import wanda  # registers "wanda"
from tfprune.methods.base import available_methods
from tfprune.methods.base import get_method_class
from tfprune.methods.base import MethodCore
from tfprune.methods.base import PostTrainingMethod
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method
