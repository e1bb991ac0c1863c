"""Physically removes channel units found by `depgraph.ChannelGraph`: a smaller dense model.

`remove_units(model, graph, units)` deletes, in every layer of each unit's group, the
weights of that channel / head (kernel columns and rows, biases, normalisation
parameters, depthwise slices, attention heads) and rebuilds the model from its edited
config, so op nodes, masks and layer settings are kept.

A removed channel is rarely exactly zero: after a zeroed conv, BatchNormalization's shift
and the bias make it a constant. The constant is *measured* at every layer that reads the
channel (one probe pass) and folded into that reader's bias where this is exact: Dense,
EinsumDense and attention projections (always), convolutions with `padding="valid"`, and
any reader when the constant is 0. Where it is not exact (a nonzero constant read by a
`padding="same"` conv, or a reader without a bias), `remove_units` raises ValueError
naming the layer, unless that unit is left out (`shrink` leaves it in and says so).

One function per channel kind of `tfprune.layer_types` slices the weights (`_SLICERS`):
a new layer type of an existing kind is one taxonomy entry. Channel-axis `ops.split` nodes are rewritten with their new section sizes.

Never a wrong shrink: before it returns, `remove_units` runs the new model and the old one
on probe inputs built from the model's input specs (random floats, small integer ids, dict
inputs by name) and raises `ShrinkMismatchError` naming the first layer or op whose kept
channels differ (beyond 1e-4 of the output's scale) and the groups whose channels were
removed. See docs/structured.md.
"""
import copy
import functools

import keras
import numpy as np

from tfprune import _liveness
from tfprune import layer_types
from tfprune.structured import blocks
from tfprune.structured import depgraph
from tfprune.structured import members

_READER_ROLES = ("in", "in_query", "in_value", "in_key")
# A shrunk model's outputs may differ from the original's by float rounding only: at most
# this fraction of the output's largest magnitude.
VERIFY_RTOL = 1e-4


class ShrinkMismatchError(ValueError):
  """The shrunk model does not compute what the original model computes (a bug or a node
  the channel graph mis-read): nothing is returned. The message names the layer or op."""


def weight_arrays(layer):
  """{"kernel": array, "query/kernel": array, ...} in `layer.weights` order."""
  return {k: np.array(v.numpy()) for k, v in members.weights_by_name(layer).items()}


def _drop(array, axis, indices):
  return np.delete(array, sorted(indices), axis=axis) if indices else array


def _dense_like(config, w, cut, units_key):
  """Dense / Conv / EinsumDense: kernel [..., in, out], bias [out]."""
  w["kernel"] = _drop(_drop(w["kernel"], -2, cut.get("in", ())), -1, cut.get("out", ()))
  if "bias" in w:
    w["bias"] = _drop(w["bias"], -1, cut.get("out", ()))
  if units_key:
    config[units_key] = int(w["kernel"].shape[-1])


def _slice_dense(config, w, cut):
  _dense_like(config, w, cut, "units")


def _slice_conv(config, w, cut):
  _dense_like(config, w, cut, "filters")


def _slice_conv_transpose(config, w, cut):
  w["kernel"] = _drop(_drop(w["kernel"], -1, cut.get("in", ())), -2, cut.get("out", ()))
  if "bias" in w:
    w["bias"] = _drop(w["bias"], -1, cut.get("out", ()))
  config["filters"] = int(w["kernel"].shape[-2])


def _slice_einsum(config, w, cut):
  _dense_like(config, w, cut, None)
  shape = config["output_shape"]
  shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
  shape[-1] = int(w["kernel"].shape[-1])
  config["output_shape"] = shape if len(shape) > 1 else shape[0]


def _depthwise_rows(channels, mult):
  return [c * mult + j for c in channels for j in range(mult)]


def _slice_depthwise(config, w, cut):
  channels = cut.get("dw", ())
  mult = int(config.get("depth_multiplier", 1))
  w["kernel"] = _drop(w["kernel"], -2, channels)
  if "bias" in w:
    w["bias"] = _drop(w["bias"], -1, _depthwise_rows(channels, mult))


