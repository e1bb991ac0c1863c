"""Physically deletes dead units: a smaller DENSE Keras model with the same outputs.

A unit (Dense neuron / conv filter) is dead when it outputs exact zeros for every input:
its kernel column (over the live input rows) and bias are zero and its activation maps 0
to 0. Structured pruning (`method="l0_gates"`, whose `strip` folds closed gates into
zero columns and biases) produces such units. `shrink_model` deletes them together with the
matching input rows of every consumer (through channel-wise layers: activations,
dropout, pooling, batch normalisation, Flatten) and returns a new model whose layers are
narrower - what a microcontroller needs, since stock TFLM runs dense kernels only
(docs/export.md). The outputs are unchanged (to float rounding), and the model's inputs and
outputs keep their shapes.

Where a shape cannot shrink consistently - a merge (e.g. a residual `Add`) whose inputs
would lose different channels, a Reshape, a shared layer, an unknown layer - `shrink`
raises ValueError naming the layer, rather than changing the function.
"""
import keras
import numpy as np

L = keras.layers

_PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
_NOT_PRODUCERS = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
                  L.SeparableConv1D, L.SeparableConv2D, L.DepthwiseConv1D, L.DepthwiseConv2D)
# Layers that act on each channel separately and map a zero channel to a zero channel.
_CHANNELWISE = (L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D,
                L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout,
                L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
                L.AveragePooling2D, L.AveragePooling3D, L.GlobalMaxPooling1D,
                L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.GlobalAveragePooling1D,
                L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.ZeroPadding1D,
                L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
                L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Identity)
_MERGES = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)


def _maps_zero_to_zero(activation):
  if activation is None:
    return True
  return float(np.asarray(activation(np.zeros((1,), np.float32)))[0]) == 0.0


def _is_producer(layer):
  return isinstance(layer, _PRODUCERS) and not isinstance(layer, _NOT_PRODUCERS)


def _check_format(layer):
  fmt = getattr(layer, "data_format", "channels_last")
  if fmt not in (None, "channels_last"):
    raise ValueError(f"shrink supports channels_last layers only; layer {layer.name!r} "
                     f"({type(layer).__name__}) uses {fmt!r}.")
  if getattr(layer, "groups", 1) != 1:
    raise ValueError(f"shrink cannot delete filters of grouped convolution "
                     f"{layer.name!r} (groups={layer.groups}).")


def _as_graph(model):
  if not isinstance(model, keras.Model):
    raise ValueError(f"shrink needs a keras.Model, got {type(model).__name__}.")
  try:
    inputs, outputs = model.inputs, model.outputs
  except (AttributeError, ValueError):
    inputs = outputs = None
  if not inputs or not outputs:
    raise ValueError(f"shrink needs a built Sequential or Functional model; "
                     f"{model.name!r} has no symbolic inputs/outputs.")
  return inputs, outputs


