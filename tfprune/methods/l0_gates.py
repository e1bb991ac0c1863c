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

With `grouping="graph"` (the default `"auto"` picks it on residual / BatchNorm /
depthwise nets) the gates are per channel GROUP of the model's
`tfprune.structured.ChannelGraph` instead: one gate per group unit, shared by every
producer of the group (one draw per step), per-group or global budgets, and the hard
prune sets the channel-graph masks of the closed units, so the shrink removes them from
every layer of the group (docs/structured.md). See `L0Gates`.

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
from tfprune.structured import selection
from tfprune.structured import depgraph
from tfprune.wrapper import PruneWrapper


def check_gateable(layer):
  """Raises ValueError unless hard-concrete unit gates can be put on `layer`."""
  problem = registry.unit_gate_problem(layer)
  if problem:
    raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot carry L0 "
                     f"unit gates: {problem}; supported are Dense and Conv1D/2D/3D "
                     f"(groups=1, channels_last).")


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

  def column_gates(self, training=False):
    """The gate of every output column `[units]` (sampled while training).

    Per layer (`grouping="layer"`) these are the wrapper's own gates. Per channel group
    (`grouping="graph"`) the bound method computes them from the group gates (one per
    unit, shared by every producer of the group, 1 for columns outside the gated
    groups); an unbound wrapper (a loaded model before `tfprune.get_method`) uses its
    own gates, which the method keeps equal to the group gates (mirrored every step
    and at the hard prune).
    """
    method = self._method
    if method is not None and getattr(method, "group_gating", False):
      return method.column_gates(self, training)
    return self.gate.gates(training=bool(training))

  def _effective(self, z):
    kernel = self.prunable_weights[0]
    mapping = [(kernel, kernel * self.masks[0] * tf.cast(z, kernel.dtype))]
    if self.bias is not None:
      mapping.append((self.bias, self.bias * tf.cast(z, self.bias.dtype)))
    return mapping

  def state_mapping(self, training):
    """Masked weights scaled by the gates (stochastic while training)."""
    return self._effective(self.column_gates(training))

  def stripped_weights(self):
    """The inner layer's weights with masks and test-time gates folded in (NumPy)."""
    z = self.column_gates(training=False)
    folded = {id(v): value for v, value in self._effective(z)}
    return [np.asarray(folded[id(v)]) if id(v) in folded else v.numpy()
            for v in self.layer.weights]

  def open_units(self):
    """Boolean NumPy array: which output columns are open at test time."""
    return np.asarray(self.column_gates(training=False)) > 0


def _output_layer_ids(model):
  """Ids of the layers whose outputs are model outputs (never gated by default)."""
  ids = set()
  for t in model.outputs:
    history = getattr(t, "_keras_history", None)
    if history is not None:
      ids.add(id(history[0]))
  return ids


GROUPINGS = ("auto", "graph", "layer")
_CLOSED, _OPEN = -12.0, 12.0  # log_alpha of a gate fixed closed / open (test-time 0 / 1)


def _is_gateable(layer):
  try:
    check_gateable(layer)
  except ValueError:
    return False
  return True


def coupled_groups(graph):
  """Groups of `graph` (prunable or blocked) whose channels per-layer gates cannot
  remove exactly.

  A group with several producers (a residual `Add`, a squeeze-excite `Multiply`), a
  BatchNormalization (a closed gate leaves BN's shift: a nonzero constant) or a
  depthwise follower; a blocked one (a transformer's residual stream) cannot be removed
  at all, so its producers must not be gated. On a plain chain of Dense / Conv layers
  there is none, and one gate per layer unit is the same as one per group.
  """
  out = []
  for g, group in enumerate(graph.groups):
    roles = {m.role for members in group.units for m in members}
    if len(group.producers) > 1 or roles & {"bn", "dw"}:
      out.append(g)
  return out