def _slice_separable(config, w, cut):
  channels = cut.get("dw", ())
  mult = int(config.get("depth_multiplier", 1))
  w["depthwise_kernel"] = _drop(w["depthwise_kernel"], -2, channels)
  w["pointwise_kernel"] = _drop(_drop(w["pointwise_kernel"], -2,
                                      _depthwise_rows(channels, mult)),
                                -1, cut.get("out", ()))
  if "bias" in w:
    w["bias"] = _drop(w["bias"], -1, cut.get("out", ()))
  config["filters"] = int(w["pointwise_kernel"].shape[-1])


def _slice_scale(config, w, cut, follows=()):
  """Per-channel parameters (BatchNormalization, GroupNormalization); config keys in
  `follows` that equal the channel count take the new count."""
  for name in w:
    w[name] = _drop(w[name], -1, cut.get("bn", ()))
  for key in follows:
    if config.get(key, -1) != -1 and w:
      config[key] = int(next(iter(w.values())).shape[-1])


def _slice_embedding(config, w, cut):
  w["embeddings"] = _drop(w["embeddings"], -1, cut.get("out", ()))
  config["output_dim"] = int(w["embeddings"].shape[-1])


def _slice_attention(config, w, cut):
  """Heads: axis 1 of the q/k/v kernels, axis 0 of the output kernel."""
  heads = cut.get("head", ())
  for part in ("query", "key", "value"):
    w[f"{part}/kernel"] = _drop(_drop(w[f"{part}/kernel"], 0, cut.get(f"in_{part}", ())),
                                1, heads)
    if f"{part}/bias" in w:
      w[f"{part}/bias"] = _drop(w[f"{part}/bias"], 0, heads)
  w["attention_output/kernel"] = _drop(_drop(w["attention_output/kernel"], 0, heads),
                                       -1, cut.get("out", ()))
  if "attention_output/bias" in w:
    w["attention_output/bias"] = _drop(w["attention_output/bias"], -1, cut.get("out", ()))
  config["num_heads"] = int(w["query/kernel"].shape[1])
  config["output_shape"] = int(w["attention_output/kernel"].shape[-1])


# One slicer per `tfprune.layer_types` channel kind.
_SLICERS = {
    layer_types.DENSE: _slice_dense, layer_types.CONV: _slice_conv,
    layer_types.TRANSPOSE: _slice_conv_transpose, layer_types.DEPTHWISE: _slice_depthwise,
    layer_types.SEPARABLE: _slice_separable, layer_types.SCALE: _slice_scale,
    layer_types.EMBEDDING: _slice_embedding, layer_types.EINSUM: _slice_einsum,
    layer_types.ATTENTION: _slice_attention,
}


# ------------------------------------------------------------------ constants
def _reader_inputs(own, layer, role):
  """The symbolic tensor `layer` reads for `role`: its only call among the model's node
  ids `own` (a layer of an inlined nested model has one more call, in that model)."""
  calls = [n for n in getattr(layer, "_inbound_nodes", []) if not own or id(n) in own]
  if len(calls) != 1:
    raise ValueError(f"layer {layer.name!r} is called more than once (shared): its "
                     f"inputs cannot be probed, so its channels are not removed.")
  node = calls[0]
  tensors = list(node.arguments.keras_tensors)
  if role == "in":
    return tensors[0]
  index = {"in_query": 0, "in_value": 1, "in_key": 2}[role]
  return tensors[min(index, len(tensors) - 1)]


def probe_inputs(model, data=None, batch=4, seed=0):
  """Inputs for the constant probe: `data` (first rows) or random data per input dtype."""
  if data is not None:  # (an array, a list or a dict by input name: the first rows)
    return keras.tree.map_structure(lambda d: np.asarray(d)[:max(batch, 2)], data)
  rng = np.random.default_rng(seed)
  out = []
  for tensor in model.inputs:
    shape = [batch] + [int(d) if d is not None else 8 for d in tensor.shape[1:]]
    if "int" in str(tensor.dtype):
      out.append(rng.integers(0, 2, size=shape).astype(str(tensor.dtype)))
    else:
      out.append(rng.standard_normal(shape).astype(str(tensor.dtype)))
  return out


