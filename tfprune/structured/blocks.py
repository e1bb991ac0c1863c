"""Structured units inside custom blocks: FFN units and attention heads of transformer layers.

A custom layer (keras_hub's `TransformerEncoder`, `TransformerDecoder`, Gemma / Llama /
Qwen decoder blocks, ...) is one node of the model's graph, so `depgraph.ChannelGraph`
cannot follow channels through it. Its *hidden* channels stay blocked (they pass
LayerNorm / RMSNorm and residuals, which couple every channel), but the units that live
wholly inside it can be removed: the FFN's intermediate units and the attention heads.

This module recognises them by the block's sublayers (duck-typed: attribute names,
kernel shapes and `EinsumDense` equations; nothing of keras_hub is imported). Each
recognised structure is a `Recipe`: the weight slices one unit owns in the block (a
producer's kernel column and bias, a reader's kernel row, a head's slices) and, where the
block's config can express fewer units, how to rebuild it smaller:

* FFN (`_feedforward_intermediate_dense` -> `_feedforward_output_dense`, with
  `_feedforward_gate_dense` in gated MLPs; ViT's `mlp.dense_1` -> `mlp.dense_2`; Gemma's `gating_ffw` / `gating_ffw_2` ->
  `ffw_linear`): unit j is column j of the up (and gate) kernels and their biases, and row
  j of the down kernel. Shrinkable when the config has `intermediate_dim` (a multiple of
  the unit count: Gemma's is twice it).
* A Keras `MultiHeadAttention` sublayer: unit h is head h of the query / key / value
  projections and rows h of the output projection. Masked only: the blocks that hold
  one derive its `key_dim` from `hidden_dim // num_heads` in `build()`, so a block
  rebuilt with fewer heads would compute other heads.
* Grouped-query attention (a sublayer with `num_query_heads`, `num_key_value_heads` and
  query / key / value / output `EinsumDense`s; query head n reads key/value head
  n // (num_query_heads / num_key_value_heads)). The rule keeps the groups equal, so the
  smaller block computes the same function: with one key/value head (multi-query) a unit is
  one query head; otherwise a unit is one key/value head with all the query heads of its
  group (with as many key/value heads as query heads, one head). Shrinkable when the
  config has `num_query_heads`, `num_key_value_heads` and an explicit `head_dim` (and no
  `query_head_dim_normalize=False`, which scales by `hidden_dim // num_query_heads`).

* Blocks held in a Python list (keras_hub's `ViTEncoder.encoder_layers`): each block's
  recipes, renamed into the holder (`_nested`). Masked only: the holder builds all of
  them from one config.

A custom layer with none of these names is traced (`_traced`): its `call` on a symbolic
input records a Functional graph over its sublayers, whose own `ChannelGraph` groups
become units of the layer (masked only: no config argument is known to set their width).

A unit is removed from the model (`slicing.remove_units`) only when its reader rows are
zero (what `scope="structured"` masks do); a unit that cannot be shrunk stays, zeroed, and
`tfprune.shrink_model` (`strip(shrink=True)`) warns, naming the block and why. Each
removal is verified by `slicing.remove_units` (the smaller model against the masked one).
`layer_cost` gives `costs.MacModel` a block's MACs per unit. Custom layers with
sublayers but no recognised structure are blocked with the reason. See
docs/structured.md, "Units inside custom blocks".
"""
import dataclasses
import weakref

import numpy as np

from tfprune.structured import members

# The channel graph class, registered by `depgraph` when it loads (`register_graph`): a
# traced block gets a graph of its own, and `depgraph` imports this module, not back.
_GRAPH_CLASS = [None]


def register_graph(graph_class):
  """Called once by `tfprune.structured.depgraph` with `ChannelGraph`."""
  _GRAPH_CLASS[0] = graph_class

ROLE = "block:"  # Member roles of units inside a block: "block:<recipe key>"


