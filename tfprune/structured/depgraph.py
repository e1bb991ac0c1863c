"""Channel dependency graph of a Keras 3 Functional model.

Structured pruning removes whole channels (Dense units, conv filters, attention heads).
A channel cannot be removed from one layer alone: the layers that read it, the
normalisation that scales it, and every layer tied to it by a residual `Add` or a
squeeze-excite `Multiply` must lose the same channel. This module finds those couplings
(the idea of DepGraph: Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023;
see docs/structured.md), from the model's public config only (`model.get_config()`,
whose `inbound_nodes` are the graph, op nodes such as `x + 3.0` included).

Every channel of every tensor gets an integer id; layers that pass channels through
(BatchNormalization, activations, pooling, Dropout, depthwise convs, element-wise merges,
element-wise `keras.ops` nodes with scalar constants) tie the ids of their inputs and
outputs together (union-find); `Concatenate` lays ids side by side; `Flatten` (and a
Reshape that flattens) repeats them once per spatial position, so a Dense after a Flatten
reads a channel through a block of rows. A connected set of ids is one removable *unit*;
units that touch the same layers form a `Group`. Ids that reach a model input or output,
or a layer this module cannot slice, are *blocked*: the report names the layer and why,
and those units are never removed.

Conservative by default: a layer or op node it does not understand (a `Lambda`, a nested
model, `ops.transpose`, ...) blocks every channel it reads and makes, keyword tensors
included; so does a shared layer (called more than once). Split and slice nodes are read
exactly: `ops.split` on the channel axis (equal or uneven sections) gives each output its
range of the input's channels and is rewritten with the new section sizes when channels go
(`split_sections`); a split on another axis, `x[:, 1:]`, `ops.slice` off the channel axis
and `ops.concatenate` follow their input; a slice of the channel axis (`x[..., :k]`) blocks
the channels it reads. Every tensor's channel count is checked against its shape, so a
node that this module mis-reads blocks its channels instead of shifting them.

Inside custom blocks (keras_hub transformer layers) the FFN units and attention heads
are units of their own, recognised by `tfprune.structured.blocks`; the block's hidden
channels are blocked. The slicing (building the smaller model) is
`tfprune.structured.slicing`.
"""
import dataclasses

import keras
import numpy as np

from tfprune import _layers
from tfprune import layer_types
from tfprune.structured import blocks

# Element-wise `keras.ops` functions recorded as op nodes (module keras.src.ops.*).
_ELEMENTWISE_OPS = (
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Swish", "HardSwish",
    "Gelu", "Tanh", "Elu", "Selu", "Softplus", "Negative", "Abs", "Square", "Sqrt", "Exp",
    "Clip", "LeakyRelu", "Mish", "Log", "Reciprocal")


@dataclasses.dataclass(frozen=True)
class Member:
  """One place a unit lives: `layer`'s weights along `role` at `index`.

  Roles: "out" (an output channel the layer produces: kernel column, bias, filters),
  "in" (input rows the layer reads; `index` is a tuple of kernel rows, several after a
  Flatten), "bn" (per-channel parameters of a normalisation), "dw" (a depthwise channel:
  the kernel's input slice and its `depth_multiplier` outputs), "head" (an attention
  head of a MultiHeadAttention).
  """
  layer: str
  role: str
  index: object


@dataclasses.dataclass
class Group:
  """Units that touch the same layers, each removable on its own.

  Attributes:
    units: one list of `Member`s per removable unit (channel / head).
    layers: names of the layers the group touches, in model order.
    producers: the layers whose outputs ("out") or heads the units are.
    blocked: None if prunable, else the reason (names the layer).
    merges: names of the merge layers / op nodes (residual `Add`, `Multiply`, ...) that
      tie the units' channels of different producers together.
  """
  units: list
  layers: list
  producers: list
  blocked: object = None
  merges: list = dataclasses.field(default_factory=list)
  roots: list = dataclasses.field(default_factory=list)  # channel-id root per unit

  @property
  def size(self):
    return len(self.units)


class _Opaque(Exception):
  """Raised by a node rule: the node's channels are blocked, with this reason."""


