"""The method contract: a small core, a training-time base and a post-training base.

The contract is written down in docs/methods.md (what a method implements, what it may
override, the attributes it declares); `OVERRIDABLE` below is the list that document
mirrors, and tests/method_contract_test.py holds every registered method to it.

A method is bound to a model whose prunable layers are `PruneWrapper`s (the wrappers own
the state; the method owns the maths). Three classes:

  * `MethodCore`: what every method has: the configuration (target, mask scope,
    layer floor), `bind`, the pruned `weights` / `masks`, `scores()`,
    `compute_masks(sparsity)`, `assign_masks`, the report and `get_config` /
    `from_config`. With `scope="structured"` the method receives a channel scope,
    `method.channels` (a `tfprune.structured.scope.ChannelScope`): it owns the channel
    graph, the criteria (Taylor's gradient sums included), `round_to`, `min_units`,
    ignored layers and the MACs / latency budgets (`method.channels.round_to`, ...).
  * `PruningMethod` (training-time): the core plus THE per-step hook `update(step)`,
    the schedule and the training driver. `update` runs once per training step before
    the optimizer step, with the step about to run; the default follows `schedule`:
    on pruning steps `assign_masks(compute_masks(sparsity))`. It runs as a
    `tf.function` (`compile_update = True`) or eagerly with a Python int step (`False`:
    methods that log or raise per step, e.g. ADMM).
  * `PostTrainingMethod`: the core plus `apply(model, calibration_data)`, which prunes a
    trained model in one call; it has no training driver (fine-tuning a model it pruned
    with a plain `model.fit` keeps its masks fixed).

The driver of `PruningMethod`, the same for every method: `on_train_begin(optimizer)`
(validates, attaches the optimizer wrapper the method needs, marks the method started),
`on_train_step()` (calls `update(step)`, then advances the wrappers' step counter; never
overridden) and `on_train_end()`. `tfprune.PruningCallback` calls them in `model.fit`; a
custom loop calls them itself (below). A pruned model trained without them raises (the
wrappers check, when the training step is traced, that the method was started), as TFMOT
does without its `UpdatePruningStep` callback.

Optional parts of `PruningMethod`, declared with safe defaults:
  * per-weight state the wrappers create (`slot_names`) and a loss term
    (`regularization`);
  * a gradient hook: `uses_gradients = True` and `observe_gradients(grads, variables)`.
    `prepare_optimizer(optimizer)` wraps the user's optimizer in a
    `tfprune.optimizer_wrapper.GradientHook`, which hands it every gradient inside the
    training step (`model.fit` and custom loops alike); a custom loop may instead call
    `method.observe_gradients(grads, variables)` itself after computing the gradients;
  * an optimizer the method needs (`optimizer_class()`: ADMM's penalty gradient,
    L0 projection): `prepare_optimizer` builds it, `on_train_begin` refuses any other;
  * a phased recipe: `fit(model, x, y, epochs, ...)` (`phased = True` when the method
    has phases, e.g. ADMM -> hard prune -> fine-tune). Under a plain `model.fit` a phased
    method either finishes its phases at train end (`finish_phases`, with a warning that
    the recipe's fine-tune was skipped) or refuses before training (`check_plain_fit`).

Custom training loop:

    pruned = tfprune.prune(model, "magnitude", target_sparsity=0.9)
    method = tfprune.get_method(pruned)
    optimizer = method.prepare_optimizer(keras.optimizers.Adam(1e-3))
    method.on_train_begin(optimizer=optimizer)
    for x, y in dataset:
      method.on_train_step()
      with tf.GradientTape() as tape:
        loss = loss_fn(y, pruned(x, training=True)) + sum(pruned.losses)
      grads = tape.gradient(loss, pruned.trainable_variables)
      optimizer.apply_gradients(zip(grads, pruned.trainable_variables))
    method.on_train_end()
"""
import functools
import inspect

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfprune import callbacks as callbacks_lib
from tfprune import masks as masks_lib
from tfprune import optimizer_wrapper
from tfprune import schedules
from tfprune import wrapper as wrapper_lib
from tfprune._layers import all_layers  # pylint: disable=unused-import (re-exported)
from tfprune.structured import scope as scope_lib