def _nodes_in_order(outputs):
  """The graph's nodes from inputs to outputs (depth-first topological order)."""
  order, seen = [], set()

  def visit(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
      return
    op, node_index, _ = history
    node = op._inbound_nodes[node_index]  # pylint: disable=protected-access
    if id(node) in seen:
      return
    seen.add(id(node))
    for t in node.input_tensors:
      visit(t)
    order.append(node)

  for t in outputs:
    visit(t)
  return order


def _channels(tensor):
  return int(tensor.shape[-1])


def _flatten_channel_map(tensor):
  """For a Flatten of `tensor` (channels last): the channel of each output feature."""
  shape = [int(d) for d in tensor.shape[1:]]
  ids = np.broadcast_to(np.arange(shape[-1]), shape)
  return ids.reshape(-1)


def _dead_units(layer, dead_in):
  """Boolean array over the output units of a Dense/Conv layer: exactly-zero outputs."""
  kernel = np.asarray(layer.kernel)
  units = kernel.shape[-1]
  if not _maps_zero_to_zero(getattr(layer, "activation", None)):
    return np.zeros(units, bool)
  live_rows = ~dead_in
  moved = np.moveaxis(kernel, -2, 0)[live_rows]  # [live_in, ..., units]
  dead = np.all(moved.reshape(-1, units) == 0, axis=0)
  if getattr(layer, "use_bias", False):
    dead &= np.asarray(layer.bias) == 0
  return dead


def _bn_zero_output(layer):
  """Channels where BatchNormalization maps 0 to exactly 0 (inference)."""
  beta = np.asarray(layer.beta) if layer.center else 0.0
  gamma = np.asarray(layer.gamma) if layer.scale else 1.0
  mean, var = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
  out = beta - gamma * mean / np.sqrt(var + layer.epsilon)
  return np.broadcast_to(out == 0, mean.shape)


def _analyse(nodes, inputs, outputs):
  """Zero-channel analysis, then the consistent deletion set of every tensor."""
  zero = {}
  for t in inputs:
    zero[id(t)] = np.zeros(_channels(t), bool)
  layer_uses = {}
  for node in nodes:
    layer_uses[id(node.operation)] = layer_uses.get(id(node.operation), 0) + 1
  for node in nodes:
    layer = node.operation
    if node.is_input:
      for t in node.outputs:
        zero.setdefault(id(t), np.zeros(_channels(t), bool))
      continue
    ins = [zero[id(t)] for t in node.input_tensors]
    out_t = node.outputs
    if len(out_t) != 1:
      zero[id(out_t[0])] = None
      for t in out_t:
        zero[id(t)] = np.zeros(_channels(t), bool)
      continue
    out = out_t[0]
    n_out = _channels(out)
    if _is_producer(layer) and layer_uses[id(layer)] == 1:
      _check_format(layer)
      zero[id(out)] = _dead_units(layer, ins[0])
    elif isinstance(layer, L.Activation):
      keep = _maps_zero_to_zero(layer.activation)
      zero[id(out)] = ins[0].copy() if keep else np.zeros(n_out, bool)
    elif isinstance(layer, _CHANNELWISE) and getattr(layer, "data_format",
                                                     "channels_last") in (None,
                                                                          "channels_last"):
      zero[id(out)] = ins[0].copy()
    elif isinstance(layer, L.BatchNormalization) and layer.axis in (-1, [-1],
                                                                     len(out.shape) - 1,
                                                                     [len(out.shape) - 1]):
      zero[id(out)] = ins[0] & _bn_zero_output(layer)
    elif isinstance(layer, L.Flatten) and len(node.input_tensors[0].shape) > 2:
      zero[id(out)] = ins[0][_flatten_channel_map(node.input_tensors[0])]
    elif isinstance(layer, L.Flatten):
      zero[id(out)] = ins[0].copy()
    elif isinstance(layer, _MERGES):
      zero[id(out)] = np.logical_and.reduce(ins)
    elif isinstance(layer, L.Concatenate) and layer.axis in (-1, len(out.shape) - 1):
      zero[id(out)] = np.concatenate(ins)
    else:
      zero[id(out)] = np.zeros(n_out, bool)

  delete = {k: (v.copy() if v is not None else None) for k, v in zero.items()}
  for t in list(outputs) + list(inputs):
    delete[id(t)] = np.zeros(_channels(t), bool)

  changed = True
  while changed:
    changed = False

    def meet(key, value):
      nonlocal changed
      new = delete[key] & value
      if not np.array_equal(new, delete[key]):
        delete[key] = new
        changed = True

    for node in nodes:
      if node.is_input or len(node.outputs) != 1:
        continue
      layer, out = node.operation, node.outputs[0]
      ins = node.input_tensors
      if _is_producer(layer) and layer_uses[id(layer)] == 1:
        continue
      if isinstance(layer, (L.Activation, L.BatchNormalization) + _CHANNELWISE) or (
          isinstance(layer, L.Flatten) and len(ins[0].shape) <= 2):
        if _channels(ins[0]) == _channels(out):
          meet(id(ins[0]), delete[id(out)])
          meet(id(out), delete[id(ins[0])])
      elif isinstance(layer, L.Flatten):
        cmap = _flatten_channel_map(ins[0])
        meet(id(out), delete[id(ins[0])][cmap])
        per_channel = np.ones(_channels(ins[0]), bool)
        np.logical_and.at(per_channel, cmap, delete[id(out)])
        meet(id(ins[0]), per_channel)
      elif isinstance(layer, _MERGES):
        meet(id(out), np.logical_and.reduce([delete[id(t)] for t in ins]))
      elif isinstance(layer, L.Concatenate) and layer.axis in (-1, len(out.shape) - 1):
        sizes = np.cumsum([_channels(t) for t in ins])[:-1]
        meet(id(out), np.concatenate([delete[id(t)] for t in ins]))
        for t, part in zip(ins, np.split(delete[id(out)], sizes)):
          meet(id(t), part)
      else:
        meet(id(out), np.zeros(_channels(out), bool))
        for t in ins:
          meet(id(t), np.zeros(_channels(t), bool))

  # Refusals: shapes that would disagree.
  for node in nodes:
    if node.is_input:
      continue
    layer = node.operation
    ins = node.input_tensors
    if isinstance(layer, _MERGES):
      sets = [delete[id(t)] for t in ins]
      if any(not np.array_equal(sets[0], s) for s in sets[1:]):
        counts = [int(s.sum()) for s in [zero[id(t)] for t in ins]]
        raise ValueError(
            f"shrink cannot delete units through {type(layer).__name__} layer "
            f"{layer.name!r}: its inputs have different dead channels (dead per input: "
            f"{counts}), so the two sides would disagree in shape. Prune both sides "
            f"alike (or do not gate the layers that feed it).")
    if _is_producer(layer) and layer_uses[id(layer)] > 1:
      if any(zero[id(t)].any() for t in ins) or any(zero[id(t)].any()
                                                     for t in node.outputs):
        raise ValueError(f"shrink cannot change shared layer {layer.name!r} (called "
                         f"{layer_uses[id(layer)]} times).")
  return delete, layer_uses


def _rebuild_layer(layer, keep_in, keep_out):
  """A new layer with `keep_in` input rows and `keep_out` units (NumPy weights)."""
  if not isinstance(layer, L.Layer):
    # A raw keras.ops node (`x + 3.0`, a mask's `not_equal`): stateless, called again.
    return layer, []
  config = layer.get_config()
  if _is_producer(layer):
    key = "units" if isinstance(layer, L.Dense) else "filters"
    config[key] = int(keep_out.sum())
    new = type(layer).from_config(config)
    kernel = np.asarray(layer.kernel)
    kernel = np.take(kernel, np.flatnonzero(keep_in), axis=-2)
    kernel = kernel[..., keep_out]
    weights = [kernel]
    if layer.use_bias:
      weights.append(np.asarray(layer.bias)[keep_out])
    return new, weights
  if isinstance(layer, L.BatchNormalization):
    new = type(layer).from_config(config)
    return new, [w.numpy()[keep_out] for w in layer.weights]
  if isinstance(layer, keras.Model):
    return keras.models.clone_model(layer), layer.get_weights()
  return type(layer).from_config(config), layer.get_weights()


def shrink_model(model):
  """Returns a smaller dense copy of `model` without its dead units.

  Args:
    model: a plain Sequential or Functional Keras model (e.g. from `tfprune.strip`).

  Returns:
    A new Functional model (same inputs and outputs shapes, same outputs to float
    rounding) with dead Dense neurons / conv filters and the matching input rows of
    their consumers removed. Models without dead units come back as an equal copy.

  Raises:
    ValueError: subclassed or unbuilt model; a merge layer whose inputs would lose
      different channels; a shared layer that would change; channels_first layers.
  """
  inputs, outputs = _as_graph(model)
  nodes = _nodes_in_order(outputs)
  delete, _ = _analyse(nodes, inputs, outputs)
  new_tensors = {}
  new_inputs = []
  for t in inputs:
    history = t._keras_history  # pylint: disable=protected-access
    new = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=history[0].name)
    new_tensors[id(t)] = new
    new_inputs.append(new)
  for node in nodes:
    if node.is_input:
      continue
    layer = node.operation
    ins = node.input_tensors
    keep_in = ~delete[id(ins[0])] if ins else None
    keep_out = ~delete[id(node.outputs[0])]
    new_layer, weights = _rebuild_layer(layer, keep_in, keep_out)
    args, kwargs = node.arguments.fill_in(new_tensors)
    result = new_layer(*args, **kwargs)
    if weights:
      new_layer.set_weights(weights)
    flat = result if isinstance(result, (list, tuple)) else [result]
    for old_t, new_t in zip(node.outputs, flat):
      new_tensors[id(old_t)] = new_t
  new_outputs = [new_tensors[id(t)] for t in outputs]
  if len(new_outputs) == 1:
    new_outputs = new_outputs[0]
  return keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0], new_outputs,
                     name=f"{model.name}_shrunk")


