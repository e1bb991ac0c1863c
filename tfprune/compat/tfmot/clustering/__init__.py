"""`tfmot.clustering`: only `tfmot.clustering.keras` exists (as in TFMOT)."""
from tfprune.compat.tfmot.clustering import keras