@register_method("l0_gates")
class L0Gates(PruningMethod):
  """Structured L0: hard-concrete gates on neurons / filters, then a hard unit budget.

  Two groupings of the gates (`grouping`):

  * `"graph"`: ONE gate per unit of each channel group of the model's
    `tfprune.structured.ChannelGraph` (docs/structured.md): every producer of the group
    (both inputs of a residual `Add`, a conv whose output a BatchNormalization or a
    depthwise conv follows, ...) scales its kernel column and bias of that unit by the
    same gate `z_g[u]` (one hard-concrete draw per step, shared). Budgets are per group
    (`allocation="layer"`) or over all groups; the hard prune keeps the top-k units by
    `log_alpha` and sets the channel-graph masks of the closed units (producer columns,
    reader rows, depthwise slices), so `tfprune.strip(model, shrink=True)` removes them
    from every layer of the group. Channels that cannot be removed (they reach a model
    output - the output layer's outputs are never gated -, pass a layer that cannot be
    sliced, or have a producer that cannot carry gates: SeparableConv, EinsumDense,
    attention heads) are not gated. `round_to`, `min_units` and `ignored_layers` apply
    as in `scope="structured"`.
  * `"layer"`: one independent gate per output unit of each gated layer (all Dense /
    Conv layers except the model's output layers): the original form. On a residual
    net the coupled layers get different gates, so shrink cannot remove those channels.
  * `"auto"` (default): resolved when the model is pruned, and saved resolved: `graph`
    when the model has a channel graph with coupled groups (`coupled_groups`) and a
    group it can gate, else `layer` (a plain chain, where both are the same maths, a
    model the graph cannot describe, or layers named with `prune(..., layers=[...])`).
    Coupled groups whose producers cannot carry gates (a transformer's residual stream,
    made by an Embedding) are then left ungated, so shrink stays exact.

  Args:
    target_sparsity: fraction of the units of each gated layer / group to close (with
      `allocation="global"`: of all gated units together).
    target_units: optional `{layer_name: units_to_keep}`, overriding `target_sparsity`
      for the named layers (allocation "layer" only; with `grouping="graph"`, for the
      group the layer produces).
    allocation: `layer` (a budget and a multiplier per layer or group) or `global`.
    grouping: `auto`, `graph` or `layer` (above).
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
    **kwargs: `schedule`, and with `grouping="graph"` `round_to`, `min_units`,
      `ignored_layers`, `target_macs` and `target_latency` of `PruningMethod` (the
      scope is always `structured`). With a MACs / latency budget the gate phase still
      budgets `target_sparsity` of the channels; the hard prune then closes the
      least-open units (lowest `P(z != 0)`) until the budget fits.
  """

  phased = True
  multi_fit = True   # gate training, then the fine-tune: two model.fit calls
  structured_graph = False  # per instance: True with grouping="graph" (or "auto")

  def __init__(self, target_sparsity=0.5, target_units=None, allocation="layer",
               grouping="auto", droprate_init=0.05, log_alpha_scale=10.0, lambda_init=0.0,
               dual_lr=1e-3, lambda_max=0.02, gate_fraction=0.6, finetune_lr_scale=1.0,
               distill=0.0, temperature=4.0, **kwargs):
    if grouping not in GROUPINGS:
      raise ValueError(f"l0_gates grouping must be one of {', '.join(GROUPINGS)} (one gate "
                       f"per channel group of the model's channel graph, or per layer "
                       f"unit), got {grouping!r}.")
    self.grouping = grouping
    self.structured_graph = grouping != "layer"
    kwargs.pop("scope", None)
    super().__init__(target_sparsity=target_sparsity, scope="structured",
                     allocation=allocation, **kwargs)
    self.compile_update = True  # the dual ascent is TensorFlow ops (graph mode)
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
    self._groups = None  # the channel-group gating, built by `bind` (grouping="graph")

  # ------------------------------------------------------------ grouping
  @property
  def gated_groups(self):
    """Labels of the gated channel groups (their first producer's layer name), or []."""
    return list(self._groups["labels"]) if self._groups else []

  @property
  def group_gating(self):
    """True once bound with one gate per channel group (`grouping="graph"`)."""
    return self._groups is not None

  def _resolve_grouping(self, model, explicit):
    """Settles `grouping="auto"` for `model` (before wrapping)."""
    if self.grouping != "auto":
      return
    grouping = "layer"
    if not explicit:
      try:
        graph = depgraph.ChannelGraph(model)
      except Exception:  # pylint: disable=broad-except (no graph: per-layer gates)
        graph = None
      if graph is not None and coupled_groups(graph):
        ops = {op.name: op for op in graph.model.operations}
        for group in graph.prunable_groups:  # something to gate per group
          if all(_is_gateable(ops[p]) for p in group.producers):
            grouping = "graph"
            break
    if grouping == "layer":
      changed = sorted(self.channels.changed())
      if changed:
        raise ValueError(f"l0_gates: {', '.join(changed)} apply to grouping='graph' only; "
                         f"model {model.name!r} resolved grouping='auto' to 'layer' (no "
                         f"coupled channel group{', layers named' if explicit else ''}): "
                         f"pass grouping='graph'.")
    self.grouping = grouping
    self.structured_graph = grouping == "graph"

  # ------------------------------------------------------------ wrapping
  def make_wrapper(self, layer):
    if self.grouping == "graph" and not _is_gateable(layer):
      return PruneWrapper(layer, method=self)  # masks only (depthwise followers, ...)
    return L0GateWrapper(layer, method=self)

  def select_layers(self, model, layers, explicit=False):
    self._resolve_grouping(model, explicit)
    if explicit:
      for layer in layers:
        if self.grouping == "layer":
          check_gateable(layer)
      return layers
    if self.grouping == "graph":
      return layers  # every prunable layer: readers' rows and followers are masked too
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

  def _gate_wrappers(self):
    return [w for w in self.wrappers if isinstance(w, L0GateWrapper)]

  def bind(self, model):
    if self.grouping == "auto":  # wrapped by hand: no resolution happened
      self.grouping, self.structured_graph = "layer", False
    super().bind(model)
    if self.grouping == "layer":
      bad = [w.name for w in self.wrappers if not isinstance(w, L0GateWrapper)]
      if bad:
        raise ValueError(f"The l0_gates method needs L0GateWrapper layers (made by "
                         f"tfprune.prune(model, 'l0_gates')); got plain wrappers {bad}.")
      names = {w.layer.name for w in self.wrappers}
      unknown = sorted(set(self.target_units) - names)
      if unknown:
        raise ValueError(f"target_units names {unknown}, which are not gated layers; "
                         f"gated layers are {sorted(names)}.")
      self._groups = None
      return self
    self._bind_groups()
    return self

  def _bind_groups(self):
    """One gate per unit of every gateable channel group; see the class docstring."""
    graph = self.channels.graph
    gws = self._gate_wrappers()
    position = {w.name: i for i, w in enumerate(gws)}
    layer_names = {w.name: w.layer.name for w in self.wrappers}
    ignored = self.channels.ignored_names()
    eligible = sorted({g for g, _ in self.channels.slices})
    gated, skipped = [], {}
    for g in eligible:
      group = graph.groups[g]
      if ignored & set(group.layers):
        skipped[g] = "ignored_layers"
        continue
      roles = {m.role for members in group.units for m in members}
      bad = [p for p in group.producers if p not in position]
      if "head" in roles or bad:
        name = layer_names.get((bad or group.producers)[0], (bad or group.producers)[0])
        kind = "attention heads" if "head" in roles else "not Dense / Conv"
        skipped[g] = f"producer {name!r} ({kind}) cannot carry L0 unit gates"
        continue
      gated.append(g)
    if not gated:
      raise ValueError(
          f"l0_gates grouping='graph': no channel group of model {self.model.name!r} can "
          f"be gated.\n{self.channel_report()}" + "".join(
              f"\ngroup {g}: {why}" for g, why in sorted(skipped.items())))
    offsets = np.cumsum([0] + [w.gate.units for w in gws])
    flat, segment, pos, labels, owners = [], [], {}, [], set()
    idx = {w.name: np.full(w.gate.units, -1, np.int64) for w in gws}
    for k, g in enumerate(gated):
      group = graph.groups[g]
      first = gws[min(position[p] for p in group.producers)].layer.name
      label = first if first not in labels else f"{first}#{k}"
      labels.append(label)
      pos[label] = []
      for members in group.units:
        outs = sorted(((position[m.layer], int(m.index)) for m in members if m.role == "out"))
        n = len(flat)
        flat.append(int(offsets[outs[0][0]] + outs[0][1]))  # the owner's own gate
        owners.add(outs[0][0])
        segment.append(k)
        pos[label].append(n)
        for i, col in outs:
          idx[gws[i].name][col] = n
    total = len(flat)
    self._groups = {
        "graph_ids": gated, "labels": labels, "positions": pos, "skipped": skipped,
        "flat": tf.constant(flat, tf.int32), "segment": tf.constant(segment, tf.int32),
        "gather": {name: tf.constant(np.where(v < 0, total, v), tf.int32)
                   for name, v in idx.items()},
        "owned": {name: v >= 0 for name, v in idx.items()}, "units": total}
    self._noise = tf.Variable(tf.random.uniform([total], gates_lib.EPSILON,
                                                1.0 - gates_lib.EPSILON),
                              trainable=False, name="l0_group_noise")
    self._lambdas = tf.Variable(tf.zeros([len(gated)]), trainable=False,
                                name="l0_group_lambda")
    for i, w in enumerate(gws):
      if i not in owners:
        w.gate.trainable = False  # its columns follow other layers' gates, or none
    self._mirror()  # non-owned columns: the owner's gate; columns of no gated group: open
    produced = {}
    for label, g in zip(labels, gated):
      for w in gws:
        if w.name in graph.groups[g].producers:
          produced.setdefault(w.layer.name, []).append(label)
    bad = sorted(n for n in self.target_units if len(produced.get(n, ())) != 1)
    if bad:
      raise ValueError(f"target_units names {bad}, which are not gated layers (layers "
                       f"producing exactly one gated channel group); gated layers are "
                       f"{sorted(n for n, v in produced.items() if len(v) == 1)}.")
    self._groups["target"] = {produced[n][0]: int(k) for n, k in self.target_units.items()}

  def _all(self, attr):
    """The group gates' `log_alpha` or `unit_mask`, one entry per gated unit."""
    gws = self._gate_wrappers()
    values = [tf.convert_to_tensor(w.gate.log_alpha if attr == "log_alpha" else
                                   w.gate.unit_mask) for w in gws]
    return tf.gather(tf.concat(values, 0), self._groups["flat"])

  def group_gates(self, training=False):
    """Gate value of every gated unit (sampled from the shared noise while training)."""
    log_alpha = self._all("log_alpha")
    if training:
      z = gates_lib.gates_from_noise(log_alpha, self._noise)
    else:
      z = gates_lib.deterministic_gates(log_alpha)
    return z * tf.cast(self._all("unit_mask"), z.dtype)

  def column_gates(self, wrapper, training=False):
    """Gates of `wrapper`'s output columns: its units' group gates, 1 elsewhere."""
    z = self.group_gates(training=bool(training))
    z = tf.concat([z, tf.ones([1], z.dtype)], 0)
    return tf.gather(z, self._groups["gather"][wrapper.name])

  def _group_expected_l0(self):
    """E[||z_g||_0] per gated group (Louizos et al. eq. 12), a `[groups]` tensor."""
    p = gates_lib.open_probability(self._all("log_alpha")) * self._all("unit_mask")
    return tf.math.unsorted_segment_sum(p, self._groups["segment"],
                                        len(self._groups["labels"]))

  def _mirror(self):
    """Copies the group gates into every producer's own gate (loaded-model fallback)."""
    log_alpha = tf.concat([self._all("log_alpha"), tf.fill([1], _OPEN)], 0)
    mask = tf.concat([self._all("unit_mask"), tf.ones([1])], 0)
    for w in self._gate_wrappers():
      index = self._groups["gather"][w.name]
      w.gate.raw_log_alpha.assign(tf.gather(log_alpha, index) / w.gate.log_alpha_scale)
      w.gate.unit_mask.assign(tf.gather(mask, index))

  # ------------------------------------------------------------ budgets
  def _group_sizes(self):
    return {label: len(p) for label, p in self._groups["positions"].items()}

  def budgets(self):
    """Units to keep per gated layer / group (dict), or for all (global allocation)."""
    self._require_bound()
    if self.group_gating:
      sizes = self._group_sizes()
      if self.allocation == "global":
        return {"__global__": int(masks_lib.keep_count(sum(sizes.values()),
                                                       self.target_sparsity))}
      out = {}
      for label, size in sizes.items():
        k = self._groups["target"].get(label)
        if k is None:
          k = int(masks_lib.keep_count(size, self.target_sparsity))
        out[label] = selection.round_keep(min(int(k), size), size,
                                          self.channels.round_to, self.channels.min_units)
      return out
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
    """`lambda * E[||z||_0]` of one layer (Louizos et al. eq. 12); per group, the sum
    over the groups is added once (by the first wrapper)."""
    if self.group_gating:
      if wrapper is not self.wrappers[0]:
        return None
      return tf.reduce_sum(self._lambdas * self._group_expected_l0())
    return wrapper.l0_lambda * wrapper.gate.expected_l0()

  def on_train_begin(self, optimizer=None):
    super().on_train_begin(optimizer=optimizer)
    self._budget = self.budgets()
    if not getattr(self, "_lambda_initialised", False):
      if self.group_gating:
        self._lambdas.assign(tf.fill(self._lambdas.shape, self.lambda_init))
      else:
        for w in self.wrappers:
          w.l0_lambda.assign(self.lambda_init)
      self._lambda_initialised = True

  def on_train_end(self):
    if self.group_gating:
      self._mirror()
    super().on_train_end()

  def _dual_update(self, lam, violation):
    """Raises lambda while the budget is violated; drops it to 0 once it is met.

    (Plain dual ascent lags behind the gates and over-closes whole layers when the
    training budget is a few epochs; resetting at feasibility stops the push at once.)
    """
    raised = tf.minimum(lam + self.dual_lr * violation, self.lambda_max)
    return tf.where(violation > 0.0, raised, tf.zeros_like(lam))

  def update(self, step):
    """Dual ascent on each budget's multiplier (graph mode); per group, a new shared
    noise draw for the step and the group gates mirrored into the producers' own."""
    del step
    budget = self._budget
    if self.group_gating:
      self._mirror()
      self._noise.assign(tf.random.uniform(self._noise.shape, gates_lib.EPSILON,
                                           1.0 - gates_lib.EPSILON))
      expected = self._group_expected_l0()
      if self.allocation == "global":
        violation = tf.reduce_sum(expected) / float(budget["__global__"]) - 1.0
        violation = tf.fill(self._lambdas.shape, violation)
      else:
        goal = tf.constant([float(budget[label]) for label in self._groups["labels"]])
        violation = expected / goal - 1.0
      self._lambdas.assign(self._dual_update(self._lambdas, violation))
      return
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
    if all(not w.gate.trainable for w in self._gate_wrappers()):
      return  # already hard-pruned
    logging.warning("l0_gates: model.fit ran the gate phase only; hard-pruning to the "
                    "unit budget at train end, the fine-tune with fixed gates was skipped. "
                    "Use method.fit(model, x, y, epochs=...) for gates -> hard prune -> "
                    "fine-tune.")
    self.last_kept = self.hard_prune()

  # ------------------------------------------------------------ hard prune
  def kept_units(self):
    """Per gated layer name (per group label with `grouping="graph"`), a boolean array
    of the top-k units by `log_alpha` (ties: lower index)."""
    self._require_bound()
    if self.group_gating and self.channels.budget is not None:
      return self._kept_for_budget()
    budget = self.budgets()
    if self.group_gating:
      log_alpha = np.asarray(self._all("log_alpha"), np.float64)
      scores = {label: log_alpha[p] for label, p in self._groups["positions"].items()}
      if self.allocation == "global":
        order = np.argsort(-log_alpha, kind="stable")[:budget["__global__"]]
        chosen = np.zeros(log_alpha.shape, bool)
        chosen[order] = True
        budget = {label: selection.round_keep(int(chosen[p].sum()), len(p),
                                              self.channels.round_to,
                                              self.channels.min_units)
                  for label, p in self._groups["positions"].items()}
    else:
      scores = {w.layer.name: np.asarray(w.gate.log_alpha, np.float64)
                for w in self.wrappers}
    if self.allocation == "global" and not self.group_gating:
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

  def _kept_for_budget(self):
    """`kept_units` under `target_macs` / `target_latency`: the least-open units (lowest
    `P(z != 0)`) go first until the model's MACs / estimated latency fit."""
    prob = np.asarray(gates_lib.open_probability(
        tf.cast(self._all("log_alpha"), tf.float32)), np.float64)
    groups = self._groups
    scores = {(g, u): float(prob[n]) for g, label in zip(groups["graph_ids"], groups["labels"])
              for u, n in enumerate(groups["positions"][label])}
    removed = set(self.channels.select(scores, self.allocation,
                                       budget=self.channels.budget))
    return {label: np.array([(g, u) not in removed
                             for u in range(len(groups["positions"][label]))])
            for g, label in zip(groups["graph_ids"], groups["labels"])}

  def hard_prune(self):
    """Fixes the gates: keeps the budgeted units, folds the gate values into the weights.

    After this, training (without the penalty: multipliers are zeroed) fine-tunes the
    kept units; inference is unchanged for every kept unit. Per channel group, the
    closed units' channel-graph masks are set too (every layer of the group).

    Returns:
      `{layer_name (group label): number of kept units}`.
    """
    kept = self.kept_units()
    if self.group_gating:
      return self._hard_prune_groups(kept)
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
      w.gate.set_log_alpha(np.where(keep, _OPEN, _CLOSED))
      w.gate.unit_mask.assign(keep.astype(np.float32))
      w.gate.trainable = False
      mask = np.broadcast_to(keep.astype(np.float32), kernel.shape)
      w.set_masks([mask])
      w.l0_lambda.assign(0.0)
    return {name: int(k.sum()) for name, k in kept.items()}

  def _unit_keep(self, kept):
    keep = np.zeros(self._groups["units"], bool)
    for label, p in self._groups["positions"].items():
      keep[p] = kept[label]
    return keep

  def _group_masks(self, kept):
    """Channel-graph masks (aligned with `weights`) closing the units not in `kept`."""
    removed = [(g, u) for g, label in zip(self._groups["graph_ids"], self._groups["labels"])
               for u in np.flatnonzero(~kept[label])]
    return self.channels.masks_removing(removed, [w.shape for w in self.weights])

  def _hard_prune_groups(self, kept):
    keep = self._unit_keep(kept)
    log_alpha = self._all("log_alpha")
    z = self.group_gates(training=False).numpy()
    p_open = (gates_lib.open_probability(log_alpha) * self._all("unit_mask")).numpy()
    z = np.where(z > 0, z, p_open) * keep
    z_ext = np.concatenate([z, [1.0]]).astype(np.float32)
    for w in self._gate_wrappers():
      zc = z_ext[self._groups["gather"][w.name].numpy()]
      kernel = w.prunable_weights[0]
      kernel.assign(kernel.numpy() * zc)
      if w.bias is not None:
        w.bias.assign(w.bias.numpy() * zc)
    # The owners' gates fixed open / closed, then mirrored into every producer.
    gws = self._gate_wrappers()
    flat = self._groups["flat"].numpy()
    offsets = np.cumsum([0] + [w.gate.units for w in gws])
    for i, w in enumerate(gws):
      mine = (flat >= offsets[i]) & (flat < offsets[i + 1])
      la = np.asarray(w.gate.log_alpha, np.float32).copy()
      mask = w.gate.unit_mask.numpy().copy()
      cols = flat[mine] - offsets[i]
      la[cols] = np.where(keep[mine], _OPEN, _CLOSED)
      mask[cols] = keep[mine]
      w.gate.set_log_alpha(la)
      w.gate.unit_mask.assign(mask.astype(np.float32))
      w.gate.trainable = False
    self._mirror()
    masks = self._group_masks(kept)
    self.assign_masks([np.asarray(m.numpy()) * new for m, new in zip(self.masks, masks)])
    self._lambdas.assign(tf.zeros_like(self._lambdas))
    return {label: int(k.sum()) for label, k in kept.items()}

  def compute_masks(self, sparsity):
    """Structured masks from the current gates (columns of the closed units; per
    channel group, every slice of the closed units)."""
    del sparsity
    kept = self.kept_units()
    if self.group_gating:
      return [tf.constant(m) for m in self._group_masks(kept)]
    return [tf.broadcast_to(tf.constant(kept[w.layer.name], tf.float32), w.masks[0].shape)
            for w in self.wrappers]

  def channel_report(self):
    """Text: the channel graph's groups, and (per group) which are gated and why not."""
    text = self.channels.report()
    if self.group_gating:
      for g, why in sorted(self._groups["skipped"].items()):
        text += f"\ngroup {g} not gated: {why}"
    return text

  def diagnostics(self):
    out = super().diagnostics()
    if self.group_gating:
      z = self.group_gates(training=False).numpy()
      expected = self._group_expected_l0().numpy()
      lambdas = self._lambdas.numpy()
      for k, (label, p) in enumerate(self._groups["positions"].items()):
        out[f"open_units/{label}"] = float(np.sum(z[p] > 0))
        out[f"expected_l0/{label}"] = float(expected[k])
        out[f"lambda/{label}"] = float(lambdas[k])
      return out
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
    config.update({"target_units": dict(self.target_units), "grouping": self.grouping,
                   "droprate_init": self.droprate_init,
                   "log_alpha_scale": self.log_alpha_scale,
                   "lambda_init": self.lambda_init, "dual_lr": self.dual_lr,
                   "lambda_max": self.lambda_max,
                   "gate_fraction": self.gate_fraction,
                   "finetune_lr_scale": self.finetune_lr_scale,
                   "distill": self.distill, "temperature": self.temperature})
    return config

  @classmethod
  def from_config(cls, config):
    # Configs saved before `grouping` existed gated per layer.
    return cls(**{"grouping": "layer", **config})