# The name before 0.2 (the function was re-exported as `tfprune.shrink`, shadowing this
# module; it is now `tfprune.shrink_model`).
shrink = shrink_model


def count_params_and_macs(model):
  """(parameters, multiply-accumulates per sample) of the Dense / Conv layers + all params.

  Returns:
    `(total parameter count, MACs per sample)`; MACs count Dense and Conv layers
    (kernel size x output positions).
  """
  macs = 0
  for layer in model.layers:
    if _is_producer(layer):
      kernel_size = int(np.prod(layer.kernel.shape))
      out_shape = layer.output.shape
      positions = int(np.prod([d for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
      macs += kernel_size * positions
  return int(model.count_params()), int(macs)


# ------------------------------------------------------- the channel-graph shrink
def _dead_output(arrays, layer, member):
  """Whether the output channel `member` of producer `layer` has all-zero weights from
  the input (the weights it owns: `allocate.member_slices`, biases aside)."""
  from tfprune.structured import allocate  # pylint: disable=import-outside-toplevel
  return not any(np.any(np.take(arrays[name], idx, axis=axis))
                 for name, axis, idx in allocate.member_slices(layer, member)
                 if not name.endswith("bias"))


def shrink_channels(model, strict=False, data=None):
  """The exact channel shrink of a plain model through its channel dependency graph.

  Deletes every channel unit (`tfprune.structured.ChannelGraph`) that no layer reads any
  more (its reader rows are zero: `scope="structured"` masks) or that is an
  input-independent constant folded exactly into its readers' biases (closed L0 gates,
  a zeroed conv before BatchNormalization): `tfprune.structured.shrink`. Models the graph
  cannot describe fall back to `shrink_model`.

  Never silent: a producer channel that is dead (zero weights from the input) but
  stays is reported - a `UserWarning` naming the layer and why, or with `strict` a
  ValueError when a merge ties it to a live channel of another layer, or when nothing
  at all could be removed.

  Args:
    model: a plain Functional or Sequential model (e.g. `tfprune.strip(pruned)`).
    strict: raise instead of warning (structured methods: their masks remove whole
      channels, so a dead channel that stays is a wrong graph or a gate layout the
      shrink cannot honour).
    data: optional probe inputs for the constants (default random).

  Returns:
    The smaller model (`model` itself when nothing could be removed).
  """
  import warnings  # pylint: disable=import-outside-toplevel
  from tfprune.structured import depgraph  # pylint: disable=import-outside-toplevel
  from tfprune.structured import slicing  # pylint: disable=import-outside-toplevel
  _as_graph(model)
  try:
    graph = depgraph.ChannelGraph(model)
  except ValueError:
    return shrink_model(model)
  new_model, report = slicing.shrink(model, data=data, graph=graph)
  removed = report["removed"]
  arrays = {}
  problems = []
  for g, group in enumerate(graph.groups):
    dead_units, mixed = [], []
    for members in group.units:
      outs = [m for m in members if m.role == "out"]
      for m in outs:
        if m.layer not in arrays:
          arrays[m.layer] = slicing.weight_arrays(model.get_layer(m.layer))
      dead = [(m.layer, int(m.index)) for m in outs
              if _dead_output(arrays[m.layer], model.get_layer(m.layer), m)]
      outs = [(m.layer, int(m.index)) for m in outs]
      if dead and len(dead) < len(outs):
        mixed.append((dead[0], next(o for o in outs if o not in dead)))
      elif dead:
        dead_units.append(dead[0])
    if mixed:
      (dl, dc), (al, ac) = mixed[0]
      where = (f"layer {group.merges[0]!r} merges inputs with different dead channels"
               if group.merges else "its layers have different dead channels")
      problems.append((True, f"{where}: channel {dc} of {dl!r} is dead but the channel "
                             f"it is tied to in {al!r} (channel {ac}) is alive "
                             f"({len(mixed)} such channels); prune both sides alike "
                             f"(scope='structured' does)"))
    lost = len(dead_units) - removed.get(g, 0)
    if lost > 0 and (group.blocked or g in report["kept"]):
      why = group.blocked or report["kept"][g]
      problems.append((False, f"{lost} dead channel(s) of "
                              f"{', '.join(repr(p) for p in group.producers)} "
                              f"stay: {why}"))
  if problems:
    nothing = not removed
    text = "; ".join(p for _, p in problems)
    if strict and (nothing or any(hard for hard, _ in problems)):
      raise ValueError(f"shrink of model {model.name!r}: "
                       f"{'nothing could be removed: ' if nothing else ''}{text}.")
    warnings.warn(f"shrink of model {model.name!r}: {text}.", stacklevel=3)
  return new_model
