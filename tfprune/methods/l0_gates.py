"""Structured L0 pruning with hard-concrete gates: `method="l0_gates"`.

Louizos, Welling, Kingma, "Learning Sparse Neural Networks through L0 Regularization",
ICLR 2018, applied as the structured variant of Phan et al., "Pruning Deep Neural
Networks with l0-constrained Optimization", ICDM 2020 (docs/algorithms.md section 4).

Every gated layer (Dense / Conv; by default all of them except the layers that produce
the model's outputs) gets one `tfprune.L0Gate` per output unit (neuron / filter). The
gate multiplies the unit's PRE-activation output, implemented by scaling the unit's
kernel column and bias (`W[..., j] * z_j`, `b_j * z_j`), so a closed gate makes the unit
output `activation(0)` - zero for relu / linear - and an open gate folds exactly into the
layer's own weights at `strip` time, whatever the activation.

Training (the recipe in `fit`):
  1. gate phase (`gate_fraction` of the epochs): stochastic gates, loss
     `+ lambda_l * E[||z_l||_0]` per layer (Louizos eq. 12). The target on the number of
     kept units is a constraint `E[||z_l||_0] <= k_l`; `lambda_l` is its multiplier,
     raised while the constraint is violated (`lambda += dual_lr * (E / k - 1)`) and
     reset to 0 as soon as it holds - where the paper fixes lambda by hand, this is how
     the implementation fills the gap of hitting a unit budget.
  2. hard prune: per layer keep the top-`k_l` units by `log_alpha` among those open at
     test time (ties: lower index), fold the test-time gate values into the weights, fix
     the gates open / closed (`unit_mask`), freeze them; masks close the pruned kernel
     columns (the `structured` scope).
  3. fine-tune the weights with fixed gates (cosine learning-rate decay).
`tfprune.strip(model, shrink=True)` then deletes the closed units (`tfprune.shrink`).

A phased method: under a plain `model.fit` with `PruningCallback` only the gate phase
runs, then the hard prune at train end (with a warning that the fine-tune was skipped).

Optional (`distill > 0`, the loss in `tfprune.distill`): both phases also match the softened logits of the model as it
was when `fit` began (the dense model: at the default `droprate_init` every test-time gate
is 1), Hinton et al.'s knowledge distillation - no extra data or epochs, the teacher's
logits are computed once on `x`. (It did not help on LeNet-300-100 / MNIST, whose
dense teacher is weak: bench/RESULTS_l0.md.)
"""
import math

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfprune import callbacks as callbacks_lib
from tfprune import distill
from tfprune import gates as gates_lib
from tfprune import masks as masks_lib
from tfprune import registry
from tfprune.methods.base import PruningMethod
from tfprune.methods.base import register_method
from tfprune.wrapper import PruneWrapper

L = keras.layers


def check_gateable(layer):
  """Raises ValueError unless hard-concrete unit gates can be put on `layer`."""
  ok = isinstance(layer, registry.UNIT_GATEABLE) and not isinstance(
      layer, registry.NOT_UNIT_GATEABLE)
  if ok and not isinstance(layer, L.Dense):
    ok = getattr(layer, "groups", 1) == 1 and getattr(layer, "data_format",
                                                      "channels_last") == "channels_last"
  if not ok:
    raise ValueError(
        f"Layer {layer.name!r} ({type(layer).__name__}) cannot carry L0 unit gates: "
        f"supported are Dense and Conv1D/2D/3D (groups=1, channels_last).")


@keras.saving.register_keras_serializable(package="tfprune")
class L0GateWrapper(PruneWrapper):
  """A `PruneWrapper` whose layer's output units are gated by a `tfprune.L0Gate`.

  Computes `layer` with kernel `W * mask * z` and bias `b * z` (z broadcast over the
  output-unit axis): the gate acts on the pre-activation output. Also holds the Lagrange
  multiplier `l0_lambda` of its unit budget.
  """

  def __init__(self, layer, method=None, **kwargs):
    check_gateable(layer)
    super().__init__(layer, method=method, **kwargs)
    self.gate = None

  def build(self, input_shape=None):
    super().build(input_shape)
    kernel = self.prunable_weights[0]
    method = self._method
    self.gate = gates_lib.L0Gate(
        units=int(kernel.shape[-1]),
        droprate_init=getattr(method, "droprate_init", 0.05),
        log_alpha_scale=getattr(method, "log_alpha_scale", 1.0),
        name=f"{self.layer.name}_gate")
    self.gate.build((None, int(kernel.shape[-1])))
    self.l0_lambda = self.add_weight(name="l0_lambda", shape=(), initializer="zeros",
                                     trainable=False)
    self.built = True

  @property
  def bias(self):
    return self.layer.bias if getattr(self.layer, "use_bias", False) else None

  def _effective(self, z):
    kernel = self.prunable_weights[0]
    mapping = [(kernel, kernel * self.masks[0] * tf.cast(z, kernel.dtype))]
    if self.bias is not None:
      mapping.append((self.bias, self.bias * tf.cast(z, self.bias.dtype)))
    return mapping

  def state_mapping(self, training):
    """Masked weights scaled by the gates (stochastic while training)."""
    return self._effective(self.gate.gates(training=bool(training)))

  def stripped_weights(self):
    """The inner layer's weights with masks and test-time gates folded in (NumPy)."""
    z = self.gate.gates(training=False)
    folded = {id(v): value for v, value in self._effective(z)}
    return [np.asarray(folded[id(v)]) if id(v) in folded else v.numpy()
            for v in self.layer.weights]

  def open_units(self):
    return self.gate.open_units()