_METHODS = {}

# The class attributes a method may declare (docs/methods.md section 3).
DECLARED = ("scopes", "structured_graph", "phased", "uses_gradients", "compile_update",
            "multi_fit", "calibration_samples")
# The core a training-time method implements: one to three of these.
HOOKS = ("scores", "compute_masks", "update")
# Everything a registered method may define over its base class (docs/methods.md mirrors
# this list; tests/method_contract_test.py checks every registered method). `name` is
# set by `register_method`; `on_train_begin` / `on_train_end` may only be extended (call
# super()); `on_train_step`, `assign_masks`, `weights`, `masks`, `check_training`, ...
# are never overridden.
OVERRIDABLE = HOOKS + DECLARED + (
    "name", "apply", "bind", "select_layers", "make_wrapper", "slot_names",
    "scalar_slot_names",
    "regularization", "default_schedule", "observe_gradients", "optimizer_class",
    "make_optimizer", "prepare_optimizer", "check_plain_fit", "finish_phases", "fit",
    "on_train_begin", "on_train_end", "diagnostics", "report", "write_artifacts",
    "get_config", "from_config")


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


def method_arguments(cls):
  """{name: inspect.Parameter} of the arguments the constructor of method `cls` takes:
  its own and, when it passes `**kwargs` on, those of `MethodCore`."""
  accepted = dict(inspect.signature(cls.__init__).parameters)
  if any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
    accepted.update(inspect.signature(MethodCore.__init__).parameters)
  return {k: v for k, v in accepted.items()
          if k != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}


def empty_weights(method):
  """Pruned weights that `method`'s target would leave with no weight, before pruning.

  Per weight (per-layer allocation: `layer_sparsity` or `target_sparsity`) or over all
  of them (global allocation), counted in the units of the method's scope with the one
  keep-count rule (`tfprune.masks.unit_count`, `tfprune.masks.keep_count`).

  Returns:
    (list of "layer/weight" labels, ending in "(keeps 0 of n)" for a per-layer
    allocation; a detail string), or ([], "") when every weight keeps something.
  """
  if method.scope == "n:m" or method.target_sparsity is None:
    return [], ""
  labels, shapes, targets = [], [], []
  for wrapper in method.wrappers:
    own = method.layer_sparsity.get(wrapper.layer.name, method.target_sparsity)
    for w in wrapper.prunable_weights:
      labels.append(f"{wrapper.layer.name}/{w.path.split('/')[-1]}")
      shapes.append(tuple(w.shape))
      targets.append(own)
  units = [masks_lib.unit_count(s, method.scope, method.block_size) for s in shapes]
  if method.scope == "global" or method.allocation == "global":
    keep = int(masks_lib.keep_count(sum(units), method.target_sparsity))
    if keep < len(labels):
      return (labels, f"the global allocation keeps {keep} of {sum(units)} units for "
                      f"{len(labels)} weights, so at least {len(labels) - keep} of them "
                      f"would keep none")
    return [], ""
  dead = [f"{label} (keeps 0 of {n})" for label, n, target in zip(labels, units, targets)
          if int(masks_lib.keep_count(n, target)) == 0]
  return dead, f"scope {method.scope!r}"


find_wrappers = wrapper_lib.find_wrappers  # (kept here for older imports)


def _in_model_strategy(fit):
  """Runs a method's `fit` recipe inside the model's `tf.distribute` strategy scope.

  A recipe compiles the model and creates optimizers; under a strategy both must happen
  in the scope the model was built in, so callers need not remember to enter it.
  """

  @functools.wraps(fit)
  def scoped_fit(self, model, *args, **kwargs):
    outer, self.in_recipe = self.in_recipe, True
    try:
      strategy = getattr(model, "distribute_strategy", None)
      if strategy is None or tf.distribute.has_strategy():
        return fit(self, model, *args, **kwargs)
      with strategy.scope():
        return fit(self, model, *args, **kwargs)
    finally:
      self.in_recipe = outer

  return scoped_fit


