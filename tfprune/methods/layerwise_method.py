"""The shared method class of the layer-wise, post-training methods (logsum, l0).

Each layer-wise algorithm is a `tfprune.layerwise.LayerSolver` (in its own module) plus a
thin subclass of `LayerwiseMethod`, which owns what they share: the calibration settings,
`apply(model, calibration_data)` through `tfprune.layerwise.prune_layerwise`, the report
and the serialized config.
"""
from tfprune import layerwise
from tfprune.methods.base import PostTrainingMethod

# How many calibration inputs `apply` uses by default (the constructors' default).
CALIBRATION_SAMPLES = 10000


class LayerwiseMethod(PostTrainingMethod):
  """Prunes a trained model layer by layer with `solver`, label-free and retrain-free.

  Args:
    solver: the `tfprune.layerwise.LayerSolver` of the algorithm.
    target_sparsity: fraction of zeros, per layer (`scope="layer"`) or over all pruned
      layers (`scope="global"`).
    scope: `layer` or `global`.
    mode: `cascade` (inputs from the already-pruned layers, default) or `parallel`.
    calibration_samples: number of calibration samples used (None = all given).
    batch_size: calibration batch size.
    relu_model: fit only where the original ReLU output is positive (True / False /
      `"auto"`: layers with a ReLU activation).
    relu_passes: majorise-minimise passes of the ReLU model.
    stats_dtype: `float32` (float64 sums across batches) or `float64`.
    batchnorm_weighting: weight each output channel by the scale of the BatchNorm that
      follows the layer (`tfprune.layerwise.engine.weight_outputs_by_batchnorm`).
    mean_correction: remove each pruned output's mean shift on the calibration data,
      via the bias or the following BatchNorm's moving mean.
    bn_recalibration: re-estimate the BatchNorm moving statistics downstream of the
      pruned kernels on the calibration inputs through the pruned network: True, False
      or `"auto"` (default: in `parallel` mode only, where it is the fix for the
      accumulated drift; in `cascade` mode later layers already compensate it and it
      measured no gain). See `tfprune.layerwise.prune_layerwise`.
    **kwargs: `MethodCore` arguments (unused by layer-wise methods).
  """

  calibration_samples = CALIBRATION_SAMPLES
  _SCOPES = ("layer", "global")

  def __init__(self, solver, target_sparsity=0.9, scope="layer", mode="cascade",
               calibration_samples=CALIBRATION_SAMPLES, batch_size=256, relu_model=False,
               relu_passes=2, stats_dtype="float32", batchnorm_weighting=True,
               mean_correction=True, bn_recalibration="auto", **kwargs):
    if scope not in self._SCOPES:
      raise ValueError(f"Method {self.name!r} supports scope 'layer' or 'global', got "
                       f"{scope!r}.")
    super().__init__(target_sparsity=target_sparsity, scope=scope, **kwargs)
    if self.global_score != "magnitude":
      raise ValueError(f"Method {self.name!r} allocates globally by its solver's own "
                       f"scores; global_score={self.global_score!r} is not supported.")
    if mode not in layerwise.MODES:
      raise ValueError(f"mode must be one of {layerwise.MODES}, got {mode!r}.")
    if bn_recalibration not in (True, False) and bn_recalibration != "auto":
      raise ValueError(f"bn_recalibration must be True, False or 'auto', got "
                       f"{bn_recalibration!r}.")
    self.solver = solver
    self.mode = mode
    self.calibration_samples = None if calibration_samples is None else int(
        calibration_samples)
    self.batch_size = int(batch_size)
    self.relu_model = relu_model
    self.relu_passes = int(relu_passes)
    self.stats_dtype = stats_dtype
    self.batchnorm_weighting = bool(batchnorm_weighting)
    self.mean_correction = bool(mean_correction)
    self.bn_recalibration = (bn_recalibration if bn_recalibration == "auto"
                             else bool(bn_recalibration))
    self.layer_table = []
    self.skipped = []

  def apply(self, model=None, calibration_data=None, verbose=True, strategy=None):
    """Prunes `model` (default: the bound model) in place; returns the per-layer table.

    Args:
      model: a wrapped (`tfprune.prune`) or plain trained Keras model.
      calibration_data: unlabelled inputs (array, `(x, y)` or `tf.data.Dataset`); for a
        multi-input model a dict by input name or a list in `model.inputs` order
        (`tfprune.layerwise.calibration_batches`).
      verbose: one progress line per layer.
      strategy: optional `tf.distribute` strategy (statistics all-reduced over replicas).
    """
    model = self.model if model is None else model
    if model is None or calibration_data is None:
      raise ValueError(f"Method {self.name!r} needs a model and calibration data: "
                       f"method.apply(model, calibration_data).")
    self.layer_table = layerwise.prune_layerwise(
        model, calibration_data, self.solver, sparsity=self.target_sparsity,
        allocation=self.scope, mode=self.mode, batch_size=self.batch_size,
        max_samples=self.calibration_samples, relu_model=self.relu_model,
        relu_passes=self.relu_passes, stats_dtype=self.stats_dtype, verbose=verbose,
        strategy=strategy, batchnorm_weighting=self.batchnorm_weighting,
        mean_correction=self.mean_correction, bn_recalibration=self.bn_recalibration,
        max_pruning_ratio=self.max_pruning_ratio)
    self.skipped = list(self.layer_table.skipped)
    return self.layer_table

  def report(self):
    """The per-layer table of the last `apply` (sparsity, errors, iterations, seconds)
    and the kernel layers it skipped, with the reason."""
    return {"layers": list(self.layer_table),
            "skipped": [{"layer": n, "type": t, "reason": r} for n, t, r in self.skipped]}

  def get_config(self):
    config = super().get_config()
    config.update({"mode": self.mode, "calibration_samples": self.calibration_samples,
                   "batch_size": self.batch_size, "relu_model": self.relu_model,
                   "relu_passes": self.relu_passes, "stats_dtype": self.stats_dtype,
                   "batchnorm_weighting": self.batchnorm_weighting,
                   "mean_correction": self.mean_correction,
                   "bn_recalibration": self.bn_recalibration})
    return config