def measure_constants(model, readers, data=None, rtol=1e-5):
  """Per reader (layer, role): the values its input takes, and which are constant.

  Returns {(layer, role): (mean over the batch [features...], constant mask over the
  flattened per-example features)}, one probe pass for all readers.
  """
  keys = list(readers)
  nodes = getattr(model, "_nodes_by_depth", {})  # pylint: disable=protected-access
  own = {id(n) for level in nodes.values() for n in level}
  tensors = [_reader_inputs(own, model.get_layer(l), r) for l, r in keys]
  if not tensors:
    return {}
  probe = keras.Model(model.inputs, tensors)
  try:
    values = probe(probe_inputs(model, data), training=False)
  except Exception as e:  # pylint: disable=broad-except (the model's own layers)
    if data is not None:
      raise
    raise ValueError(
        f"The shrink probes model {model.name!r} with random inputs (dynamic dimensions "
        f"at {_liveness.NONE_DIM}), which it cannot run ({type(e).__name__}: "
        f"{' '.join(str(e).split())[:200]}); pass real inputs: "
        f"tfprune.shrink_model(tfprune.strip(pruned), data=x).") from e
  values = values if isinstance(values, (list, tuple)) else [values]
  out = {}
  for key, value in zip(keys, values):
    value = np.asarray(value, np.float64)
    mean = value.mean(axis=0)
    spread = value.max(axis=0) - value.min(axis=0)
    out[key] = (mean, spread <= rtol * np.maximum(1.0, np.abs(mean)))
  return out


# ------------------------------------------------------------------ folding
def _kind(layer):
  """`layer`'s `tfprune.layer_types` channel kind (None for a custom block)."""
  return getattr(layer_types.of(layer), "channels", None)


def fold_problem(layer, role, rows, const, spatial):
  """Why the removed rows' constants cannot be folded into `layer` exactly, or None.

  `const[r]` is row r's constant value, `spatial[r]` whether it is the same at every
  spatial position.
  """
  cls = type(layer).__name__
  nonzero = [r for r in rows if const[r] != 0]
  if not nonzero:
    return None
  if not getattr(layer, "use_bias", True):
    return (f"layer {layer.name!r} ({cls}) reads constant nonzero channels {nonzero[:5]} "
            f"and has no bias to fold them into")
  kind = _kind(layer)
  if kind in (layer_types.DENSE, layer_types.EINSUM, layer_types.ATTENTION):
    return None
  if kind in (layer_types.CONV, layer_types.SEPARABLE):
    if layer.padding == "valid" and all(spatial[r] for r in nonzero):
      return None
    return (f"layer {layer.name!r} ({cls}, padding={layer.padding!r}) reads constant "
            f"nonzero channels {nonzero[:5]}: at the borders its zero padding makes their "
            f"contribution position-dependent")
  return f"cannot fold constant channels into layer {layer.name!r} ({cls})"


def _fold(layer, w, role, rows, const, spatial):
  """Adds the removed rows' constant contribution to `layer`'s bias (exact, or raises)."""
  problem = fold_problem(layer, role, rows, const, spatial)
  if problem:
    raise ValueError(f"cannot remove the channels: {problem}.")
  nonzero = [r for r in sorted(rows) if const[r] != 0]
  if not nonzero:
    return
  kind = _kind(layer)
  c = const[nonzero]
  if kind == layer_types.ATTENTION:
    part = {"in_query": "query", "in_value": "value", "in_key": "key"}[role]
    w[f"{part}/bias"] = w[f"{part}/bias"] + np.tensordot(c, w[f"{part}/kernel"][nonzero], 1)
  elif kind in (layer_types.DENSE, layer_types.EINSUM):
    w["bias"] = w["bias"] + c @ w["kernel"][nonzero]
  elif kind == layer_types.SEPARABLE:
    mult = int(layer.depth_multiplier)
    dw = w["depthwise_kernel"]
    dw_sum = dw.reshape(-1, dw.shape[-2], dw.shape[-1]).sum(axis=0)  # [in, mult]
    pw = w["pointwise_kernel"].reshape(-1, w["pointwise_kernel"].shape[-1])
    for value, ch in zip(c, nonzero):
      w["bias"] = w["bias"] + value * (dw_sum[ch] @ pw[ch * mult:(ch + 1) * mult])
  else:  # a valid-padded convolution: every output position sees the whole kernel
    kernel = w["kernel"]
    summed = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0)
    w["bias"] = w["bias"] + c @ summed[nonzero]


