"""Weight naming and the slices a channel-graph member owns in a built-in layer.

The lowest layer of `tfprune.structured`: it imports nothing of the package, so the
channel graph (`depgraph`), the custom-block recipes (`blocks`) and the allocation
(`allocate`) can all name weights and cut members the same way.
"""


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


def member_slices(layer, member):
  """[(weight name, axis, indices)] a graph member of a built-in layer owns in `layer`."""
  cls = type(layer).__name__
  idx = member.index if isinstance(member.index, tuple) else (int(member.index),)
  idx = [int(i) for i in idx]
  role = member.role
  mult = int(getattr(layer, "depth_multiplier", 1) or 1)
  rows_dw = [c * mult + j for c in idx for j in range(mult)]
  if cls == "MultiHeadAttention":
    if role == "head":
      return [(f"{p}/kernel", 1, idx) for p in ("query", "key", "value")] + \
             [(f"{p}/bias", 0, idx) for p in ("query", "key", "value")] + \
             [("attention_output/kernel", 0, idx)]
    if role == "out":
      return [("attention_output/kernel", 2, idx), ("attention_output/bias", 0, idx)]
    part = role[len("in_"):]
    return [(f"{part}/kernel", 0, idx)]
  if cls.endswith("Transpose"):
    return [("kernel", -1, idx)] if role == "in" else [("kernel", -2, idx), ("bias", 0, idx)]
  if cls.startswith("Separable"):
    if role == "dw":
      return [("depthwise_kernel", -2, idx), ("pointwise_kernel", -2, rows_dw)]
    return [("pointwise_kernel", -1, idx), ("bias", 0, idx)]
  if cls.startswith("Depthwise"):
    return [("kernel", -2, idx), ("bias", 0, rows_dw)]
  if cls == "BatchNormalization":
    return [("gamma", 0, idx), ("beta", 0, idx)]
  if cls == "Embedding":
    return [("embeddings", -1, idx)]
  if role == "in":
    return [("kernel", -2, idx)]
  return [("kernel", -1, idx), ("bias", 0, idx)]