class MethodCore:
  """What every pruning method has: configuration, binding, weights and masks, scores.

  Subclass `PruningMethod` (training-time) or `PostTrainingMethod`, not this class
  (docs/methods.md).

  Args:
    target_sparsity: final fraction of zeros over the pruned weights, in [0, 1).
    scope: mask scope, one of `tfprune.masks.SCOPES` (layer, global, block, n:m,
      structured).
    schedule: a `tfprune.schedules.PruningSchedule`; default `default_schedule()`, which
      prunes to `target_sparsity` at step 0 and every 100 steps (`ConstantSparsity`).
    block_size: block length along the kernel input axis for `scope="block"`.
    n, m: the n:m pattern for `scope="n:m"`.
    allocation: `layer` or `global` allocation for `block` / `structured` scopes
      (default: `global` for `structured`, else `layer`).
    layer_sparsity: optional `{layer name: sparsity}` overriding `target_sparsity` for
      those layers (per-layer allocation only; e.g. keep a small output layer denser).
    round_to, min_units, ignored_layers, target_macs, criterion, target_latency,
      latency_precision, latency_table: `scope="structured"` only (docs/structured.md):
      the arguments of the channel scope the method receives, `method.channels`
      (`tfprune.structured.scope.ChannelScope`, which documents each): channel counts
      kept a multiple of `round_to`, at least `min_units` channels per group, layers
      whose groups are never pruned, a MACs or LiteRT latency budget instead of
      `target_sparsity`, and the group importance criterion (`l2` by default; `taylor`
      averages the loss gradients seen since the last mask update).
    max_pruning_ratio: the layer floor of every allocation across layers (docs/
      algorithms.md, "Layer floor and LAMP"): None (default): a weight tensor the
      allocation would leave with fewer than `min(fan_in, fan_out)` entries keeps the
      largest entry of every output unit and input row instead, so no layer is emptied;
      a float r in (0, 1] removes at most a fraction r of any one tensor (channel
      groups: of any group); 1.0 allows emptying a layer. A per-layer target above it
      is refused.
    global_score: `magnitude` (default) or `lamp`: LAMP-normalised scores (Lee et al.,
      ICLR 2021) for the global allocation (scope `global`, or `block` with
      allocation `global`), so layers of different weight scales compare fairly.

  With `scope="structured"` (and `structured_graph = True`, the default) the masks come
  from the model's channel dependency graph (`tfprune.structured.ChannelGraph`, built
  when the method binds): `target_sparsity` is the fraction of the prunable channels
  removed, each removed channel is zeroed in every layer of its group (kernel columns of
  its producers, kernel rows of its readers, depthwise slices), so
  `tfprune.strip(model, shrink=True)` deletes it exactly.

  Class attributes a subclass may set: `scopes` (the valid `scope` values; default the
  mask scopes of `tfprune.masks`) and `structured_graph` (False: the `structured` scope
  keeps the per-layer output-unit masks of `tfprune.masks`). `post_training` is True
  for `PostTrainingMethod`s.
  """

  name = None
  scopes = masks_lib.SCOPES
  post_training = False
  structured_graph = True

  def __init__(self, target_sparsity=0.9, scope="layer", schedule=None, block_size=4, n=2,
               m=4, allocation=None, layer_sparsity=None, round_to=1, min_units=1,
               ignored_layers=None, target_macs=None, criterion="l2", target_latency=None,
               latency_precision="float", latency_table=None, max_pruning_ratio=None,
               global_score="magnitude"):
    if allocation is None:
      allocation = "global" if (scope == "structured" and self.structured_graph
                                and not layer_sparsity) else "layer"
    if target_sparsity is not None:  # None: the method has no fixed target (SAP)
      target_sparsity = masks_lib.validate_sparsity(target_sparsity, "target_sparsity")
    self.target_sparsity = target_sparsity
    if scope not in self.scopes:
      raise ValueError(f"Unknown scope {scope!r} for method {self.name!r}; valid scopes "
                       f"are {', '.join(self.scopes)}.")
    if scope in masks_lib.SCOPES:
      masks_lib.validate_scope(scope, block_size, n, m, allocation)
    elif allocation not in masks_lib.ALLOCATIONS:
      raise ValueError(f"Unknown allocation {allocation!r}; valid: "
                       f"{', '.join(masks_lib.ALLOCATIONS)}.")
    self.layer_sparsity = {str(k): masks_lib.validate_sparsity(v, f"layer_sparsity[{k!r}]")
                           for k, v in (layer_sparsity or {}).items()}
    if self.layer_sparsity and (scope in ("global", "n:m") or allocation != "layer"):
      raise ValueError(f"layer_sparsity sets per-layer targets: it needs a per-layer "
                       f"allocation (scope layer, block or structured with "
                       f"allocation='layer'), got scope={scope!r}, "
                       f"allocation={allocation!r}.")
    self.scope = scope
    self._set_floor_args(max_pruning_ratio, global_score, scope, allocation)
    self._set_structured_args(round_to, min_units, ignored_layers, target_macs, criterion,
                              target_latency, latency_precision, latency_table)
    self.block_size = int(block_size)
    self.n, self.m = int(n), int(m)
    self.allocation = allocation
    schedule = schedules.deserialize(schedule)
    if schedule is None and self.target_sparsity is not None:
      schedule = self.default_schedule()
    if schedule is not None and not isinstance(schedule, schedules.PruningSchedule):
      raise ValueError(f"schedule must be a tfprune.schedules.PruningSchedule, got "
                       f"{type(schedule).__name__}.")
    self.schedule = schedule
    self.model = None
    self.wrappers = []

  # ------------------------------------------------- layer floor and LAMP
  def _set_floor_args(self, max_pruning_ratio, global_score, scope, allocation):
    """Validates `max_pruning_ratio` / `global_score` (docs/algorithms.md, "Layer floor
    and LAMP"); a per-layer target above the cap is refused here, before training."""
    self.max_pruning_ratio = masks_lib.validate_max_pruning_ratio(max_pruning_ratio)
    if global_score != "magnitude" and scope == "structured" and self.structured_graph:
      raise ValueError(f"global_score={global_score!r} is not supported with "
                       f"scope='structured' (channel groups are ranked by their "
                       f"normalised group norms); use global_score='magnitude'.")
    self.global_score = masks_lib.validate_global_score(global_score, scope, allocation)
    per_layer = scope in ("layer", "n:m") or (scope != "global" and allocation == "layer")
    ratio = self.max_pruning_ratio
    if ratio is not None and per_layer and scope != "n:m":
      targets = {"target_sparsity": self.target_sparsity,
                 **{f"layer_sparsity[{k!r}]": v for k, v in self.layer_sparsity.items()}}
      over = {k: v for k, v in targets.items() if v is not None and v > ratio}
      if over:
        raise ValueError(f"max_pruning_ratio={ratio} caps the fraction removed from any "
                         f"one layer, but this per-layer allocation (scope={scope!r}, "
                         f"allocation={allocation!r}) asks for more: {over}; lower the "
                         f"target or raise max_pruning_ratio.")

  # ------------------------------------------------------- structured scope
  @property
  def uses_channel_graph(self):
    """True if masks come from the channel dependency graph (`scope="structured"`)."""
    return self.scope == "structured" and self.structured_graph

  def _set_structured_args(self, round_to, min_units, ignored_layers, target_macs,
                           criterion, target_latency=None, latency_precision="float",
                           latency_table=None):
    channels = scope_lib.ChannelScope(round_to, min_units, ignored_layers, target_macs,
                                      criterion, target_latency, latency_precision,
                                      latency_table)
    changed = sorted(channels.changed())
    if changed and not self.uses_channel_graph:
      raise ValueError(f"{', '.join(changed)} apply to scope='structured' through the "
                       f"channel graph only; method {self.name!r} has scope={self.scope!r}"
                       f"{'' if self.structured_graph else ' (no channel graph)'}.")
    if channels.needs_gradients:
      if self.post_training or getattr(type(self), "uses_gradients", False):
        raise ValueError(f"criterion={criterion!r} scores channels by the loss gradient; "
                         f"method {self.name!r} has its own gradient scores: use l2 or l1.")
      self.uses_gradients = True
    if self.uses_channel_graph and getattr(self, "layer_sparsity", None):
      raise ValueError("layer_sparsity is not supported with scope='structured' (channel "
                       "groups span several layers): use ignored_layers, min_units or "
                       "allocation='layer'.")
    self.channels = channels  # tfprune.structured.scope.ChannelScope
    channels.max_pruning_ratio = getattr(self, "max_pruning_ratio", None)  # the floor
    if self.uses_channel_graph:
      self.compile_update = False  # the graph allocation is NumPy: masks update eagerly

  def structured_masks(self, values, sparsity):
    """Channel-graph masks (aligned with `weights`) from per-weight importances.

    Args:
      values: per-weight non-negative importance tensors aligned with `weights` (the
        method's `scores()`, ADMM's `|W + U|`).
      sparsity: fraction of the prunable channels to remove now (with `target_macs` /
        `target_latency`: the schedule's progress, `sparsity / final_sparsity`, towards
        the budget).

    Returns:
      A list of float32 NumPy 0/1 masks; the current masks while a gradient criterion
      (`taylor`) has seen no gradient yet.
    """
    if self.channels.graph is None:
      raise ValueError(f"The {self.name!r} method is not bound to a model.")
    final = float(getattr(self.schedule, "final_sparsity", 0.0) or 0.0)
    out = self.channels.masks([w.shape for w in self.weights], values, sparsity,
                              self.allocation, final)
    if out is None:
      logging.warning("%s: criterion=%r has seen no gradient yet; the masks are kept "
                      "(start the schedule after a few steps).", self.name,
                      self.channels.criterion)
      return [np.asarray(m.numpy(), np.float32) for m in self.masks]
    return out

  def default_schedule(self):
    """The schedule used when none is given: `target_sparsity` from step 0, every 100."""
    return schedules.ConstantSparsity(self.target_sparsity)

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
    for wrapper in wrappers:  # after load_model each wrapper holds its own copy
      wrapper.method = self
    if self.uses_channel_graph:
      self.channels.bind(model, self.wrappers)
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
    """Flat list of the 0/1 mask variables (aligned with `weights`)."""
    return [m for wr in self.wrappers for m in wr.masks]

  def slots(self, slot):
    """Flat list of a per-weight slot (aligned with `weights`)."""
    return [v for wr in self.wrappers for v in wr.slots[slot]]

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
    return wrapper_lib.PruneWrapper(layer, method=self)

  def slot_names(self):
    """Names of per-weight state variables the wrappers must create (default none)."""
    return ()

  def scalar_slot_names(self):
    """Names of scalar float32 state variables every wrapper creates (default none):
    method state such as an adaptive penalty, saved with the model and checkpoints."""
    return ()

  def regularization(self, wrapper):
    """Extra loss for one wrapper while training (a scalar tensor), or None."""
    del wrapper
    return None

  def check_training(self, wrapper):
    """Called by `wrapper` when traced in training mode; raise to refuse training.

    The core accepts (a model pruned after training may be fine-tuned: the wrappers keep
    its masks fixed); `PruningMethod` refuses training without its driver.
    """
    del wrapper

  # ------------------------------------------------------------- the maths
  def scores(self):
    """Importance scores of every prunable weight (default: |W * mask|)."""
    return [tf.abs(w * m) for w, m in zip(self.weights, self.masks)]

  def compute_masks(self, sparsity):
    """THE hook: new 0/1 masks (aligned with `weights`) at `sparsity`.

    With `layer_sparsity`, each listed layer follows its own target, scaled along the
    schedule (`sparsity * own / final`); the others follow `sparsity`.
    """
    if self.uses_channel_graph:
      return self.structured_masks([s.numpy() for s in self.scores()], sparsity)
    kwargs = dict(scope=self.scope, block_size=self.block_size, n=self.n, m=self.m,
                  allocation=self.allocation, max_pruning_ratio=self.max_pruning_ratio,
                  global_score=self.global_score)
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

  # ------------------------------------------------------------ reporting
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
    if getattr(self, "max_pruning_ratio", None) is not None:  # (the same rule)
      config["max_pruning_ratio"] = self.max_pruning_ratio
    if getattr(self, "global_score", "magnitude") != "magnitude":
      config["global_score"] = self.global_score
    if getattr(self, "channels", None) is not None:  # the same rule
      config.update(self.channels.changed())
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def __repr__(self):
    return f"{type(self).__name__}({self.get_config()})"