# ------------------------------------------------------------------ removal
def _is_reader(layer, role):
  """Roles where a removed channel stops: the layer reads it into other channels."""
  return role in _READER_ROLES or (role == "dw" and _kind(layer) == layer_types.SEPARABLE)


def _probe_role(role):
  return "in" if role == "dw" else role


def _unit_cuts(graph, g, u):
  """{(layer, role): set(indices)} of one unit."""
  cuts = {}
  for member in graph.groups[g].units[u]:
    index = member.index if isinstance(member.index, tuple) else (member.index,)
    cuts.setdefault((member.layer, member.role), set()).update(int(i) for i in index)
  return cuts


def _readers(model, graph, units):
  return sorted({(l, _probe_role(r)) for g, u in units for (l, r) in _unit_cuts(graph, g, u)
                 if _is_reader(model.get_layer(l), r)})


def channel_constants(mean, constant, rows):
  """Per row of a reader's input: its constant value and whether it is position-uniform.

  Returns (const, uniform, alive): `alive` lists the rows that are not constant over the
  probe batch (removing them would change the outputs).
  """
  channels = mean.shape[-1]
  flat_mean = mean.reshape(-1, channels)
  flat_const = constant.reshape(-1, channels)
  const = np.zeros(channels)
  uniform = np.ones(channels, bool)
  alive = []
  for r in rows:
    if not flat_const[:, r].all():
      alive.append(r)
      continue
    values = flat_mean[:, r]
    const[r] = values.mean()
    uniform[r] = bool(np.allclose(values, values[0], rtol=1e-5, atol=1e-7))
  return const, uniform, alive


def _rows_unread(layer, role, rows):
  """True if `layer`'s weights for input `rows` are all zero (the channel is not read)."""
  w = weight_arrays(layer)
  rows = sorted(rows)
  if type(layer).__name__ == "MultiHeadAttention":
    part = {"in_query": "query", "in_value": "value", "in_key": "key"}[role]
    return not np.any(w[f"{part}/kernel"][rows])
  if role == "dw":
    return not np.any(w["depthwise_kernel"][..., rows, :])
  kernel = w.get("kernel")
  axis = -1 if type(layer).__name__.endswith("Transpose") else -2
  return kernel is not None and not np.any(np.take(kernel, rows, axis=axis))


def _input_independent(layer, role, rows):
  """True if the weights that make these channels from the layer's input are all zero.

  Such a channel is a constant (its bias, shifted by what follows) for every input, so
  it can be measured once and folded. Decided from the weights, never from the probe: a
  ReLU channel that happens to be zero on a few probe inputs is not dead.
  """
  w = weight_arrays(layer)
  rows = sorted(rows)
  kind = _kind(layer)
  if role == "head":  # a head whose output projection is zero contributes nothing
    return not np.any(w["attention_output/kernel"][rows])
  if kind == layer_types.ATTENTION:
    return not np.any(w["attention_output/kernel"][..., rows])
  if kind == layer_types.SEPARABLE:
    return not np.any(w["pointwise_kernel"][..., rows])
  if kind == layer_types.EMBEDDING:
    return not np.any(w["embeddings"][..., rows])
  kernel = w["kernel"]
  axis = -2 if kind == layer_types.TRANSPOSE else -1
  return not np.any(np.take(kernel, rows, axis=axis))