class _UnionFind:
  def __init__(self):
    self.parent = []
    self.blocked = {}

  def new(self, count, blocked=None):
    start = len(self.parent)
    self.parent.extend(range(start, start + count))
    ids = np.arange(start, start + count)
    if blocked:
      for i in ids:
        self.blocked.setdefault(int(i), blocked)
    return ids

  def find(self, i):
    i = int(i)
    root = i
    while self.parent[root] != root:
      root = self.parent[root]
    while self.parent[i] != root:
      self.parent[i], i = root, self.parent[i]
    return root

  def union(self, a, b):
    ra, rb = self.find(a), self.find(b)
    if ra != rb:
      self.parent[rb] = ra
      if rb in self.blocked:
        self.blocked.setdefault(ra, self.blocked[rb])

  def block(self, ids, reason):
    for i in np.asarray(ids).ravel():
      self.blocked.setdefault(self.find(i), reason)

  def reason(self, i):
    return self.blocked.get(self.find(i))


def _tensors(obj, path=()):
  """(path, keras-tensor config) for every symbolic tensor in a serialized call arg."""
  if isinstance(obj, dict):
    if obj.get("class_name") == "__keras_tensor__":
      yield path, obj["config"]
      return
    for key, value in obj.items():
      yield from _tensors(value, path + (key,))
  elif isinstance(obj, (list, tuple)):
    for i, value in enumerate(obj):
      yield from _tensors(value, path + (i,))


def node_tensors(node):
  """[(path, keras-tensor config)] of every symbolic tensor a serialized inbound node
  passes (`config["layers"][i]["inbound_nodes"][k]`); `path` is the position or the
  keyword ("args", 0, ...) / ("kwargs", "query", ...) inside the node's arguments."""
  return list(_tensors(node))


is_prune_wrapper = _layers.is_prune_wrapper