def _output_layer_ids(model):
  """Ids of the layers whose outputs are model outputs (never gated by default)."""
  ids = set()
  for t in model.outputs:
    history = getattr(t, "_keras_history", None)
    if history is not None:
      ids.add(id(history[0]))
  return ids


@register_method("l0_gates")
class L0Gates(PruningMethod):
  """Structured L0: hard-concrete gates on neurons / filters, then a hard unit budget.

  Args:
    target_sparsity: fraction of the units of each gated layer to close (with
      `allocation="global"`: of all gated units together).
    target_units: optional `{layer_name: units_to_keep}`, overriding `target_sparsity`
      for the named layers (allocation "layer" only).
    allocation: `layer` (a budget and a multiplier per layer) or `global`.
    droprate_init: initial gate closing probability (trained models: small).
    log_alpha_scale: gate learning-rate multiplier (see `tfprune.L0Gate`).
    lambda_init: initial Lagrange multiplier of every budget.
    dual_lr: dual-ascent step of the multipliers, per training step.
    lambda_max: cap of the multipliers (so the data loss can keep the useful units).
    gate_fraction: fraction of `fit`'s epochs spent with stochastic gates; the rest
      fine-tunes with fixed gates.
    finetune_lr_scale: the fine-tune's cosine decay starts at this multiple of the
      optimizer's (constant) learning rate.
    distill: weight in [0, 1) of the distillation term in `fit` (0: plain loss):
      `(1 - distill) * CE(y, logits) + distill * T^2 * KL(softmax(t / T) ||
      softmax(logits / T))`, `t` the logits of the model when `fit` began. Needs integer
      labels and the default loss.
    temperature: the distillation temperature `T`.
    **kwargs: `schedule` etc. of `PruningMethod` (the scope is always `structured`).
  """

  phased = True
  structured_graph = False  # one gate per layer unit (its own masks)

  def __init__(self, target_sparsity=0.5, target_units=None, allocation="layer",
               droprate_init=0.05, log_alpha_scale=10.0, lambda_init=0.0, dual_lr=1e-3,
               lambda_max=0.02, gate_fraction=0.6, finetune_lr_scale=1.0, distill=0.0,
               temperature=4.0, **kwargs):
    kwargs.pop("scope", None)
    super().__init__(target_sparsity=target_sparsity, scope="structured",
                     allocation=allocation, **kwargs)
    gates_lib.log_alpha_for_droprate(droprate_init)
    self.target_units = dict(target_units or {})
    for name, k in self.target_units.items():
      if int(k) < 1:
        raise ValueError(f"target_units[{name!r}] must be >= 1, got {k!r}.")
    if self.target_units and allocation != "layer":
      raise ValueError("target_units needs allocation='layer'.")
    if not 0.0 < float(gate_fraction) < 1.0:
      raise ValueError(f"gate_fraction must be in (0, 1), got {gate_fraction!r}.")
    self.droprate_init = float(droprate_init)
    self.log_alpha_scale = float(log_alpha_scale)
    self.lambda_init = float(lambda_init)
    self.dual_lr = float(dual_lr)
    self.lambda_max = float(lambda_max)
    self.gate_fraction = float(gate_fraction)
    if not 0.0 <= float(distill) < 1.0:
      raise ValueError(f"distill must be in [0, 1), got {distill!r}.")
    if float(temperature) <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    self.distill = float(distill)
    if float(finetune_lr_scale) <= 0:
      raise ValueError(f"finetune_lr_scale must be > 0, got {finetune_lr_scale!r}.")
    self.finetune_lr_scale = float(finetune_lr_scale)
    self.temperature = float(temperature)

  # ------------------------------------------------------------ wrapping
  def make_wrapper(self, layer):
    return L0GateWrapper(layer, method=self)

  def select_layers(self, model, layers, explicit=False):
    if explicit:
      for layer in layers:
        check_gateable(layer)
      return layers
    outputs = _output_layer_ids(model)
    chosen = []
    for layer in layers:
      if id(layer) in outputs:
        continue
      try:
        check_gateable(layer)
      except ValueError:
        continue
      chosen.append(layer)
    if not chosen:
      raise ValueError(f"Model {model.name!r} has no Dense/Conv layer to gate apart from "
                       f"its output layers; name them with layers=[...].")
    return chosen

  def bind(self, model):
    super().bind(model)
    bad = [w.name for w in self.wrappers if not isinstance(w, L0GateWrapper)]
    if bad:
      raise ValueError(f"The l0_gates method needs L0GateWrapper layers (made by "
                       f"tfprune.prune(model, 'l0_gates')); got plain wrappers {bad}.")
    names = {w.layer.name for w in self.wrappers}
    unknown = sorted(set(self.target_units) - names)
    if unknown:
      raise ValueError(f"target_units names {unknown}, which are not gated layers; gated "
                       f"layers are {sorted(names)}.")
    return self

  # ------------------------------------------------------------ budgets
  def budgets(self):
    """Units to keep per gated layer (dict), or for all of them (global allocation)."""
    self._require_bound()
    if self.allocation == "global":
      total = sum(w.gate.units for w in self.wrappers)
      return {"__global__": int(masks_lib.keep_count(total, self.target_sparsity))}
    out = {}
    for w in self.wrappers:
      k = self.target_units.get(w.layer.name)
      if k is None:
        k = int(masks_lib.keep_count(w.gate.units, self.target_sparsity))
      out[w.layer.name] = max(1, min(int(k), w.gate.units))
    return out

  def regularization(self, wrapper):
    """`lambda * E[||z||_0]` of one layer (Louizos et al. eq. 12)."""
    return wrapper.l0_lambda * wrapper.gate.expected_l0()

  def on_train_begin(self, optimizer=None):
    super().on_train_begin(optimizer=optimizer)
    self._budget = self.budgets()
    if not getattr(self, "_lambda_initialised", False):
      for w in self.wrappers:
        w.l0_lambda.assign(self.lambda_init)
      self._lambda_initialised = True

  def _dual_update(self, lam, violation):
    """Raises lambda while the budget is violated; drops it to 0 once it is met.

    (Plain dual ascent lags behind the gates and over-closes whole layers when the
    training budget is a few epochs; resetting at feasibility stops the push at once.)
    """
    raised = tf.minimum(lam + self.dual_lr * violation, self.lambda_max)
    return tf.where(violation > 0.0, raised, tf.zeros_like(lam))

  def update(self, step):
    """Dual ascent on each budget's multiplier (graph mode)."""
    del step
    budget = self._budget
    if self.allocation == "global":
      expected = tf.add_n([w.gate.expected_l0() for w in self.wrappers])
      violation = expected / float(budget["__global__"]) - 1.0
      for w in self.wrappers:
        w.l0_lambda.assign(self._dual_update(w.l0_lambda, violation))
    else:
      for w in self.wrappers:
        violation = w.gate.expected_l0() / float(budget[w.layer.name]) - 1.0
        w.l0_lambda.assign(self._dual_update(w.l0_lambda, violation))

  def finish_phases(self):
    """A plain `model.fit` ran the gate phase only: hard prune to the budget now."""
    if all(not w.gate.trainable for w in self.wrappers):
      return  # already hard-pruned
    logging.warning("l0_gates: model.fit ran the gate phase only; hard-pruning to the "
                    "unit budget at train end, the fine-tune with fixed gates was skipped. "
                    "Use method.fit(model, x, y, epochs=...) for gates -> hard prune -> "
                    "fine-tune.")
    self.last_kept = self.hard_prune()

  # ------------------------------------------------------------ hard prune
  def kept_units(self):
    """Per gated layer name, a boolean array of the top-k units by `log_alpha`."""
    self._require_bound()
    budget = self.budgets()
    scores = {w.layer.name: np.asarray(w.gate.log_alpha, np.float64) for w in self.wrappers}
    if self.allocation == "global":
      names = [w.layer.name for w in self.wrappers]
      allscores = np.concatenate([scores[n] for n in names])
      order = np.argsort(-allscores, kind="stable")[:budget["__global__"]]
      keep = np.zeros(allscores.shape, bool)
      keep[order] = True
      parts = np.split(keep, np.cumsum([scores[n].size for n in names])[:-1])
      return dict(zip(names, parts))
    out = {}
    for name, score in scores.items():
      order = np.argsort(-score, kind="stable")[:budget[name]]
      keep = np.zeros(score.shape, bool)
      keep[order] = True
      out[name] = keep
    return out

  def hard_prune(self):
    """Fixes the gates: keeps the budgeted units, folds the gate values into the weights.

    After this, training (without the penalty: multipliers are zeroed) fine-tunes the
    kept units; inference is unchanged for every kept unit.

    Returns:
      `{layer_name: number of kept units}`.
    """
    kept = self.kept_units()
    for w in self.wrappers:
      keep = kept[w.layer.name]
      z = w.gate.gates(training=False).numpy()
      # A budgeted unit whose test-time gate is closed re-opens at its mean-field
      # value P(z != 0); fine-tuning follows.
      z = np.where(z > 0, z, w.gate.open_probability().numpy()) * keep
      kernel = w.prunable_weights[0]
      kernel.assign(kernel.numpy() * z)
      if w.bias is not None:
        w.bias.assign(w.bias.numpy() * z)
      w.gate.set_log_alpha(np.where(keep, 12.0, -12.0))
      w.gate.unit_mask.assign(keep.astype(np.float32))
      w.gate.trainable = False
      mask = np.broadcast_to(keep.astype(np.float32), kernel.shape)
      w.set_masks([mask])
      w.l0_lambda.assign(0.0)
    return {name: int(k.sum()) for name, k in kept.items()}

  def compute_masks(self, sparsity):
    """Structured masks from the current gates (columns of the closed units)."""
    del sparsity
    kept = self.kept_units()
    return [tf.broadcast_to(tf.constant(kept[w.layer.name], tf.float32), w.masks[0].shape)
            for w in self.wrappers]

  def diagnostics(self):
    out = super().diagnostics()
    for w in self.wrappers:
      out[f"open_units/{w.layer.name}"] = float(np.sum(w.open_units()))
      out[f"expected_l0/{w.layer.name}"] = float(w.gate.expected_l0())
      out[f"lambda/{w.layer.name}"] = float(w.l0_lambda.numpy())
    return out

  # ------------------------------------------------------------ recipe
  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """Gate phase, hard prune to the unit budget, fine-tune with fixed gates."""
    if model is not self.model:
      self.bind(model)
    optimizer = optimizer or keras.optimizers.Adam(1e-3)
    if self.distill > 0:
      if loss is not None or y is None:
        raise ValueError("l0_gates distill > 0 needs arrays x, y of integer labels and "
                         "the default loss (loss=None).")
      loss = distill.DistillationLoss(self.distill, self.temperature)
      plain_metrics = list(metrics)
      metrics = [distill.PackedAccuracy() if m in ("accuracy", "acc") else m for m in metrics]
      y = distill.pack_targets(y, model.predict(x, batch_size=1024, verbose=0))
      if validation_data is not None:
        vx, vy = validation_data[:2]
        validation_data = (vx, distill.pack_targets(vy, model.predict(vx, batch_size=1024,
                                                                        verbose=0)))
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    gate_epochs = max(1, min(epochs - 1, int(round(self.gate_fraction * epochs))))
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    history = model.fit(x, y, epochs=gate_epochs, batch_size=batch_size,
                        validation_data=validation_data, verbose=verbose,
                        callbacks=[callbacks_lib.PruningCallback(self), *callbacks]).history
    merged = {k: list(v) for k, v in history.items()}
    self.last_kept = self.hard_prune()
    tune_epochs = epochs - gate_epochs
    if tune_epochs > 0:
      config = optimizer.get_config()
      lr = config.get("learning_rate")
      if isinstance(lr, (int, float)):
        n = len(x) if y is not None else None
        steps = tune_epochs * (math.ceil(n / batch_size) if n else 1000)
        config["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            float(lr) * self.finetune_lr_scale, steps)
      tune_opt = type(optimizer).from_config(config)
      model.compile(optimizer=tune_opt, loss=loss, metrics=list(metrics))
      history = model.fit(x, y, epochs=tune_epochs, batch_size=batch_size,
                          validation_data=validation_data, verbose=verbose,
                          callbacks=list(callbacks)).history
      for k, v in history.items():
        merged.setdefault(k, []).extend(v)
    if self.distill > 0:
      # Leave the model compiled for plain labels (evaluate, save, clone).
      model.compile(optimizer=model.optimizer,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=list(plain_metrics))
    return merged

  def get_config(self):
    config = super().get_config()
    config.pop("scope", None)
    config.update({"target_units": dict(self.target_units),
                   "droprate_init": self.droprate_init,
                   "log_alpha_scale": self.log_alpha_scale,
                   "lambda_init": self.lambda_init, "dual_lr": self.dual_lr,
                   "lambda_max": self.lambda_max,
                   "gate_fraction": self.gate_fraction,
                   "finetune_lr_scale": self.finetune_lr_scale,
                   "distill": self.distill, "temperature": self.temperature})
    return config