@dataclasses.dataclass
class Recipe:
  """One kind of removable unit inside a block.

  Attributes:
    key: the recipe's name in the block ("ffn", "heads:self_attention_layer").
    kind: words for reports ("FFN units", "attention heads").
    size: the number of units.
    parts: [(weight name, axis, per_unit)]: `per_unit[u]` lists the indices along
      `axis` that unit u owns (a grouped-attention unit owns several query heads).
    readers: weight names whose slices read the unit (zero there: nothing reads it).
    resize: None, or {config key: factor}: the config value becomes kept units times
      the factor (e.g. {"intermediate_dim": 2} for Gemma); a callable factor maps the
      kept units to the new value (grouped heads).
    fixed: why the block cannot be rebuilt with fewer of these units, or None.
  """
  key: str
  kind: str
  size: int
  parts: list
  readers: list
  resize: dict = None
  fixed: str = None

  @property
  def role(self):
    return ROLE + self.key

  def slices(self, units):
    """[(weight name, axis, indices)] owned by `units` (unit indices)."""
    out = []
    for weight, axis, per_unit in self.parts:
      idx = sorted({i for u in units for i in per_unit[u]})
      out.append((weight, axis, idx))
    return out


def is_block_role(role):
  return isinstance(role, str) and role.startswith(ROLE)


def _weight_name(block, variable):
  """The variable's name in the block, as `members.weight_name` gives it (the masks'
  and slicers' key), or None if that name is not unique in the block."""
  name = members.weight_name(block, variable)
  same = [v for v in block.weights if members.weight_name(block, v) == name]
  return name if len(same) == 1 else None


def _foreign(block, layers):
  """The reason a sublayer's weights cannot be named inside `block`."""
  path = next((v.path for l in layers for v in l.weights
               if _weight_name(block, v) is None), "?")
  return (f"the variables of its sublayers are not under its path {block.path!r} (e.g. "
          f"{path!r}), so they cannot be told apart (create the sublayers in build(), "
          f"as keras_hub does)")


def _sub(layer, names):
  """The first attribute of `layer` among `names` that is a built layer with weights."""
  for n in names:
    v = getattr(layer, n, None)
    if v is not None and hasattr(v, "weights") and getattr(v, "built", False):
      return v
  return None


def _kernel(layer):
  return getattr(layer, "kernel", None) if hasattr(layer, "weights") else None


def _bias(layer):
  return getattr(layer, "bias", None)


def _last_axis_dense(layer):
  """True for a Dense, or an EinsumDense "...d,df->...f" (2-D kernel on the last axis)."""
  cls = type(layer).__name__
  kernel = _kernel(layer)
  if kernel is None or len(kernel.shape) != 2:
    return False
  if cls == "Dense":
    return True
  if cls == "EinsumDense":
    lhs, out = layer.equation.replace(" ", "").split("->")
    x, k = lhs.split(",")
    return x[-1] == k[0] and out[-1] == k[1] and x[:-1] == out[:-1]
  return False


# (up, gate, down) attribute names of the FFNs tfprune recognises (keras_hub's spellings).
_FFN_NAMES = (
    (("_feedforward_intermediate_dense", "feedforward_intermediate_dense"),
     ("_feedforward_gate_dense", "feedforward_gate_dense"),
     ("_feedforward_output_dense", "feedforward_output_dense")),
    (("gating_ffw_2",), ("gating_ffw",), ("ffw_linear",)),
    (("up_proj",), ("gate_proj",), ("down_proj",)),
    (("_mlp_intermediate_dense", "mlp_intermediate_dense"), (),
     ("_mlp_output_dense", "mlp_output_dense")),
    (("dense_h_to_4h",), (), ("dense_4h_to_h",)),
    (("mlp_dense_1",), (), ("mlp_dense_2",)),
    (("fc1",), (), ("fc2",)),
    (("input_projector",), ("gate_projector",), ("output_projector",)),
    (("dense_1",), (), ("dense_2",)),
)
# Config keys that may hold the FFN width (the first one that fits the units is used).
_WIDTH_KEYS = ("intermediate_dim", "mlp_dim", "intermediate_size", "ffn_dim")