class PruningMethod(MethodCore):
  """Base class of the training-time pruning methods: the core plus `update(step)`,
  the schedule and the training driver (module docstring, docs/methods.md).

  Takes the arguments of `MethodCore`. Class attributes a subclass may set, besides
  the core's: `phased`, `uses_gradients`, `compile_update` (see the module docstring),
  `multi_fit` (True: `fit` calls `model.fit` more than once, so it needs re-iterable
  inputs such as arrays, not a one-pass epoch order).
  """

  phased = False
  uses_gradients = False
  compile_update = True
  multi_fit = False

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "fit" in cls.__dict__:  # every recipe runs in the model's strategy scope
      cls.fit = _in_model_strategy(cls.__dict__["fit"])

  @functools.wraps(MethodCore.__init__)
  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.started = False  # on_train_begin ran (and on_train_end not yet)
    self.in_recipe = False  # the method's own `fit` is running
    self._update_fn = None
    self._advance_fn = None
    self._gradient_steps = None
    self._steps_since_begin = 0

  def bind(self, model):
    """Attaches the method to `model`'s wrappers; returns self."""
    super().bind(model)
    self._update_fn = None
    self._advance_fn = None
    return self

  @property
  def step(self):
    """The wrappers' step counter: the index of the next training step."""
    self._require_bound()
    return self.wrappers[0].pruning_step

  def update_masks(self, sparsity):
    """`assign_masks(compute_masks(sparsity))`."""
    self.assign_masks(self.compute_masks(sparsity))

  # ------------------------------------------------------------ the core hook
  def update(self, step):
    """THE per-step hook: runs before the optimizer step that has index `step`.

    Default: the schedule; on its pruning steps, `assign_masks(compute_masks(s))`.
    Graph-mode (`tf.function`) unless `compile_update` is False, then `step` is an int.
    """
    should_prune, sparsity = self.schedule(step)
    if should_prune:
      self.update_masks(sparsity)

  # ------------------------------------------------------------ optional parts
  def observe_gradients(self, grads, variables):
    """The gradient hook (`uses_gradients = True`): sees every step's gradients.

    Called inside the training step (graph mode) by the `GradientHook` optimizer that
    `prepare_optimizer` installs, or by a custom loop after `tape.gradient`; only
    TensorFlow ops and variable assignments. `grads` align with `variables` (the
    model's trainable variables; None where a variable has no gradient). The base class
    hands them to the channel scope's gradient criterion (`criterion="taylor"`).
    """
    if not self.channels.needs_gradients:
      raise NotImplementedError(f"Method {self.name!r} has no gradient hook.")
    self.channels.observe_gradients(grads, variables)
    self.record_gradient_step()

  def record_gradient_step(self):
    """Counts one observed gradient step (gradient methods call it in the hook)."""
    if self._gradient_steps is not None:
      self._gradient_steps.assign_add(1)

  def optimizer_class(self):
    """The optimizer wrapper class training needs, or None (any Keras optimizer)."""
    return optimizer_wrapper.GradientHook if self.uses_gradients else None

  def make_optimizer(self, inner_optimizer=None):
    """`optimizer_class()` around `inner_optimizer` (default Adam(1e-3)), attached."""
    cls = self.optimizer_class()
    inner = inner_optimizer or keras.optimizers.Adam(1e-3)
    if cls is None:
      return inner
    return cls(inner, method=self)

  def prepare_optimizer(self, optimizer):
    """The optimizer to train with: `optimizer`, wrapped when the method needs it."""
    cls = self.optimizer_class()
    if cls is None or isinstance(optimizer, cls):
      if isinstance(optimizer, optimizer_wrapper.WrappedOptimizer) and \
          optimizer.accepts(self):
        optimizer.attach(self)
      return optimizer
    return self.make_optimizer(optimizer)

  def check_plain_fit(self):
    """Phased methods under a plain `model.fit` (not their recipe): raise to refuse.

    Called by `on_train_begin` outside `fit`; the default accepts (the phases are
    finished by `finish_phases` at train end).
    """

  def finish_phases(self):
    """Phased methods: finish what a plain `model.fit` left (called by `on_train_end`
    outside the recipe, e.g. hard prune); log a warning for what was skipped."""

  def check_training(self, wrapper):
    """Raises unless the method may train now; called by `wrapper` when traced in
    training mode (so a pruned model trained without the driver fails loudly)."""
    if self.started or self.in_recipe:
      return
    if self.model is not None and getattr(self.model, "train_function", None) is not None:
      # We are inside the first trace of model.fit's train function: drop it, so the
      # corrected fit call traces a fresh one (not this half-traced function).
      self.model.train_function = None
    raise ValueError(
        f"Layer {wrapper.name!r} is pruned by method {self.name!r}, but training started "
        f"without it: nothing would be pruned. Pass "
        f"callbacks=[tfprune.PruningCallback()] to model.fit (or use "
        f"tfprune.get_method(model).fit(model, x, y, ...)); in a custom loop call "
        f"method.on_train_begin() before the first step and method.on_train_step() "
        f"every step.")

  def apply(self, model=None, calibration_data=None, **kwargs):
    """Refuses: post-training methods (`PostTrainingMethod`) prune with `apply`."""
    del model, calibration_data, kwargs
    raise ValueError(f"Method {self.name!r} prunes during training: train with "
                     f"tfprune.PruningCallback or method.fit(model, x, y, ...), not "
                     f"method.apply(...).")

  # ------------------------------------------------------------ the driver
  def on_train_begin(self, optimizer=None):
    """Starts training: validates, attaches the optimizer wrapper, marks started.

    Args:
      optimizer: the optimizer of the training loop (default: the model's compiled
        optimizer, if any). A wrapper that serves this method is attached to it; a
        method that needs a wrapper (`optimizer_class()`) refuses any other.

    Raises:
      ValueError: not bound, a refused plain `model.fit`, or the wrong optimizer (the
        message names the call that works).
    """
    self._require_bound()
    if self.phased and not self.in_recipe:
      self.check_plain_fit()
    if optimizer is None and getattr(self.model, "compiled", False):
      optimizer = getattr(self.model, "optimizer", None)
    # mixed_float16: compile wraps the optimizer in a LossScaleOptimizer; the wrapper
    # this method needs is the one inside it (it receives the unscaled gradients).
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
      optimizer = optimizer.inner_optimizer
    cls = self.optimizer_class()
    if cls is not None and optimizer is not None and not isinstance(optimizer, cls):
      raise ValueError(
          f"Method {self.name!r} needs the optimizer wrapper {cls.__name__} (got "
          f"{type(optimizer).__name__}): compile model {self.model.name!r} with "
          f"optimizer=method.prepare_optimizer(keras.optimizers.Adam(1e-3)), or use "
          f"method.fit(model, x, y, ...).")
    if isinstance(optimizer, optimizer_wrapper.WrappedOptimizer) and \
        optimizer.accepts(self) and not getattr(optimizer, "bound_to_plain_model", False):
      optimizer.attach(self)
    if self.uses_gradients and self._gradient_steps is None:
      self._gradient_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                         name=f"{self.name}_gradient_steps")
    if self._gradient_steps is not None:
      self._gradient_steps.assign(0)
    self._steps_since_begin = 0
    self.started = True

  def _advance(self, step):
    for wrapper in self.wrappers:
      wrapper.pruning_step.assign(step + 1)

  def _graph_step(self):
    step = tf.convert_to_tensor(self.step)
    self.update(step)
    self._advance(step)

  def on_train_step(self):
    """One training step: `update(step)`, then the step counter advances.

    Call it before the optimizer step (cross-replica under `tf.distribute`).

    Raises:
      ValueError: `on_train_begin` was not called, or a gradient method saw no
        gradients during the first step (its optimizer hook is missing).
    """
    self._require_bound()
    if not self.started:
      raise ValueError(f"Call method.on_train_begin() before on_train_step() (method "
                       f"{self.name!r}); tfprune.PruningCallback does both in model.fit.")
    if self.uses_gradients and self._steps_since_begin == 1 and \
        int(self._gradient_steps.numpy()) == 0:
      raise ValueError(
          f"Method {self.name!r} scores weights by their gradients but saw none in the "
          f"first training step: train with optimizer=method.prepare_optimizer(...), or "
          f"call method.observe_gradients(grads, variables) after tape.gradient in a "
          f"custom loop.")
    self._steps_since_begin += 1
    if self.compile_update:
      if self._update_fn is None:
        self._update_fn = tf.function(self._graph_step)
      self._update_fn()
    else:
      step = int(self.step.numpy())
      self.update(step)
      if self._advance_fn is None:
        self._advance_fn = tf.function(self._advance)
      self._advance_fn(tf.constant(step, tf.int64))

  def on_train_end(self):
    """Ends training: finishes a phased method's phases under a plain `model.fit`
    (`finish_phases`) and leaves every masked weight exactly zero."""
    self._require_bound()
    if self.phased and not self.in_recipe and self.started:
      self.finish_phases()
    for w, m in zip(self.weights, self.masks):
      w.assign(w * m)
    self.started = False

  @_in_model_strategy
  def fit(self, model, x, y=None, epochs=1, batch_size=128, optimizer=None, loss=None,
          metrics=("accuracy",), callbacks=(), validation_data=None, verbose=1):
    """Prunes the bound, wrapped `model` while training it for `epochs` (the recipe).

    The default recipe compiles `model` with `prepare_optimizer(optimizer)` and runs
    `model.fit` with a `PruningCallback`. Methods with phases (ADMM: ADMM -> hard prune
    -> masked fine-tune; SAP: rounds) override this, keeping the signature, so the
    training binary and the benchmark run every method the same way.

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
    if model is not self.model:
      self.bind(model)
    model.compile(optimizer=self.prepare_optimizer(optimizer or keras.optimizers.Adam(1e-3)),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size,
                        validation_data=validation_data, verbose=verbose,
                        callbacks=[callbacks_lib.PruningCallback(self), *callbacks])
    return dict(history.history)


class PostTrainingMethod(MethodCore):
  """Base class of the post-training methods: the core plus `apply`, no training driver.

  `apply(model, calibration_data)` prunes a trained model in one call. The model it
  pruned may be fine-tuned with a plain `model.fit` (the wrappers keep the masks fixed);
  `tfprune.PruningCallback` refuses these methods. Takes the arguments of `MethodCore`.

  Class attribute a subclass may set: `calibration_samples`, the number of calibration
  inputs `apply` uses by default (None: all it is given), so that callers such as the
  training binary know how many to pass.
  """

  post_training = True
  calibration_samples = None

  def apply(self, model=None, calibration_data=None, **kwargs):
    """Prunes `model` (default: the bound model) in place from `calibration_data`.

    Returns:
      What the method reports about the pruning (e.g. a per-layer table).
    """
    raise NotImplementedError(f"Method {self.name!r} does not implement apply().")
