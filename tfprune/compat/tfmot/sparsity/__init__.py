"""`tfmot.sparsity`: only `tfmot.sparsity.keras` exists (as in TFMOT)."""
from tfprune.compat.tfmot.sparsity import keras