_FFN_ATTRS = {n for names in _FFN_NAMES for group in names for n in group}


def _attr(layer, name):
  """`layer.name` or `layer._name` (keras_hub spells head counts both ways), or None."""
  value = getattr(layer, name, None)
  return getattr(layer, "_" + name, None) if value is None else value


def _ffn(block, config, holder=None, key="ffn"):
  """The FFN recipe of `block`, (None, reason) or (None, None) if it has no FFN.

  The FFN's sublayers are attributes of `holder`: the block, or one of its sublayers
  (an MLP layer of its own); weight names are relative to the block.
  """
  holder = block if holder is None else holder
  for up_names, gate_names, down_names in _FFN_NAMES:
    up, gate, down = (_sub(holder, up_names), _sub(holder, gate_names),
                      _sub(holder, down_names))
    if up is None or down is None:
      continue
    layers = [l for l in (up, gate, down) if l is not None]
    if not all(_last_axis_dense(l) for l in layers):
      return None, (f"FFN sublayers {[l.name for l in layers]} are not Dense / last-axis "
                    f"EinsumDense")
    units = int(up.kernel.shape[-1])
    if (down.kernel.shape[0] != units or
        (gate is not None and tuple(gate.kernel.shape) != tuple(up.kernel.shape))):
      return None, (f"FFN kernel shapes {[tuple(l.kernel.shape) for l in layers]} do not "
                    f"chain")
    one = [[u] for u in range(units)]
    parts, readers = [], []
    for producer in (up, gate):
      if producer is None:
        continue
      parts.append((_weight_name(block, producer.kernel), 1, one))
      if _bias(producer) is not None and tuple(producer.bias.shape) == (units,):
        parts.append((_weight_name(block, producer.bias), 0, one))
    parts.append((_weight_name(block, down.kernel), 0, one))
    readers.append(_weight_name(block, down.kernel))
    if None in [p[0] for p in parts]:
      return None, _foreign(block, layers)
    resize, fixed = None, None
    for width_key in _WIDTH_KEYS:
      dim = config.get(width_key)
      if isinstance(dim, int) and not isinstance(dim, bool) and dim % units == 0:
        resize = {width_key: dim // units}
        break
    else:
      fixed = (f"its config has no {' / '.join(_WIDTH_KEYS)} matching the {units} "
               f"units")
    return Recipe(key, "FFN units", units, parts, readers, resize, fixed), None
  return None, None


def _head_axis(layer, which):
  """Axis of the head letter in an attention EinsumDense's kernel.

  `which` is "in" for query / key / value ("btd,ndh->btnh": the output's second last
  letter) or "out" for the output projection ("btnh,nhd->btd": the input's).
  """
  if type(layer).__name__ != "EinsumDense":
    return None
  lhs, out = layer.equation.replace(" ", "").split("->")
  x, k = lhs.split(",")
  spec = out if which == "in" else x
  if len(spec) < 2 or spec[-2] not in k:
    return None
  return k.index(spec[-2])


def _mha(block, attr, mha):
  """Heads of a keras `MultiHeadAttention` sublayer (masked only)."""
  heads = int(mha.num_heads)
  one = [[h] for h in range(heads)]
  parts = []
  # pylint: disable-next=protected-access
  for sub in (mha._query_dense, mha._key_dense, mha._value_dense):
    parts.append((_weight_name(block, sub.kernel), 1, one))
    if _bias(sub) is not None:
      parts.append((_weight_name(block, sub.bias), 0, one))
  out = mha._output_dense.kernel  # pylint: disable=protected-access
  parts.append((_weight_name(block, out), 0, one))
  if None in [p[0] for p in parts]:
    return None, f"{attr}: {_foreign(block, [mha])}"
  return Recipe(f"heads:{attr}", "attention heads", heads, parts,
                [_weight_name(block, out)],
                fixed=(f"its {type(mha).__name__} {attr!r} gets its key_dim from "
                       f"hidden_dim // num_heads when the block builds, so the block "
                       f"cannot be rebuilt with fewer heads")), None


def _gqa(block, attr, att, config):
  """Grouped-query attention heads (see the module docstring for the unit rule)."""
  q_n, kv_n = int(_attr(att, "num_query_heads")), int(_attr(att, "num_key_value_heads"))
  subs = [_sub(att, (n, "_" + n)) for n in ("query_dense", "key_dense", "value_dense",
                                            "output_dense")]
  if None in subs:
    return None, f"{attr}: query / key / value / output projections not found"
  axes = [_head_axis(s, "in") for s in subs[:3]] + [_head_axis(subs[3], "out")]
  if None in axes:
    return None, f"{attr}: projections are not EinsumDense with a head axis"
  counts = [int(s.kernel.shape[a]) for s, a in zip(subs, axes)]
  if kv_n < 1 or q_n % kv_n or counts != [q_n, kv_n, kv_n, q_n]:
    return None, (f"{attr}: head counts {counts} do not match num_query_heads={q_n}, "
                  f"num_key_value_heads={kv_n}")
  group = q_n // kv_n
  if kv_n == 1 and q_n > 1:  # multi-query: a unit is one query head, K/V stay
    q_units = [[n] for n in range(q_n)]
    kv_units = None
    key, kind = f"query_heads:{attr}", "query heads"
    new = {"num_query_heads": lambda kept: kept}
  else:  # a unit is one key/value head with its whole group of query heads
    q_units = [list(range(k * group, (k + 1) * group)) for k in range(kv_n)]
    kv_units = [[k] for k in range(kv_n)]
    key, kind = f"kv_heads:{attr}", ("attention heads" if group == 1 else
                                     f"key/value heads (with {group} query heads each)")
    new = {"num_key_value_heads": lambda kept: kept,
           "num_query_heads": lambda kept: kept * group}
  parts = []
  for sub, axis, units in zip(subs, axes, (q_units, kv_units, kv_units, q_units)):
    if units is None:
      continue
    parts.append((_weight_name(block, sub.kernel), axis, units))
    bias = _bias(sub)
    if bias is not None and sub is not subs[3] and len(bias.shape) == 2:
      parts.append((_weight_name(block, bias), 0, units))
  readers = [_weight_name(block, subs[3].kernel)]
  if None in [p[0] for p in parts]:
    return None, f"{attr}: {_foreign(block, [att])}"
  fixed = None
  if config.get("num_query_heads") != q_n or config.get("num_key_value_heads") != kv_n \
      or not isinstance(config.get("head_dim"), int):
    fixed = ("its config does not set num_query_heads, num_key_value_heads and head_dim "
             "(the head size is derived from hidden_dim // num_query_heads)")
  elif config.get("query_head_dim_normalize") is False:
    fixed = "query_head_dim_normalize=False scales queries by hidden_dim // num_query_heads"
  return Recipe(key, kind, len(q_units) if kv_units is None else kv_n, parts, readers,
                None if fixed else new, fixed), None


_CACHE = weakref.WeakKeyDictionary()


def recipes(layer):
  """([Recipe], [reason]) for a custom layer: what tfprune can remove inside it, and what
  it cannot trace. ([], []) for a layer without sublayers."""
  state = (bool(getattr(layer, "built", False)), len(getattr(layer, "weights", ())))
  try:
    cached = _CACHE.get(layer)
  except TypeError:  # not weak-referenceable
    cached = None
  if cached is not None and cached[0] == state:
    return cached[1]
  found = _recipes(layer)
  try:
    _CACHE[layer] = (state, found)
  except TypeError:
    pass
  return found


def _recipes(layer):
  subs = sorted((n, v) for n, v in vars(layer).items()
                if hasattr(v, "weights") and hasattr(v, "built") and v is not layer
                and not n.startswith("_tracker"))
  if not getattr(layer, "built", False) or not (subs or any(
      isinstance(v, (list, tuple)) and v and hasattr(v[0], "weights")
      for v in vars(layer).values())):
    return [], []
  try:
    config = layer.get_config()
  except Exception:  # pylint: disable=broad-except (a library layer we cannot change)
    config = {}
  found, why, untraced = [], [], []
  recipe, reason = _ffn(layer, config)
  found += [recipe] if recipe else []
  why += [reason] if reason else []
  for attr, sub in subs:
    if not sub.weights:
      continue
    if any(c.__name__ == "MultiHeadAttention" and c.__module__.startswith("keras")
           for c in type(sub).__mro__):
      recipe, reason = _mha(layer, attr.lstrip("_"), sub)
    elif _attr(sub, "num_query_heads") and _attr(sub, "num_key_value_heads"):
      recipe, reason = _gqa(layer, attr.lstrip("_"), sub, config)
    else:
      if attr in _FFN_ATTRS or "norm" in type(sub).__name__.lower():
        continue
      recipe, reason = (None, None) if any(r.key.startswith("ffn") for r in found) else \
          _ffn(layer, config, holder=sub, key=f"ffn:{attr.lstrip('_')}")
      if recipe is None and reason is None:
        untraced.append(f"{attr.lstrip('_')} ({type(sub).__name__})")
        continue
    found += [recipe] if recipe else []
    why += [reason] if reason else []
  nested, nested_why = _nested(layer)
  found += nested
  why += nested_why
  if untraced and not found:  # no known names: trace its call over its sublayers
    traced, reason = _traced(layer)
    if traced:
      return traced, []
    if reason:
      why.append(reason)
  if untraced:
    why.append(f"sublayers {', '.join(untraced)} are not recognised (their weights are "
               f"left whole)")
  return found, why


# Lists every Keras layer keeps of its own (the tracked sublayers, again).
_KERAS_LISTS = frozenset({"_layers", "_tracker", "_metrics", "_losses", "_seed_generators"})


def _nested(layer):
  """Recipes of the blocks `layer` holds in lists (ViTEncoder's `encoder_layers`).

  Each nested block's recipes, renamed into `layer` (key "<attr>.<i>/<key>", weight names
  relative to `layer`), masked only: the outer config sets one width for all of them.
  Returns ([Recipe], [reason]).
  """
  found, why = [], []
  seen = {id(v) for v in vars(layer).values()}  # direct sublayers: `_recipes` reads them
  held = [(n, v) for n, v in vars(layer).items()
          if isinstance(v, (list, tuple)) and v and n not in _KERAS_LISTS
          and all(hasattr(b, "weights") and hasattr(b, "built") for b in v)]
  for attr, blocks in held:
    for i, block in enumerate(blocks):
      if (type(block).__module__.startswith("keras.src.") or not block.weights
          or id(block) in seen):
        continue
      seen.add(id(block))
      inner, inner_why = recipes(block)
      why += [f"{attr.lstrip('_')}[{i}]: {w}" for w in inner_why]
      names = {members.weight_name(block, v): _weight_name(layer, v)
               for v in block.weights}
      for r in inner:
        parts = [(names.get(w), axis, units) for w, axis, units in r.parts]
        if None in [p[0] for p in parts]:
          why.append(f"{attr.lstrip('_')}[{i}]: {_foreign(layer, [block])}")
          continue
        found.append(Recipe(
            f"{attr.lstrip('_')}.{i}/{r.key}", f"{r.kind} of {block.name}", r.size, parts,
            [names[w] for w in r.readers],
            fixed=r.fixed or (f"{type(layer).__name__} builds every block of its "
                              f"{attr.lstrip('_')!r} ({len(blocks)}) from one config, "
                              f"so one block cannot be rebuilt with fewer units")))
  return found, why


def _traced(layer):
  """Units of a custom layer found by tracing its `call` on a symbolic input.

  The layer's call is run on a `keras.Input` of the shape it was first called with; the
  Functional graph this records over its sublayers gets a `ChannelGraph` of its own,
  and each prunable group inside (not touching the layer's input or output) becomes a
  recipe. Masked only: which config argument sets a sublayer's width is unknown.
  Returns ([Recipe], None) or ([], reason).
  """
  import keras  # pylint: disable=import-outside-toplevel
  nodes = getattr(layer, "_inbound_nodes", [])
  try:
    tensors = list(nodes[0].arguments.keras_tensors) if nodes else []
  except AttributeError:
    tensors = []
  shapes = list((getattr(layer, "_build_shapes_dict", None) or {}).values())
  if len(tensors) == 1:
    shape, dtype = tuple(tensors[0].shape), tensors[0].dtype
  elif not tensors and len(shapes) == 1:  # (a wrapped layer: the shape it was built for)
    shape, dtype = tuple(shapes[0]), "float32"
  else:
    return [], None
  try:
    inp = keras.Input(shape[1:], dtype=dtype)
    inner = keras.Model(inp, layer.call(inp))
    graph = _GRAPH_CLASS[0](inner)
  except Exception as e:  # pylint: disable=broad-except (arbitrary user code)
    return [], f"its call could not be traced ({type(e).__name__}: {str(e)[:80]})"
  names = {}  # (sublayer, weight name in it) -> weight name in the block
  for sub in inner.layers:
    for v in sub.weights:
      names[(sub.name, members.weight_name(sub, v))] = _weight_name(layer, v)
  ops = {op.name: op for op in inner.operations}
  found = []
  for g, group in enumerate(graph.groups):
    if group.blocked:
      continue
    per = {}  # (block weight, axis) -> per-unit indices
    readers = set()
    for u, unit_members in enumerate(group.units):
      for m in unit_members:
        sub = ops[m.layer]
        for w, axis, idx in members.member_slices(sub, m):
          name = names.get((m.layer, w))
          if name is None:
            return [], f"sublayer {m.layer!r} weight {w!r} cannot be named in the block"
          per.setdefault((name, axis), [[] for _ in group.units])[u] += list(idx)
          if m.role.startswith("in") and members.is_kernel(w):
            readers.add(name)
    parts = [(w, axis, units) for (w, axis), units in per.items()]
    found.append(Recipe(f"traced:{g}", f"units of {', '.join(group.layers)}",
                        group.size, parts, sorted(readers),
                        fixed=("tfprune cannot tell which config argument sets the "
                               "width of its sublayers")))
  return found, (None if found else "its traced sublayers have no removable group")


def _recipe(layer, role):
  for r in recipes(layer)[0]:
    if r.role == role:
      return r
  raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no units "
                   f"{role!r} any more.")