def unit_problem(model, graph, g, u, constants):
  """Why removing unit `u` of group `g` would change the model's function, or None.

  A unit can go when every layer reading it has zero weights for it (nothing to fold),
  or when every layer producing it has zero weights for it (it is an input-independent
  constant) and the constant folds exactly into the readers' biases.
  """
  group = graph.groups[g]
  if group.blocked:
    return group.blocked
  cuts = _unit_cuts(graph, g, u)
  inside = {n for (n, r) in cuts if blocks.is_block_role(r)}  # [blocks hook]
  if inside:  # a unit inside a custom block: removable when nothing reads it
    return blocks.unit_problem(model.get_layer(inside.pop()), cuts)
  readers = {(n, r): rows for (n, r), rows in cuts.items()
             if _is_reader(model.get_layer(n), r)
             and not _rows_unread(model.get_layer(n), r, rows)}
  heads = [(n, rows) for (n, r), rows in cuts.items() if r == "head"]
  for name, rows in heads:
    if not _input_independent(model.get_layer(name), "head", rows):
      return f"head {sorted(rows)[0]} of {name!r} still contributes to its output"
  if not readers:
    return None
  for (name, role), rows in cuts.items():
    if role == "out" and not _input_independent(model.get_layer(name), role, rows):
      return f"channel {sorted(rows)[0]} of {name!r} depends on the input (still alive)"
  for (name, role), rows in readers.items():
    layer = model.get_layer(name)
    mean, constant = constants[(name, _probe_role(role))]
    const, uniform, alive = channel_constants(mean, constant, rows)
    if alive:
      return f"channel {alive[0]} read by {name!r} is not constant (still alive)"
    problem = fold_problem(layer, role, rows, const, uniform)
    if problem:
      return problem
  return None


def remove_units(model, graph, units, data=None):
  """A new model without `units` (pairs (group index, unit index) of `graph.groups`).

  Each removed channel's constant value is measured at its readers and folded into their
  biases, so the new model computes what `model` computes.

  Args:
    model: the model `graph` was built from.
    graph: its `depgraph.ChannelGraph`.
    units: iterable of (group index, unit index).
    data: optional inputs for the constant probe (default: random inputs).

  Returns:
    The smaller Keras model (same inputs and outputs).

  Raises:
    ValueError: a blocked group, a channel that is still alive, or a constant that cannot
      be folded exactly (the message names the layer).
  """
  units = sorted(set((int(g), int(u)) for g, u in units))
  model = graph.model  # its Functional graph (nested models inlined: `as_functional`)
  constants = measure_constants(model, _readers(model, graph, units), data)
  for g, u in units:
    problem = unit_problem(model, graph, g, u, constants)
    if problem:
      raise ValueError(f"cannot remove unit {u} of group {g} "
                       f"({', '.join(graph.groups[g].layers)}): {problem}.")
  splits, empties = graph.split_sections(units)
  if empties:
    name, k, owners = empties[0]
    raise ValueError(f"cannot remove units {owners}: section {k} of split {name!r} "
                     f"would have no channels left.")
  cuts = {}
  for g, u in units:
    for (name, role), rows in _unit_cuts(graph, g, u).items():
      cuts.setdefault(name, {}).setdefault(role, set()).update(rows)
  config = copy.deepcopy(graph.config)
  by_name = {c["name"]: c for c in config["layers"]}
  for name, indices in splits.items():
    by_name[name]["config"]["indices_or_sections"] = indices
  new_weights = {}
  for name, cut in cuts.items():
    layer = model.get_layer(name)
    cls = type(layer).__name__
    entry = layer_types.of(layer)
    slicer = _SLICERS.get(entry.channels) if entry else None
    if slicer is _slice_scale:
      slicer = functools.partial(_slice_scale, follows=entry.follows)
    slicer = slicer or blocks.slicer(layer)  # [blocks hook]
    if slicer is None:
      raise ValueError(f"no slicing rule for layer {name!r} ({cls}).")
    w = weight_arrays(layer)
    for role, rows in cut.items():
      if _is_reader(layer, role) and not _rows_unread(layer, role, rows):
        mean, constant = constants[(name, _probe_role(role))]
        const, uniform, _ = channel_constants(mean, constant, rows)
        _fold(layer, w, role, rows, const, uniform)
    layer_config = by_name[name]["config"]
    if slicer is _slice_attention and "in_key" not in cut and _key_is_value(layer):
      cut = dict(cut, in_key=cut.get("in_value", set()))
    slicer(layer_config, w, cut)
    new_weights[name] = w
  for layer_config in config["layers"]:  # shapes changed: build on the first call
    layer_config.pop("build_config", None)
  new_model = _from_config(config, model)
  for layer in new_model.layers:
    if layer.name in new_weights:
      layer.set_weights(list(new_weights[layer.name].values()))
    elif layer.weights:
      layer.set_weights(model.get_layer(layer.name).get_weights())
  verify(model, new_model, graph, units, data)
  return new_model


