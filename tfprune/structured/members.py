"""Weight naming and the weight slices every channel unit owns.

The lowest layer of `tfprune.structured`: it imports nothing of the package (only
`tfprune._layers` and the layer taxonomy, `tfprune.layer_types`), so the channel graph
(`depgraph`), the custom-block recipes (`blocks`), the importance criteria
(`importance`), the costs and the selection all name weights and cut members the same
way:

  * `weight_name(layer, variable)`, `weights_by_name(layer)`, `is_kernel(name)`;
  * `member_slices(layer, member)`: the (weight, axis, indices) a graph member owns in
    its layer (a built-in layer by its `layer_types` kind; a unit inside a custom block
    by the block's recipe, which `blocks` registers here when it loads);
  * `unit_slices(model, graph)`: the slices of every prunable unit in every member layer
    (kernel columns of producers, kernel rows of readers, depthwise slices, heads).
"""
from tfprune import _layers
from tfprune import layer_types

KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings",
            "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel")


def is_kernel(name):
  """True for a kernel's weight name (a custom block's "sublayer/kernel" included)."""
  return name in KERNELS or name.endswith("/kernel")


def weight_name(layer, variable):
  """`variable`'s name inside `layer` ("kernel", "query/kernel", ...).

  A variable whose path is not under the layer's (a sublayer made in `__init__` of a
  layer tfprune cloned) is named by its last path component, or by its whole path when
  that component is ambiguous in the layer (two sublayers' "kernel").
  """
  prefix = layer.path + "/"
  if variable.path.startswith(prefix):
    return variable.path[len(prefix):]
  last = variable.path.split("/")[-1]
  if sum(v.path.split("/")[-1] == last for v in layer.weights) > 1:
    return variable.path
  return last


# The custom-block slicer, registered by `blocks` when it loads
# (`register_block_slicer`): `blocks` imports this module, not back, and a block member
# only exists in a graph whose module has loaded `blocks`.
_BLOCK_SLICER = [None]


def register_block_slicer(is_block_role, slices):
  """Called once by `tfprune.structured.blocks` with its role test and its slicer."""
  _BLOCK_SLICER[0] = (is_block_role, slices)


def weights_by_name(layer):
  """{"kernel": variable, "query/kernel": variable, ...} of `layer` (of its inner layer
  for a PruneWrapper), in `layer.weights` order."""
  layer = _layers.inner_layer(layer)
  return {weight_name(layer, v): v for v in layer.weights}


def member_slices(layer, member):
  """[(weight name, axis, indices)] the graph member `member` owns in `layer` (a custom
  block's unit: the block's recipe; a built-in layer's: by its channel kind)."""
  if _BLOCK_SLICER[0] is not None and _BLOCK_SLICER[0][0](member.role):
    return _BLOCK_SLICER[0][1](layer, member)
  return _builtin_slices(layer, member)


def unit_slices(model, graph):
  """{(group, unit): [(layer name, weight name, axis, indices)]} for prunable groups."""
  ops = {op.name: op for op in model.operations}
  out = {}
  for g, group in enumerate(graph.groups):
    if group.blocked:
      continue
    for u, unit in enumerate(group.units):
      slices = []
      for member in unit:
        layer = _layers.inner_layer(ops[member.layer])
        names = weights_by_name(layer)
        slices += [(member.layer, n, a, i) for n, a, i in member_slices(layer, member)
                   if n in names]
      out[(g, u)] = slices
  return out


def _builtin_slices(layer, member):
  """[(weight name, axis, indices)] a graph member of a built-in layer owns in `layer`
  (by its `tfprune.layer_types` channel kind)."""
  kind = getattr(layer_types.of(layer), "channels", None)
  idx = member.index if isinstance(member.index, tuple) else (int(member.index),)
  idx = [int(i) for i in idx]
  role = member.role
  mult = int(getattr(layer, "depth_multiplier", 1) or 1)
  rows_dw = [c * mult + j for c in idx for j in range(mult)]
  if kind == layer_types.ATTENTION:
    if role == "head":
      return [(f"{p}/kernel", 1, idx) for p in ("query", "key", "value")] + \
             [(f"{p}/bias", 0, idx) for p in ("query", "key", "value")] + \
             [("attention_output/kernel", 0, idx)]
    if role == "out":
      return [("attention_output/kernel", 2, idx), ("attention_output/bias", 0, idx)]
    part = role[len("in_"):]
    return [(f"{part}/kernel", 0, idx)]
  if kind == layer_types.TRANSPOSE:
    return [("kernel", -1, idx)] if role == "in" else [("kernel", -2, idx), ("bias", 0, idx)]
  if kind == layer_types.SEPARABLE:
    if role == "dw":
      return [("depthwise_kernel", -2, idx), ("pointwise_kernel", -2, rows_dw)]
    return [("pointwise_kernel", -1, idx), ("bias", 0, idx)]
  if kind == layer_types.DEPTHWISE:
    return [("kernel", -2, idx), ("bias", 0, rows_dw)]
  if kind == layer_types.SCALE:
    return [("gamma", 0, idx), ("beta", 0, idx)]
  if kind == layer_types.EMBEDDING:
    return [("embeddings", -1, idx)]
  if role == "in":
    return [("kernel", -2, idx)]
  return [("kernel", -1, idx), ("bias", 0, idx)]