# ------------------------------------------------------------------- the graph
def visit(graph, name, layer, inputs):
  """The channel graph's rule for a custom layer: (output ids or None, reason).

  A recognised block reads and makes blocked hidden channels and adds one unit per FFN
  unit / head (`Member(name, "block:<key>", unit)`). (None, reason) for a custom layer
  with sublayers but nothing recognised; (None, None) for a layer without sublayers.
  """
  cls = type(layer).__name__
  if type(layer).__module__.startswith("keras.src."):
    return None, None  # a Keras layer (RNN, ...): the graph's own message
  found, why = recipes(layer)
  if not found:
    if why or layer.weights:
      detail = "; ".join(why) or (f"its weights (e.g. {layer.weights[0].path!r}) are its "
                                  f"own variables or in sublayers it does not hold as "
                                  f"attributes (lists, nested blocks)")
      return None, (f"custom layer {cls}: no FFN (intermediate -> output Dense) or "
                    f"attention sublayer that tfprune can trace: {detail}")
    return None, None
  parts = [f"{r.size} {r.kind} "
           f"({'masked, not shrunk: ' + r.fixed if r.fixed else 'removable'})"
           for r in found]
  note = (f"custom block {cls}: its hidden channels are not traced; inside it: "
          f"{', '.join(parts)}" + (f"; not traced: {'; '.join(why)}" if why else ""))
  # pylint: disable=protected-access (the graph's own helpers, module-private)
  graph.notes[name] = note
  for _, _, ids in inputs:
    graph._uf.block(ids, f"{name}: read by custom block {cls} (hidden channels not traced)")
  outs = []
  for k in range(graph._output_count(name, 0)):
    size = graph._size((name, 0, k)) or 1
    outs.append(graph._uf.new(int(size), blocked=f"{name}: output of custom block {cls}"))
  for r in found:
    graph._member(graph._uf.new(r.size), name, r.role)
  # pylint: enable=protected-access
  return (outs if len(outs) > 1 else outs[0]), None