def _scalar_args_only(node):
  """True if every non-tensor argument of an op node is a Python scalar or None."""

  def ok(obj):
    if isinstance(obj, dict):
      if obj.get("class_name") == "__keras_tensor__":
        return True
      return all(ok(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
      return all(ok(v) for v in obj)
    return obj is None or isinstance(obj, (int, float, bool, str))

  return ok(node.get("args", [])) and ok(node.get("kwargs", {}))


class ChannelGraph:
  """The channel couplings of a built Functional (or Sequential) Keras model.

  Args:
    model: a built `keras.Model` made of layers (and op nodes); channels-last.

  Attributes:
    groups: every `Group`, prunable and blocked.
    notes: `{layer name: reason}` for each layer that ends or blocks a group.
  """

  def __init__(self, model):
    if not isinstance(model, keras.Model) or not model.built:
      raise ValueError(f"ChannelGraph needs a built keras.Model, got "
                       f"{type(model).__name__}.")
    model = as_functional(model)
    try:
      config = model.get_config()
    except NotImplementedError as e:
      raise ValueError(f"ChannelGraph needs a Functional or Sequential model; "
                       f"{model.name!r} ({type(model).__name__}) has no graph config.") from e
    if "layers" not in config:
      raise ValueError(f"ChannelGraph needs a Functional or Sequential model; "
                       f"{model.name!r} is subclassed ({type(model).__name__}).")
    self.model = model
    self.config = config
    self.notes = {}
    self._uf = _UnionFind()
    self._tensor_ids = {}
    self._members = []  # (channel id, Member)
    self._merge_ids = []  # (merge layer name, channel id)
    self._splits = {}  # split op name -> [ids of each section] (channel-axis splits)
    self._layer_order = [c["name"] for c in config["layers"]]
    self._ops = {op.name: op for op in model.operations}
    self._shapes = {}  # (layer, node, tensor) -> shape, as its readers see it
    self._calls = {c["name"]: c["inbound_nodes"] for c in config["layers"]}
    for layer_config in config["layers"]:
      for node in layer_config["inbound_nodes"]:
        for _, tensor in _tensors(node):
          self._shapes[tuple(tensor["keras_history"])] = tensor.get("shape")
    for layer_config in config["layers"]:
      if layer_config["class_name"] == "InputLayer":
        self._visit(layer_config, 0, {})
      for node_index, node in enumerate(layer_config["inbound_nodes"]):
        self._visit(layer_config, node_index, node)
    for name, node_index, tensor_index in _output_triples(config["output_layers"]):
      ids = self._ids((name, node_index, tensor_index))
      self._uf.block(ids, f"reaches model output {name!r}")
    self.groups = self._make_groups()

  # ----------------------------------------------------------------- building
  def _block(self, layer, ids, reason):
    self.notes.setdefault(layer, reason)
    self._uf.block(ids, f"{layer}: {reason}")

  def _ids(self, key, size=None):
    if key not in self._tensor_ids:
      # A tensor this module gave no channels to (e.g. a second output): opaque.
      ids = self._uf.new(int(size or 1), blocked=f"{key[0]}: output {key[2]} not analysed")
      self._tensor_ids[key] = ids
    return self._tensor_ids[key]

  def _member(self, ids, layer, role, indices=None):
    ids = np.asarray(ids)
    indices = range(len(ids)) if indices is None else indices
    for i, index in zip(ids, indices):
      self._members.append((int(i), Member(layer, role, index)))

  def _visit(self, layer_config, node_index, node):
    name = layer_config["name"]
    cls = layer_config["class_name"]
    module = layer_config.get("module") or ""
    inputs, read = [], []
    for path, tensor in _tensors(node):
      key = tuple(tensor["keras_history"])
      shape = tensor.get("shape") or [None]
      ids = self._ids(key, shape[-1])
      read.append(ids)
      if path[0] == "kwargs" and path[1] not in ("query", "value", "key") and \
          not module.startswith("keras.src.ops"):
        continue  # a layer's masks and other keyword tensors carry no channels
      inputs.append((path, shape, ids))
    layer = self._ops.get(name)
    if is_prune_wrapper(layer):  # a pruned model: the rules are the inner layer's
      layer_config = layer_config["config"]["layer"]
      cls, module, layer = layer_config["class_name"], "", layer.layer
    if cls == "InputLayer":
      shape = layer_config["config"].get("batch_shape") or [None]
      size = shape[-1] if shape[-1] is not None else 1
      self._tensor_ids[(name, node_index, 0)] = self._uf.new(
          int(size), blocked=f"model input {name!r}")
      return
    try:
      calls = len(self._calls.get(name, ()))
      if calls > 1:
        raise _Opaque(f"shared: {cls} called {calls} times")
      if module.startswith("keras.src.ops"):
        out = self._op_node(name, cls, layer_config, node, inputs)
      else:
        out = self._layer_node(name, cls, layer, layer_config, inputs)
      if out is None:
        raise _Opaque(f"{cls} is not understood by the channel graph")
      outs = out if isinstance(out, list) else [out]
      for k, ids in enumerate(outs):
        size = self._size((name, node_index, k))
        if size is not None and size != len(ids):
          raise _Opaque(f"{cls} output {k} has {size} channels, the graph counted "
                        f"{len(ids)}")
    except _Opaque as why:
      for ids in read:
        self._block(name, ids, str(why))
      outs = [self._uf.new(int(self._size((name, node_index, k)) or 1),
                           blocked=f"{name}: {why}")
              for k in range(self._output_count(name, node_index))]
      self.notes.setdefault(name, str(why))
    for k, ids in enumerate(outs):
      self._tensor_ids[(name, node_index, k)] = ids

  def _size(self, key):
    """A tensor's channel count as its readers (or the layer's output) see it."""
    shape = self._shapes.get(key)
    if shape is None and key[1] == 0:
      shapes = _output_shapes(self._ops.get(key[0]))
      shape = shapes[key[2]] if shapes and key[2] < len(shapes) else None
    return int(shape[-1]) if shape and shape[-1] is not None else None

  def _output_count(self, name, node_index):
    read = [k[2] for k in self._shapes if k[0] == name and k[1] == node_index]
    shapes = _output_shapes(self._ops.get(name)) if node_index == 0 else None
    return max([len(shapes or [None])] + [k + 1 for k in read])

  def _tie(self, name, inputs):
    """Element-wise merge: ties the inputs' channels; returns the output's ids."""
    sizes = {len(ids) for _, _, ids in inputs}
    if len(sizes) != 1:
      big = max(inputs, key=lambda t: len(t[2]))[2]
      for _, _, ids in inputs:
        self._block(name, ids, "merges tensors of different channel counts (broadcast)")
      return big
    first = inputs[0][2]
    for _, _, ids in inputs[1:]:
      for a, b in zip(first, ids):
        self._uf.union(a, b)
    if len(inputs) > 1:
      self._merge_ids += [(name, int(i)) for i in first]
    return first

  def _op_node(self, name, cls, layer_config, node, inputs):
    if cls in _ELEMENTWISE_OPS and _scalar_args_only(node) and inputs:
      return self._tie(name, inputs)
    if not inputs:
      return None
    config = layer_config.get("config", {})
    rank = len(inputs[0][1])
    if cls == "Split" and len(inputs) == 1:
      return self._split(name, config, inputs[0])
    if cls == "GetItem" and len(inputs) == 1:
      return _get_item(node, inputs[0])
    if cls == "Slice" and len(inputs) == 1:
      args = node.get("args", [])
      start = list(args[1]) if len(args) > 1 else None
      shape, channels = list(config.get("shape") or []), inputs[0][1][-1]
      if not start or len(start) != rank or len(shape) != rank:
        return None
      if start[-1] == 0 and shape[-1] in (-1, channels):
        return inputs[0][2]
      raise _Opaque("slices the channel axis (ops.slice): its channels are not removed")
    if cls == "Concatenate":
      axis = config.get("axis", 0)
      if axis in (-1, rank - 1):
        return np.concatenate([ids for _, _, ids in inputs])
      return self._tie(name, inputs)
    return None

  def _split(self, name, config, tensor):
    """`ops.split`: channel-axis sections become channel ranges; other axes follow."""
    _, shape, ids = tensor
    rank, sections = len(shape), config.get("indices_or_sections")
    axis = config.get("axis", 0)
    if isinstance(sections, int):
      count = sections
    elif isinstance(sections, (list, tuple)):
      count = len(sections) + 1
    else:
      return None
    if axis not in (-1, rank - 1):
      return [ids] * count
    channels = len(ids)
    if isinstance(sections, int):
      if channels % sections:
        return None
      bounds = [channels // sections * k for k in range(sections + 1)]
    else:
      bounds = [0] + [i + channels if i < 0 else min(i, channels)
                      for i in sections] + [channels]
    parts = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    self._splits[name] = parts
    return parts

  def _layer_node(self, name, cls, layer, layer_config, inputs):
    """A layer's output channel ids, by its `layer_types` channel kind."""
    config = layer_config["config"]
    if getattr(layer, "data_format", "channels_last") not in (None, "channels_last"):
      raise _Opaque(f"{cls} is channels_first")
    main = inputs[0][2] if inputs else None
    entry = layer_types.get(cls)
    if entry is None or entry.channels is None:
      # [blocks hook] a custom block's FFN units / heads (tfprune/structured/blocks.py)
      out, why = blocks.visit(self, name, layer, inputs)
      if why:
        raise _Opaque(why)
      return out
    problem = entry.channel_problem(config, None if main is None else len(main))
    if problem:
      raise _Opaque(problem)
    kind = entry.channels
    if kind == layer_types.PASS:
      return main
    if kind == layer_types.MERGE:
      return self._tie(name, inputs)
    if kind == layer_types.SCALE:
      axis = config.get("axis", -1)
      if axis not in (-1, len(inputs[0][1]) - 1, [-1]):
        return None
      self._member(main, name, "bn")
      return main
    if kind == layer_types.COUPLED:
      # Normalising over the channel axis couples every channel: removing one changes the
      # others' outputs, so these channels are never removed (heads / FFN units still are).
      self._block(name, main, "normalises over the channel axis")
      return main
    if kind == layer_types.CONCAT:
      axis = config.get("axis", -1)
      rank = len(inputs[0][1])
      if axis in (-1, rank - 1):
        return np.concatenate([ids for _, _, ids in inputs])
      return self._tie(name, inputs)
    if kind == layer_types.FLATTEN:
      if None in inputs[0][1][1:]:
        raise _Opaque("Flatten of a tensor with a dynamic (None) dimension")
      spatial = int(np.prod([d for d in inputs[0][1][1:-1]] or [1]))
      return np.tile(main, spatial)
    if kind == layer_types.RESHAPE:
      target = list(config["target_shape"])
      in_shape = inputs[0][1]
      if target and target[-1] == in_shape[-1]:
        return main
      if len(target) == 1 and None not in in_shape[1:]:
        return np.tile(main, int(np.prod(in_shape[1:-1] or [1])))
      raise _Opaque(f"Reshape to {tuple(target)} mixes the channel axis")
    if kind in (layer_types.DENSE, layer_types.CONV, layer_types.TRANSPOSE):
      self._member(main, name, "in")
      out = self._uf.new(int(config.get("units") or config.get("filters")))
      self._member(out, name, "out")
      return out
    if kind == layer_types.DEPTHWISE:
      mult = int(config.get("depth_multiplier", 1))
      self._member(main, name, "dw")
      return np.repeat(main, mult)
    if kind == layer_types.SEPARABLE:
      self._member(main, name, "dw")
      out = self._uf.new(int(config["filters"]))
      self._member(out, name, "out")
      return out
    if kind == layer_types.EMBEDDING:
      out = self._uf.new(int(config["output_dim"]))
      self._member(out, name, "out")
      return out
    if kind == layer_types.EINSUM:
      return self._einsum(name, layer, main)
    if kind == layer_types.ATTENTION:
      return self._attention(name, layer, inputs)
    return None

  def _einsum(self, name, layer, main):
    """An EinsumDense that acts as a Dense on the last axis ("...c,cd->...d")."""
    equation = layer.equation.replace(" ", "")
    lhs, out_spec = equation.split("->")
    x_spec, k_spec = lhs.split(",")
    if (len(k_spec) == 2 and x_spec[-1] == k_spec[0] and out_spec[-1] == k_spec[1]
        and x_spec[:-1] == out_spec[:-1]):
      self._member(main, name, "in")
      out = self._uf.new(int(layer.kernel.shape[1]))
      self._member(out, name, "out")
      return out
    return None

  def _attention(self, name, layer, inputs):
    """MultiHeadAttention: reads query/value/key channels; heads removable as a whole."""
    if getattr(layer, "use_gate", False) or getattr(layer, "_return_attention_scores", False):
      return None
    by_role = {}
    for path, _, ids in inputs:
      role = ("query", "value", "key")[path[1]] if path[0] == "args" and path[1] < 3 \
          else path[1]
      by_role.setdefault(role, ids)
    query = by_role.get("query")
    value = by_role.get("value", query)
    key = by_role.get("key", value)
    if query is None:
      return None
    self._member(query, name, "in_query")
    self._member(value, name, "in_value")
    if key is not value:
      self._member(key, name, "in_key")
    self._member(self._uf.new(int(layer.num_heads)), name, "head")
    out = self._uf.new(int(layer.output_dense.kernel.shape[-1]))
    self._member(out, name, "out")
    return out

  # ------------------------------------------------------------------ groups
  def _make_groups(self):
    units = {}
    for i, member in self._members:
      units.setdefault(self._uf.find(i), []).append(member)
    order = {n: k for k, n in enumerate(self._layer_order)}
    by_signature = {}
    for root, members in units.items():
      members = _merge_rows(members)
      signature = tuple(sorted({(m.layer, m.role) for m in members}))
      by_signature.setdefault(signature, []).append((root, members))
    merges_of = {}
    for name, i in self._merge_ids:
      merges_of.setdefault(self._uf.find(i), set()).add(name)
    groups = []
    for signature, entries in by_signature.items():
      layers = sorted({l for l, _ in signature}, key=order.get)
      producers = sorted({l for l, r in signature
                          if r in ("out", "head") or blocks.is_block_role(r)},  # [blocks hook]
                         key=order.get)
      reasons = [self._uf.reason(root) for root, _ in entries]
      blocked = next((r for r in reasons if r), None)
      if not producers and blocked is None:
        blocked = "no layer produces these channels"
      entries.sort(key=lambda e: _unit_key(e[1], order))
      merges = sorted({n for root, _ in entries for n in merges_of.get(root, ())},
                      key=lambda n: order.get(n, 0))
      groups.append(Group(units=[m for _, m in entries], layers=layers,
                          producers=producers, blocked=blocked, merges=merges,
                          roots=[root for root, _ in entries]))
    groups.sort(key=lambda g: min(order[l] for l in g.layers))
    return groups

  def removed_ids(self, units):
    """{tensor key: keep mask over its channels} once `units` ((group, unit) pairs) go."""
    roots = {self.groups[g].roots[u] for g, u in units}
    return {key: np.array([self._uf.find(i) not in roots for i in ids], bool)
            for key, ids in self._tensor_ids.items()}

  def split_sections(self, units):
    """The channel-axis splits once `units` go: ({split name: new indices}, empties).

    `indices` is the list of section boundaries for `ops.split` (uneven sections);
    `empties` lists (split name, section, [(group, unit), ...]) for each section that
    would lose every channel (those units cannot all go).
    """
    roots = {self.groups[g].roots[u]: (g, u) for g, u in units}
    rewrites, empties = {}, []
    for name, parts in self._splits.items():
      kept = [[i for i in part if self._uf.find(i) not in roots] for part in parts]
      if all(len(k) == len(p) for k, p in zip(kept, parts)):
        continue
      for k, (part, left) in enumerate(zip(parts, kept)):
        if part.size and not left:
          empties.append((name, k, sorted({roots[self._uf.find(i)] for i in part})))
      rewrites[name] = [int(b) for b in np.cumsum([len(k) for k in kept])[:-1]]
    return rewrites, empties

  @property
  def prunable_groups(self):
    return [g for g in self.groups if g.blocked is None]

  def main_blockers(self, top=3):
    """The reasons that block the most channels, widest first (one line)."""
    width = {}
    for g in self.groups:
      if g.blocked:
        width[g.blocked] = width.get(g.blocked, 0) + g.size
    ranked = sorted(width, key=lambda r: -width[r])[:top]
    if ranked:
      return "; ".join(f"{r} ({width[r]} channels)" for r in ranked)
    return "; ".join(f"{n}: {why[:160]}" for n, why in list(self.notes.items())[:top]) or \
        "no group is blocked"

  def report(self):
    """Text: every group (size, layers, blocked reason) and the layers that end groups."""
    lines = [f"{'group':<6}{'units':>6}  {'status':<9}layers"]
    for k, g in enumerate(self.groups):
      status = "prunable" if g.blocked is None else "blocked"
      lines.append(f"{k:<6}{g.size:>6}  {status:<9}{', '.join(g.layers)}")
      if g.blocked:
        lines.append(f"{'':<21}reason: {g.blocked}")
    if self.notes:
      lines.append("layers that end a group:")
      lines += [f"  {name}: {why}" for name, why in self.notes.items()]
    return "\n".join(lines)


def _merge_rows(members):
  """One "in" member per consumer, listing every kernel row of the unit (Flatten)."""
  rows, out = {}, []
  for m in members:
    if m.role.startswith("in"):
      rows.setdefault((m.layer, m.role), []).append(m.index)
    else:
      out.append(m)
  out += [Member(layer, role, tuple(sorted(idx))) for (layer, role), idx in rows.items()]
  return out


def _unit_key(members, order):
  producer = [m for m in members if m.role in ("out", "head", "dw", "bn")]
  m = min(producer or members, key=lambda m: (order[m.layer], str(m.index)))
  index = m.index if isinstance(m.index, (int, np.integer)) else min(m.index or (0,))
  return order[m.layer], int(index)


def _output_triples(spec):
  """Every (layer, node, tensor) triple of `output_layers` (one, a list, a dict, nested)."""
  if isinstance(spec, dict):
    return [t for value in spec.values() for t in _output_triples(value)]
  if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[0], str) \
      and isinstance(spec[1], int) and isinstance(spec[2], int):
    return [tuple(spec)]
  if isinstance(spec, (list, tuple)):
    return [t for value in spec for t in _output_triples(value)]
  return []


def _output_shapes(layer):
  """Shapes of every output of `layer`'s first call, or None."""
  try:
    out = layer.output
  except (AttributeError, ValueError):
    return None
  outs = out if isinstance(out, (list, tuple)) else [out]
  if not all(hasattr(t, "shape") for t in outs):
    return None
  return [list(t.shape) for t in outs]


def as_functional(model):
  """The Functional graph of `model` over the same layers: a Sequential model's, nested
  Functional / Sequential models inlined (`_inline`); other models as is."""
  if isinstance(model, keras.Sequential):
    functional = getattr(model, "_functional", None)
    if functional is not None:
      return functional
    return keras.Model(model.inputs, model.outputs, name=model.name)
  if any(_graph_of(l) is not None for l in getattr(model, "layers", ())):
    return _inline(model)
  return model


def _graph_of(layer):
  """The Functional graph of a nested Functional / Sequential model layer, else None."""
  if isinstance(layer, keras.Sequential):
    return getattr(layer, "_functional", None)
  if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):
    return layer
  return None


def _inline(model):
  """`model` with its nested graph models (a keras_hub task's backbone, a classifier
  around a `keras.applications` net) replaced by their layers, called on the outer
  tensors: the same layers and weights in one flat graph, which the channel graph reads
  and `slicing.remove_units` rebuilds (a flat Functional model). `model` itself if the
  layer names clash."""
  def run(graph, inputs):
    def operation(op):
      inner = _graph_of(op)
      if inner is None:
        return op
      return lambda *args, **kwargs: run(inner, args[0] if len(args) == 1 else list(args))
    return graph._run_through_graph(inputs, operation_fn=operation)  # pylint: disable=protected-access
  try:
    return keras.Model(model.input, run(model, model.input), name=model.name)
  except ValueError:  # (two layers of one name in the nested models)
    return model


def _get_item(node, tensor):
  """`x[key]`: follows its input unless the key slices or moves the channel (last) axis."""
  args = node.get("args", [])
  if len(args) != 2:
    return None
  key = list(args[1]) if isinstance(args[1], (list, tuple)) else [args[1]]
  _, shape, ids = tensor
  rank, channels = len(shape), len(ids)

  def kind(k):
    if k is None:
      return "new"
    if isinstance(k, dict) and k.get("class_name") == "__ellipsis__":
      return "ellipsis"
    if isinstance(k, dict) and k.get("class_name") == "__slice__":
      c = k.get("config", {})
      full = (c.get("start") in (None, 0) and c.get("step") in (None, 1)
              and (c.get("stop") is None or (isinstance(c.get("stop"), int)
                                             and c["stop"] >= channels)))
      return "full" if full else "slice"
    if isinstance(k, int) and not isinstance(k, bool):
      return "int"
    return "other"

  kinds = [kind(k) for k in key]
  if "other" in kinds or kinds.count("ellipsis") > 1:
    return None
  if "ellipsis" in kinds:
    tail = kinds[kinds.index("ellipsis") + 1:]
  else:
    tail = kinds if len([k for k in kinds if k != "new"]) >= rank else []
  axes = [i for i, k in enumerate(tail) if k != "new"]
  if not axes:
    if "new" in tail:
      raise _Opaque("x[...] adds an axis after the channel axis")
    return ids
  last = axes[-1]
  if "new" in tail[last + 1:]:
    raise _Opaque("x[...] adds an axis after the channel axis")
  if tail[last] == "full":
    return ids
  raise _Opaque("slices the channel axis (x[..., a:b]): its channels are not removed")


blocks.register_graph(ChannelGraph)  # a traced custom block gets a graph of its own