# ------------------------------------------------------------------ verification
def _flat(outputs):
  return [np.asarray(keras.ops.convert_to_numpy(o), np.float64)
          for o in keras.tree.flatten(outputs)]


VERIFY_SECOND_BATCH = 7


def verify(model, new_model, graph, units, data=None):
  """Raises ShrinkMismatchError if `new_model` (the shrink) differs from `model`.

  Two random probes (`tfprune._liveness.probe_inputs`: the model's input structure,
  integer ids, dicts), or `data` (the caller's inputs), through both models; on a
  difference, a second pass over every tensor names the first layer / op whose kept
  channels differ.
  """
  worst = 0.0
  # Two batch sizes: a rebuilt op that fixed its batch (a replayed reshape) shows at one.
  probes = ([probe_inputs(model, data)] if data is not None else
            [_liveness.probe_inputs(depgraph.as_functional(model), seed, batch=batch)
             for seed, batch in ((1, None), (2, VERIFY_SECOND_BATCH))])
  for x in probes:
    try:
      new_outputs = new_model(x, training=False)
    except Exception as e:  # pylint: disable=broad-except
      raise ShrinkMismatchError(
          f"the shrunk model of {model.name!r} cannot run on inputs the model runs on "
          f"(batch {len(keras.tree.flatten(x)[0])}: {type(e).__name__}: "
          f"{' '.join(str(e).split())[:200]}). Nothing was returned; please report this "
          f"model (or prune without shrink=True).") from e
    worst = max(worst, _difference(model(x, training=False), new_outputs))
  if worst <= VERIFY_RTOL:
    return
  groups = sorted({g for g, _ in units})
  removed = "; ".join(f"group {g} ({', '.join(graph.groups[g].layers)}): "
                      f"{sum(1 for h, _ in units if h == g)} unit(s)" for g in groups)
  where = _first_difference(model, new_model, graph, units, x)
  raise ShrinkMismatchError(
      f"the shrunk model differs from model {model.name!r} (relative difference "
      f"{worst:.3g} > {VERIFY_RTOL:g}): {where or 'the outputs differ'}. Channels removed: "
      f"{removed}. Nothing was returned; please report this model (or prune without "
      f"shrink=True).")


def _difference(outputs, new_outputs):
  """Largest |difference| of two output structures over the reference's largest |value|."""
  worst = 0.0
  for a, b in zip(_flat(outputs), _flat(new_outputs)):
    if a.shape != b.shape:
      worst = np.inf
      break
    worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)) /
                max(float(np.max(np.abs(a), initial=0.0)), 1e-6))
  return worst


def _node_outputs(model):
  """{(op name, node index, tensor index): symbolic tensor} of a Functional model."""
  out = {}
  for op in depgraph.as_functional(model).operations:
    for n, node in enumerate(getattr(op, "_inbound_nodes", [])):
      for k, tensor in enumerate(node.outputs):
        out[(op.name, n, k)] = tensor
  return out