def member_slices(layer, member):
  """[(weight name, axis, indices)] a block member owns (`members.member_slices`)."""
  idx = member.index if isinstance(member.index, tuple) else (int(member.index),)
  return _recipe(layer, member.role).slices([int(i) for i in idx])


def layer_cost(node, layer):
  """cost(cut) -> MACs per example of a recognised block (`costs.MacModel`), or None.

  Counts its kernels once per position (token); each removed unit takes its kernel
  slices' share. Attention scores (sequence x sequence) are not counted.
  """
  if type(layer).__module__.startswith("keras.src.") or not hasattr(layer, "path"):
    return None
  found = recipes(layer)[0]
  if not found:
    return None
  try:
    shape = list(node.output.shape)
  except (AttributeError, ValueError):
    return None
  if None in shape[1:]:
    return None
  positions = int(np.prod(shape[1:-1] or [1]))
  kernels = {_weight_name(layer, v): tuple(v.shape) for v in layer.weights
             if v.path.endswith("/kernel")}
  total = positions * sum(int(np.prod(s)) for s in kernels.values())
  per_unit = {}
  for r in found:
    per_unit[r.role] = positions * sum(
        int(np.prod(kernels[w])) // kernels[w][axis] * len(units[0])
        for w, axis, units in r.parts if w in kernels)
  return lambda cut: total - sum(per_unit[k] * cut.get(k, 0) for k in per_unit)


