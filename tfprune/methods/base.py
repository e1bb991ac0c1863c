"""The one small interface every pruning algorithm implements.

A `PruningMethod` is bound to a model whose prunable layers are `PruneWrapper`s (the
wrappers own the state; the method owns the maths). Two kinds of methods:

  * training-time methods (magnitude, admm, ...) run inside training. Each step, call
    `on_train_step()` before the optimizer step (`tfprune.PruningCallback` does it in
    `model.fit`); every `schedule.frequency` steps it recomputes the masks with
    `compute_masks(sparsity)` - the hook subclasses override - and zeroes what is pruned.
    Methods may add a loss term per wrapper (`regularization`) and ask the wrappers for
    per-weight state (`slot_names`).
  * post-training methods (`post_training = True`, e.g. layer-wise logsum / l0) prune a
    trained model in one call: `apply(model, calibration_data)`.

Custom training loop:

    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.9)
    method = tfprune.get_method(pruned)
    method.on_train_begin()
    for x, y in dataset:
      method.on_train_step()
      with tf.GradientTape() as tape:
        loss = loss_fn(y, pruned(x, training=True)) + sum(pruned.losses)
      grads = tape.gradient(loss, pruned.trainable_variables)
      optimizer.apply_gradients(zip(grads, pruned.trainable_variables))
    method.on_train_end()
"""
import functools

import keras
import tensorflow as tf

from tfprune import masks as masks_lib
from tfprune._layers import all_layers
from tfprune import schedules

_METHODS = {}


def register_method(name):
  """Class decorator: registers a method under `name` and makes it Keras-serializable."""

  def decorator(cls):
    if name in _METHODS and _METHODS[name] is not cls:
      raise ValueError(f"Pruning method {name!r} is already registered "
                       f"({_METHODS[name].__name__}).")
    cls.name = name
    _METHODS[name] = cls
    return keras.saving.register_keras_serializable(package="tfprune")(cls)

  return decorator


def available_methods():
  """Sorted names of the registered methods."""
  return sorted(_METHODS)


def get_method_class(name):
  """The registered class for `name`; ValueError listing the valid names otherwise."""
  if name not in _METHODS:
    raise ValueError(f"Unknown pruning method {name!r}; valid methods are "
                     f"{', '.join(available_methods())}.")
  return _METHODS[name]


def find_wrappers(model):
  """All `PruneWrapper`s of a model (nested models included), in layer order, unique."""
  from tfprune.wrapper import PruneWrapper  # pylint: disable=g-import-not-at-top
  return [l for l in all_layers(model) if isinstance(l, PruneWrapper)]


def _in_model_strategy(fit):
  """Runs a method's `fit` recipe inside the model's `tf.distribute` strategy scope.

  A recipe compiles the model and creates optimizers; under a strategy both must happen
  in the scope the model was built in, so callers need not remember to enter it.
  """

  @functools.wraps(fit)
  def scoped_fit(self, model, *args, **kwargs):
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or tf.distribute.has_strategy():
      return fit(self, model, *args, **kwargs)
    with strategy.scope():
      return fit(self, model, *args, **kwargs)

  return scoped_fit