def _first_difference(model, new_model, graph, units, x):
  """'layer NAME (Class): ...' for the first node whose kept channels differ, or None."""
  try:
    keep = graph.removed_ids(units)
    old, new = _node_outputs(model), _node_outputs(new_model)
    order = {name: k for k, name in enumerate(graph._layer_order)}  # pylint: disable=protected-access
    keys = sorted((k for k in keep if k in old and k in new), key=lambda k: order[k[0]])
    old_model = keras.Model(depgraph.as_functional(model).input, [old[k] for k in keys])
    new_probe = keras.Model(depgraph.as_functional(new_model).input,
                            [new[k] for k in keys])
    a_all, b_all = old_model(x, training=False), new_probe(x, training=False)
    for key, a, b in zip(keys, _flat(a_all), _flat(b_all)):
      mask = keep[key]
      if a.shape[-1] == len(mask):
        a = a[..., mask]
      kind = type(model.get_layer(key[0])).__name__ if key[0] in \
          {l.name for l in model.layers} else "op"
      if a.shape != b.shape:
        return (f"{kind} {key[0]!r} gives shape {b.shape[1:]} instead of "
                f"{a.shape[1:]} (its kept channels)")
      diff = float(np.max(np.abs(a - b), initial=0.0))
      if diff > VERIFY_RTOL * max(float(np.max(np.abs(a), initial=0.0)), 1e-6):
        return f"the first difference is at {kind} {key[0]!r} (max |difference| {diff:.3g})"
  except Exception:  # pylint: disable=broad-except
    return None  # the locating pass is best effort; the error itself is raised anyway
  return None


def _from_config(config, model):
  """`model` rebuilt from its edited config. The config was made in this process from the
  live model (not read from a file): its layer classes and `Lambda` functions are the
  user's own code, passed by name (registered or not), and Keras' safe mode, which guards
  loading untrusted files, is off for this call."""
  from keras.src.saving import serialization_lib  # pylint: disable=g-import-not-at-top
  layers = list(model._flatten_layers(include_self=False))  # pylint: disable=protected-access
  objects = {type(l).__name__: type(l) for l in layers}
  objects.update({l.function.__name__: l.function for l in layers
                  if isinstance(l, keras.layers.Lambda) and callable(l.function)
                  and getattr(l.function, "__name__", "<lambda>") != "<lambda>"})
  try:
    with serialization_lib.SafeModeScope(False), \
        keras.saving.custom_object_scope(objects):
      return keras.Model.from_config(config, custom_objects=objects)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot shrink model {model.name!r}: it does not rebuild "
                     f"from its own config ({type(e).__name__}: {e}); the shrink "
                     f"rebuilds the model from its edited config.") from e


def _key_is_value(layer):
  node = layer._inbound_nodes[0]  # pylint: disable=protected-access
  tensors = list(node.arguments.keras_tensors)
  return len(tensors) < 3 or tensors[2] is tensors[1]


def shrink(model, data=None, graph=None):
  """Deletes every channel unit that is constant at all its readers (an exact shrink).

  Args:
    model: a plain (stripped) Functional or Sequential model.
    data: optional probe inputs (default random).
    graph: its `ChannelGraph` if already built.

  Returns:
    (smaller model, report): report["removed"] = {group index: count}, report["kept"] =
    {group index: reason} for groups where a constant unit could not be removed exactly.
  """
  graph = graph or depgraph.ChannelGraph(model)
  model = graph.model  # its Functional graph (nested models inlined: `as_functional`)
  candidates = [(g, u) for g, group in enumerate(graph.groups) if not group.blocked
                for u in range(group.size)]
  constants = measure_constants(model, _readers(model, graph, candidates), data)
  chosen, kept = [], {}
  for g, u in candidates:
    problem = unit_problem(model, graph, g, u, constants)
    if problem is None:
      chosen.append((g, u))
    elif "still alive" not in problem:
      kept.setdefault(g, problem)
  # A group must keep at least one unit, or its layers would have no channels left.
  per_group = {}
  for g, u in chosen:
    per_group.setdefault(g, []).append(u)
  for g, removed in per_group.items():
    if len(removed) == graph.groups[g].size:
      kept.setdefault(g, "every unit is constant: one is kept so the layers stay valid")
      chosen.remove((g, removed[-1]))
  # Nor may a section of a channel-axis split lose every channel.
  while True:
    _, empties = graph.split_sections(chosen)
    if not empties:
      break
    name, k, owners = empties[0]
    g, u = owners[-1]
    kept.setdefault(g, f"section {k} of split {name!r} keeps one channel")
    chosen.remove((g, u))
  removed = {}
  for g, _ in chosen:
    removed[g] = removed.get(g, 0) + 1
  new_model = remove_units(model, graph, chosen, data) if chosen else model
  return new_model, {"removed": removed, "kept": kept}