# --------------------------------------------------------------------- shrinking
def unit_problem(layer, cuts):
  """Why the block units in `cuts` ({(layer, role): unit indices}) cannot be removed from
  `layer`, None if they can; only the block roles of `cuts` are looked at."""
  weights = {_weight_name(layer, v): v for v in layer.weights}
  for (_, role), units in cuts.items():
    if not is_block_role(role):
      continue
    recipe = _recipe(layer, role)
    for weight, axis, idx in recipe.slices(sorted(units)):
      if weight in recipe.readers and np.any(np.take(np.asarray(weights[weight]), idx,
                                                     axis=axis)):
        return (f"{recipe.kind[:-1]} {sorted(units)[0]} of {layer.name!r} is still read "
                f"({weight} is not zero): still alive")
    if recipe.fixed:
      return f"{recipe.kind} of {layer.name!r} stay zeroed (masked) but unshrunk: {recipe.fixed}"
  return None


def slicer(layer):
  """A `slicing._SLICERS`-style function (config, weights, cut) for a block, or None."""
  found = {r.role: r for r in recipes(layer)[0]}
  if not found:
    return None

  def slice_block(config, w, cut):
    for role, units in cut.items():
      recipe = found.get(role)
      if recipe is None or recipe.fixed:
        raise ValueError(f"cannot remove {role!r} units from block {layer.name!r}: "
                         f"{recipe.fixed if recipe else 'unknown units'}.")
      for weight, axis, idx in recipe.slices(sorted(units)):
        if weight in w and idx:
          w[weight] = np.delete(w[weight], idx, axis=axis)
      kept = recipe.size - len(units)
      for key, factor in recipe.resize.items():
        config[key] = factor(kept) if callable(factor) else kept * factor

  return slice_block


def kept_notes(graph, kept):
  """Texts for the shrink's warning: block groups whose zeroed units stay (masked only)."""
  out = []
  for g, why in sorted(kept.items()):
    group = graph.groups[g]
    if any(is_block_role(m.role) for m in group.units[0]) and "unshrunk" in why:
      out.append(why)
  return out


members.register_block_slicer(is_block_role, member_slices)