class PruningMethod:
  """Base class of all pruning methods.

  Args:
    target_sparsity: final fraction of zeros over the pruned weights, in [0, 1).
    scope: mask scope, one of `tfprune.masks.SCOPES` (layer, global, block, n:m,
      structured).
    schedule: a `tfprune.schedules.PruningSchedule`; default prunes to
      `target_sparsity` at step 0 and every 100 steps (`ConstantSparsity`).
    block_size: block length along the kernel input axis for `scope="block"`.
    n, m: the n:m pattern for `scope="n:m"`.
    allocation: `layer` or `global` allocation for `block` / `structured` scopes.
    layer_sparsity: optional `{layer name: sparsity}` overriding `target_sparsity` for
      those layers (per-layer allocation only; e.g. keep a small output layer denser).
  """

  name = None
  post_training = False

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "fit" in cls.__dict__:  # every recipe runs in the model's strategy scope
      cls.fit = _in_model_strategy(cls.__dict__["fit"])

  def __init__(self, target_sparsity=0.9, scope="layer", schedule=None, block_size=4, n=2,
               m=4, allocation="layer", layer_sparsity=None):
    self.target_sparsity = masks_lib.validate_sparsity(target_sparsity, "target_sparsity")
    masks_lib.validate_scope(scope, block_size, n, m, allocation)
    self.layer_sparsity = {str(k): masks_lib.validate_sparsity(v, f"layer_sparsity[{k!r}]")
                           for k, v in (layer_sparsity or {}).items()}
    if self.layer_sparsity and (scope in ("global", "n:m") or allocation != "layer"):
      raise ValueError(f"layer_sparsity sets per-layer targets: it needs a per-layer "
                       f"allocation (scope layer, block or structured with "
                       f"allocation='layer'), got scope={scope!r}, "
                       f"allocation={allocation!r}.")
    self.scope = scope
    self.block_size = int(block_size)
    self.n, self.m = int(n), int(m)
    self.allocation = allocation
    schedule = schedules.deserialize(schedule)
    if schedule is None:
      schedule = schedules.ConstantSparsity(self.target_sparsity)
    if not isinstance(schedule, schedules.PruningSchedule):
      raise ValueError(f"schedule must be a tfprune.schedules.PruningSchedule, got "
                       f"{type(schedule).__name__}.")
    self.schedule = schedule
    self.model = None
    self.wrappers = []
    self._step_fn = None

  # ----------------------------------------------------------------- binding
  def bind(self, model):
    """Attaches the method to `model`'s wrappers; returns self."""
    wrappers = find_wrappers(model)
    if not wrappers:
      raise ValueError(f"Model {model.name!r} has no PruneWrapper layers: call "
                       f"tfprune.prune(model, ...) first.")
    unbuilt = [w.name for w in wrappers if not w.built]
    if unbuilt:
      raise ValueError(f"Wrappers {unbuilt} are not built: call the model on data or give "
                       f"it an Input shape first.")
    unknown = sorted(set(self.layer_sparsity) - {w.layer.name for w in wrappers})
    if unknown:
      raise ValueError(f"layer_sparsity names layers {unknown} that are not pruned in "
                       f"model {model.name!r}; pruned layers: "
                       f"{[w.layer.name for w in wrappers]}.")
    self.model = model
    self.wrappers = wrappers
    self._step_fn = None
    return self

  def _require_bound(self):
    if not self.wrappers:
      raise ValueError(f"The {self.name!r} method is not bound to a model: use "
                       f"tfprune.get_method(pruned_model).")

  @property
  def weights(self):
    """Flat list of all prunable variables of the bound model."""
    return [w for wr in self.wrappers for w in wr.prunable_weights]

  @property
  def masks(self):
    return [m for wr in self.wrappers for m in wr.masks]

  def slots(self, slot):
    """Flat list of a per-weight slot (aligned with `weights`)."""
    return [v for wr in self.wrappers for v in wr.slots[slot]]

  @property
  def step(self):
    self._require_bound()
    return self.wrappers[0].pruning_step

  # ------------------------------------------------------------- wrapping
  def select_layers(self, model, layers, explicit=False):
    """Which of the candidate `layers` (prunable layers of `model`) to wrap.

    Args:
      model: the model being pruned.
      layers: candidate layers, in model order.
      explicit: True when the user named the layers (`prune(..., layers=[...])`).

    Returns:
      The layers to wrap (default: all candidates). Raise ValueError to refuse one.
    """
    del model, explicit
    return layers

  def make_wrapper(self, layer):
    """The wrapper layer for one chosen layer (default `PruneWrapper(layer, self)`)."""
    from tfprune.wrapper import PruneWrapper  # pylint: disable=g-import-not-at-top
    return PruneWrapper(layer, method=self)

  # ------------------------------------------------------------- the maths
  def slot_names(self):
    """Names of per-weight state variables the wrappers must create (default none)."""
    return ()

  def regularization(self, wrapper):
    """Extra loss for one wrapper while training (a scalar tensor), or None."""
    del wrapper
    return None

  def scores(self):
    """Importance scores of every prunable weight (default: |W * mask|)."""
    return [tf.abs(w * m) for w, m in zip(self.weights, self.masks)]

  def compute_masks(self, sparsity):
    """THE hook: new 0/1 masks (aligned with `weights`) at `sparsity`.

    With `layer_sparsity`, each listed layer follows its own target, scaled along the
    schedule (`sparsity * own / final`); the others follow `sparsity`.
    """
    kwargs = dict(scope=self.scope, block_size=self.block_size, n=self.n, m=self.m,
                  allocation=self.allocation)
    scores = self.scores()
    if not self.layer_sparsity:
      return masks_lib.compute_masks(scores, sparsity, **kwargs)
    final = max(self.schedule.final_sparsity, 1e-12)
    out, i = [], 0
    for wrapper in self.wrappers:
      own = self.layer_sparsity.get(wrapper.layer.name)
      layer_sparsity = sparsity if own is None else sparsity * (own / final)
      count = len(wrapper.prunable_weights)
      out += masks_lib.compute_masks(scores[i:i + count], layer_sparsity, **kwargs)
      i += count
    return out

  def assign_masks(self, new_masks):
    """Assigns masks and zeroes the pruned weights in place."""
    for w, m, new in zip(self.weights, self.masks, new_masks):
      new = tf.cast(new, m.dtype)
      m.assign(new)
      w.assign(w * new)

  def update_masks(self, sparsity):
    self.assign_masks(self.compute_masks(sparsity))

  # ------------------------------------------------------------ training
  def _train_step(self):
    step = self.step
    should_prune, sparsity = self.schedule(step)
    if should_prune:
      self.update_masks(sparsity)
    for wrapper in self.wrappers:
      wrapper.pruning_step.assign(step + 1)

  def on_train_begin(self):
    """Called once before training (validates that the method is bound)."""
    self._require_bound()
    if self.post_training:
      raise ValueError(f"Method {self.name!r} prunes after training: call "
                       f"method.apply(model, calibration_data) instead of training with it.")

  def on_train_step(self):
    """Advances the schedule by one step; updates masks on pruning steps (graph mode)."""
    self._require_bound()
    if self._step_fn is None:
      self._step_fn = tf.function(self._train_step)
    self._step_fn()

  def on_train_end(self):
    """Leaves every masked weight exactly zero."""
    self._require_bound()
    for w, m in zip(self.weights, self.masks):
      w.assign(w * m)

  @_in_model_strategy
  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """Prunes the bound, wrapped `model` while training it for `epochs` (the recipe).

    The default recipe compiles `model` and runs `model.fit` with a `PruningCallback`.
    Methods with phases (ADMM: ADMM -> hard prune -> masked fine-tune; SAP: rounds)
    override this, keeping the signature, so the training binary and the benchmark run
    every method the same way.

    Args:
      model: the pruned model this method is bound to.
      x, y, batch_size, validation_data, verbose, callbacks: as in `keras.Model.fit`.
      epochs: the whole pruning budget in epochs.
      optimizer: a Keras optimizer (default Adam(1e-3)).
      loss: default sparse categorical cross-entropy on logits.
      metrics: compile metrics.

    Returns:
      A dict of per-epoch metric lists (the merged `History.history`).
    """
    from tfprune.callbacks import PruningCallback  # pylint: disable=g-import-not-at-top
    if model is not self.model:
      self.bind(model)
    model.compile(optimizer=self.prepare_optimizer(optimizer or keras.optimizers.Adam(1e-3)),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size,
                        validation_data=validation_data, verbose=verbose,
                        callbacks=[PruningCallback(self), *callbacks])
    return dict(history.history)

  def prepare_optimizer(self, optimizer):
    """The optimizer the default recipe compiles with (default: `optimizer` itself)."""
    return optimizer

  def report(self):
    """A JSON-serialisable dict for the training binary's report (default: diagnostics)."""
    return self.diagnostics()

  def write_artifacts(self, output_dir):
    """Writes the method's own figures/files into `output_dir`; returns their paths."""
    del output_dir
    return []

  def diagnostics(self):
    """Scalars worth logging (TensorBoard, reports): overall sparsity by default."""
    total = sum(int(tf.size(m)) for m in self.masks)
    kept = sum(float(tf.reduce_sum(m)) for m in self.masks)
    return {"sparsity": 1.0 - kept / max(total, 1)}

  # ---------------------------------------------------------- serialization
  def get_config(self):
    config = {"target_sparsity": self.target_sparsity, "scope": self.scope,
              "schedule": keras.saving.serialize_keras_object(self.schedule),
              "block_size": self.block_size, "n": self.n, "m": self.m,
              "allocation": self.allocation}
    if self.layer_sparsity:  # only then: subclasses without the argument stay loadable
      config["layer_sparsity"] = dict(self.layer_sparsity)
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def __repr__(self):
    return f"{type(self).__name__}({self.get_config()})"
