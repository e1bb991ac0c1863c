"""A measured latency cost model for `target_latency` (structured pruning).

MACs are not latency: on LiteRT / XNNPACK narrow layers, int8 kernels that cost per
activation element, padding, pooling and element-wise ops make the time of a layer a
poor linear function of its multiply-accumulates (docs/export.md section 6).
`LatencyModel` is the cost model (`cost_model=` of `selection.select_units`, in place
of the `MacModel`) of times measured in the host's LiteRT interpreter (`ai_edge_litert`,
1 thread, XNNPACK on by default; conversion and timing: tfprune/_litert.py, shared with
the exporter) at the chosen precision (`float` or `int8`):

  * every costed layer of the model (Conv / Dense / depthwise / separable / transposed
    conv, and the element-wise, normalisation, pooling, padding and concatenation layers
    whose cost scales with the channels) is rebuilt on its own as a one-layer Keras model
    at its full widths and at a half and a quarter of each width that pruning can change
    (`widths=`; every combination for (input, output) channels), converted
    with `tf.lite.TFLiteConverter` and timed (median of single-sample invokes, the
    fastest of 5 alternating rounds, minus the invoke overhead of an empty model);
  * the cost of the layer at any remaining widths is the multilinear (bilinear for
    (input channels, output channels)) interpolation of those points, extrapolated
    linearly below the lowest one and made non-decreasing in every width; a kernel's
    output channels count in whole tiles of `channel_tile` (XNNPACK computes 8 or 16
    output channels at once, so 9 cost as much as 16: allocate with `round_to=8`), and
    the measured widths are rounded up to whole tiles too;
  * layers that TFLite fuses into the op before them cost nothing: a BatchNormalization
    right after a conv / Dense (folded into its weights), a ReLU / ReLU6 after a conv, a
    folded BatchNormalization or an Add / Subtract / Multiply (a fused activation), and
    with XNNPACK a ZeroPadding read only by a convolution (XNNPACK folds the PAD);
  * MultiHeadAttention and EinsumDense are costed from their MACs at the model's own
    measured microseconds per MAC; other layers with a fixed shape are measured once at
    their full size; `keras.ops` nodes and layers the converter cannot take alone cost
    nothing (listed in `LatencyModel.unmeasured`).

Measurements are cached in the process by (layer signature, widths, precision, XNNPACK),
so identical layers (the repeated blocks of a ResNet) are measured once.

The table. `measure_table(model, precision=...)` returns (and with `path=` writes, as
JSON) everything `LatencyModel` measured, so a table can be measured once on the device
a model targets and passed back as `LatencyModel(model, graph, table=path_or_dict)` or
`ChannelScope(target_latency=..., latency_table=...)`:

    {"format": "tfprune.latency_table", "version": 1,
     "precision": "float", "xnnpack": true, "runtime": "ai_edge_litert 2.3.0",
     "overhead_us": 1.9,          # invoke time of an empty model (not removable)
     "us_per_mac": 2.1e-05,       # for layers costed from MACs (attention, EinsumDense)
     "channel_tile": 8,           # output channels are costed in whole tiles
     "layers": {SIGNATURE: {"layer": "conv2d_3", "axes": ["in", "out"],
                            "points": [[16, 16, 30.5], [8, 16, 17.0], ...]}, ...}}

A SIGNATURE is the layer's class, the input shapes it sees (no batch axis) and its
configuration without names, initializers, regularizers or constraints, so two layers
with the same signature compute the same thing at the same cost. `points` hold the
widths along `axes` (input and output channels for convs and Dense, the channels for
everything else) followed by microseconds (invoke overhead removed). The widths need
to form a full grid (every combination of the values seen on each axis); any number of
values per axis is used (more points: a finer interpolation).
"""
import json
import os
import time

from absl import logging
import numpy as np

from tfprune import _io
from tfprune import _layers
from tfprune import _litert
from tfprune import layer_types
from tfprune.structured import costs
from tfprune.structured import depgraph

PRECISIONS = ("float", "int8")
FORMAT = "tfprune.latency_table"
# Fractions of each prunable width measured: the full width, half and a quarter.
WIDTHS = (1.0, 0.5, 0.25)
# Alternating timing rounds per layer signature (the fastest median of each point kept).
ROUNDS = 5
# XNNPACK's output-channel tile per precision (x86, measured: docs/structured.md section 5).
CHANNEL_TILE = {"float": 8, "int8": 8}
VERSION = 1

# Layer families, from the one taxonomy (tfprune/layer_types.py).
_T = layer_types
_CONVS = _T.names(channels=(_T.DENSE, _T.CONV))
_TRANSPOSES = _T.names(channels=_T.TRANSPOSE)
_DEPTHWISE = _T.names(channels=_T.DEPTHWISE)
_SEPARABLE = _T.names(channels=_T.SEPARABLE)
_MERGES = _T.names(channels=_T.MERGE)
_FUSING_MERGES = _T.names(channels=_T.MERGE, fuses=True)
_ACTIVATIONS = _T.names(activation=True)
# Layers that change no data in an exported model (or only its view of it).
_FREE = _T.names(free=True)
# Layers costed from their MACs at the model's measured rate.
_BY_MACS = _T.names(channels=(_T.ATTENTION, _T.EINSUM))
# Layers whose channels follow their input's (the walk that finds a tensor's producer).
_PASS = tuple(dict.fromkeys(_MERGES + _ACTIVATIONS + _T.names(channels=(_T.PASS, _T.SCALE))))
_NOISE_KEYS = ("name", "trainable", "dtype", "seed")

# (signature, widths, precision, xnnpack) -> microseconds; "overhead" keys likewise.
_CACHE = {}


class LatencyModel:
  """Per-layer LiteRT latency as a function of the remaining channels.

  The cost-model interface of `MacModel` (`total()`, `layer_macs(name)`,
  `apply(members, sign)`), in microseconds, so `selection.select_units(..., target=f,
  cost_model=LatencyModel(model, graph))` removes the least important channel groups
  until the estimated latency is at most `f` of today's.

  Args:
    model: the (plain or pruned) Functional model; `graph.model` if `graph` is given.
    graph: its `ChannelGraph` (built if None).
    precision: "float" or "int8" (full-integer, int8 inputs and outputs).
    table: a table (dict, or the path of its JSON file: see the module docstring) to
      use instead of measuring; every costed layer's signature must be in it.
    xnnpack: time with the XNNPACK delegate (LiteRT's default) or the builtin kernels
      (with a table: the table's setting).
    verbose: print one line per measured layer signature.
    widths: the fractions of each prunable width measured (1.0 is always included);
      fewer: a faster table, a coarser interpolation.
    channel_tile: output channels of a conv / Dense / depthwise kernel cost whole tiles
      of this many channels (XNNPACK computes several at once: measured here, a float
      or int8 3x3 conv with 9..16 outputs costs as much as with 16); default the
      table's, else `CHANNEL_TILE[precision]`; 1 for a smooth interpolation.

  Attributes:
    layers: {layer name: cost(removed) -> microseconds} for every costed layer.
    unmeasured: {layer name: why it costs nothing}.
    overhead_us: the invoke time of an empty model (part of `total()`).
    table: the table of every measurement used (`measure_table`'s format).

  Raises:
    ValueError: a bad precision, a table in the wrong format / precision / without
      some of the model's layers (named), or a model whose graph cannot be built.
  """

  def __init__(self, model, graph=None, precision="float", table=None, xnnpack=True,
               verbose=False, widths=WIDTHS, channel_tile=None):
    precision = validate_precision(precision)
    self.widths = tuple(sorted({1.0} | {float(f) for f in widths}, reverse=True))
    if not all(0.0 < f <= 1.0 for f in self.widths):
      raise ValueError(f"widths must be fractions in (0, 1], got {widths!r}.")
    graph = graph or depgraph.ChannelGraph(model)
    self.graph, self.model = graph, graph.model
    self.precision, self.xnnpack, self.verbose = precision, bool(xnnpack), verbose
    given = load_table(table, precision) if table is not None else None
    if channel_tile is None:
      channel_tile = (given or {}).get("channel_tile") or CHANNEL_TILE[precision]
    if isinstance(channel_tile, bool) or int(channel_tile) != channel_tile or \
        channel_tile < 1:
      raise ValueError(f"channel_tile must be an integer >= 1, got {channel_tile!r}.")
    self.channel_tile = int(channel_tile)
    self._source = table if isinstance(table, (str, os.PathLike)) else "the table"
    specs, self.unmeasured = _specs(self.model, graph, self.xnnpack)
    if given is not None:
      missing = [(s.name, s.signature) for s in specs
                 if s.kind != "macs" and s.signature not in given["layers"]]
      if missing:
        raise ValueError(
            f"latency table {self._source} has no measurement for layers "
            f"{[n for n, _ in missing][:8]}{' ...' if len(missing) > 8 else ''} of "
            f"model {self.model.name!r} (first signature: {missing[0][1]}); measure "
            f"this model's table with tfprune.structured.latency.measure_table(model, "
            f"precision={precision!r}) on the target device.")
      self.overhead_us = float(given["overhead_us"])
      self.xnnpack = bool(given.get("xnnpack", self.xnnpack))  # what was measured
      entries = {s.signature: given["layers"][s.signature] for s in specs
                 if s.kind != "macs"}
      rate = given.get("us_per_mac")
    else:
      self.overhead_us = _overhead_us(precision, self.xnnpack)
      entries, rate = {}, None
      start = time.time()
      kept = []
      for spec in specs:
        if spec.kind != "macs" and spec.signature not in entries:
          try:
            entries[spec.signature] = self._measure(spec)
          except Exception as e:  # pylint: disable=broad-except
            if spec.kind == "conv" or spec.cls in _DEPTHWISE:
              raise  # a kernel layer must be costed: its error names it
            self.unmeasured[spec.name] = (f"{spec.cls} could not be timed alone "
                                          f"({type(e).__name__}: {str(e)[:200]})")
            continue
        kept.append(spec)
      specs = kept
      if verbose:
        print(f"latency: {len(entries)} layer signatures measured in "
              f"{time.time() - start:.1f} s ({precision}, XNNPACK "
              f"{'on' if self.xnnpack else 'off'})", flush=True)
    if rate is None and any(s.kind == "macs" for s in specs):
      rate = self._rate(specs, entries)
    self.layers, self._deps = {}, {}
    for spec in specs:
      if spec.kind == "macs":  # MacModel's formula takes {role: removed count}
        self.layers[spec.name] = _by_macs(spec, rate)
      else:
        self.layers[spec.name] = _interpolator(spec, entries[spec.signature],
                                               self.channel_tile)
      for term in spec.terms():
        self._deps.setdefault(term, set()).add(spec.name)
    self.table = {"format": FORMAT, "version": VERSION, "precision": precision,
                  "xnnpack": self.xnnpack, "runtime": _runtime(),
                  "overhead_us": self.overhead_us, "us_per_mac": rate,
                  "channel_tile": self.channel_tile,
                  "layers": {sig: dict(entry) for sig, entry in entries.items()}}
    self.removed = {}

  # ------------------------------------------------------ MacModel interface
  def total(self):
    """Estimated latency (us) of the model with the channels removed so far."""
    return self.overhead_us + sum(cost(self.removed) for cost in self.layers.values())

  def layer_macs(self, name):
    """Estimated time (us) of layer `name` (the `MacModel` method name)."""
    return self.layers[name](self.removed)

  layer_us = layer_macs

  def apply(self, members, sign=1):
    """Records (sign=1) or undoes (-1) the removal of one unit's members.

    Returns:
      The names of the costed layers whose time this changes.
    """
    touched = set()
    for m in members:
      count = len(m.index) if isinstance(m.index, tuple) else 1
      key = (m.layer, m.role)
      self.removed[key] = self.removed.get(key, 0) + sign * count
      touched |= self._deps.get(key, set())
    return touched

  def reset(self):
    """Forgets every removal (the model at full width again)."""
    self.removed = {}

  def save(self, path):
    """Writes `table` as JSON to `path` (atomically)."""
    _io.atomic_write(path, json.dumps(self.table, indent=1, sort_keys=True))

  # -------------------------------------------------------------- measuring
  def _measure(self, spec):
    key = (spec.signature, self.precision, self.xnnpack)
    grid = spec.grid(self.widths, self.channel_tile)
    start = time.time()
    todo = [w for w in grid if key + (w,) not in _CACHE]
    if todo:
      files = {w: _convert(spec.build(w), self.precision, spec.name) for w in todo}
      best = {}
      for _ in range(ROUNDS):  # alternating rounds: the fastest median of each point
        for w, data in files.items():
          best[w] = min(best.get(w, float("inf")), _litert.time_us(data, self.xnnpack))
      for w, us in best.items():
        _CACHE[key + (w,)] = max(0.0, us - self.overhead_us)
    points = [list(w) + [round(_CACHE[key + (w,)], 3)] for w in grid]
    line = (f"latency: {spec.name}: {spec.cls} {spec.describe()}, {len(grid)} widths "
            f"{'measured' if todo else 'cached'} ({time.time() - start:.1f} s): "
            f"{points[0][-1]:.1f} us at full width")
    logging.info(line)
    if self.verbose:
      print(line, flush=True)
    return {"layer": spec.name, "axes": list(spec.axis_names), "points": points}

  def _rate(self, specs, entries):
    """us per MAC of the model's measured convs / Dense at full width (else a probe)."""
    rates = []
    for spec in specs:
      if spec.kind == "conv" and spec.macs:
        us = _interpolator(spec, entries[spec.signature], self.channel_tile)({})
        rates.append(us / spec.macs)
    if rates:
      return float(np.median(rates))
    import keras  # pylint: disable=g-import-not-at-top
    inp = keras.Input((64, 128), batch_size=1)
    probe = keras.Model(inp, keras.layers.Dense(128)(inp))
    us = _litert.time_us(_convert(probe, self.precision, "probe"), self.xnnpack)
    return max(0.0, us - self.overhead_us) / (64 * 128 * 128)


def measure_table(model, precision="float", path=None, xnnpack=True, verbose=False,
                  widths=None):
  """Measures `model`'s latency table on this machine's LiteRT (see the module docs).

  Args:
    model: a built Functional / Sequential Keras model (plain or pruned).
    precision: "float" or "int8".
    path: if given, the table is written there as JSON (atomically).
    xnnpack: time with XNNPACK (default) or the builtin kernels.
    verbose: print one line per measured layer signature.
    widths: the fractions of each prunable width measured (default `WIDTHS`).

  Returns:
    The table (a JSON-serialisable dict).
  """
  costs = LatencyModel(model, precision=precision, xnnpack=xnnpack, verbose=verbose,
                       widths=WIDTHS if widths is None else widths)
  if path is not None:
    costs.save(path)
  return costs.table


def load_table(table, precision=None):
  """A latency table from a dict or a JSON file path, checked.

  Args:
    table: the dict, or the path of its JSON file.
    precision: if given, the precision the table must have been measured at.

  Returns:
    The table dict.

  Raises:
    ValueError: the file is missing or not JSON, or the table's format, version or
      precision is not what is needed.
  """
  source = table
  if isinstance(table, (str, os.PathLike)):
    try:
      with open(table, encoding="utf-8") as f:
        table = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"latency_table {os.fspath(source)!r} could not be read as a "
                       f"JSON latency table ({type(e).__name__}: {e}); write one with "
                       f"tfprune.structured.latency.measure_table(model, path=...).") from e
    source = repr(os.fspath(source))
  else:
    source = "(dict)"
  if not isinstance(table, dict) or table.get("format") != FORMAT or \
      not isinstance(table.get("layers"), dict) or "overhead_us" not in table:
    raise ValueError(f"latency_table {source} is not a {FORMAT!r} table (a dict with "
                     f"format, precision, overhead_us and layers: see "
                     f"tfprune.structured.latency).")
  if table.get("version") != VERSION:
    raise ValueError(f"latency_table {source} has version {table.get('version')!r}; "
                     f"this tfprune reads version {VERSION}.")
  if precision is not None and table.get("precision") != precision:
    raise ValueError(f"latency_table {source} was measured for precision "
                     f"{table.get('precision')!r}, not latency_precision={precision!r}.")
  for sig, entry in table["layers"].items():
    points = entry.get("points") if isinstance(entry, dict) else None
    axes = entry.get("axes") if isinstance(entry, dict) else None
    if not points or not isinstance(axes, list) or \
        any(len(p) != len(axes) + 1 for p in points):
      raise ValueError(f"latency_table {source}: entry {sig!r} needs 'axes' and "
                       f"'points' [[width per axis..., us], ...].")
  return table


def validate_precision(precision):
  """`precision` if it is one of `PRECISIONS`, else a ValueError naming them."""
  if precision not in PRECISIONS:
    raise ValueError(f"latency_precision must be one of {', '.join(PRECISIONS)}, got "
                     f"{precision!r}.")
  return precision


def model_latency_us(model, precision="float", xnnpack=True, rounds=3):
  """Measured LiteRT latency (us, 1 thread) of the whole `model` (for checks/benches)."""
  data = _convert(model, validate_precision(precision), model.name)
  return min(_litert.time_us(data, xnnpack) for _ in range(rounds))


# ------------------------------------------------------------------ layer specs
class _Spec:
  """One costed layer: how to rebuild it at other widths, and what its widths follow.

  `axes` is a list of (name, full width, terms, prunable, tiled): the width along an
  axis is the full width minus sum(removed[(layer, role)] * mult) over its terms; a
  tiled axis (a kernel's output channels) costs whole tiles of `channel_tile` channels.
  """

  def __init__(self, name, cls, kind, signature, axes, build=None, macs=0,
               mac_cost=None):
    self.name, self.cls, self.kind, self.signature = name, cls, kind, signature
    self.axes, self.build, self.macs, self.mac_cost = axes, build, macs, mac_cost

  @property
  def axis_names(self):
    return [a[0] for a in self.axes]

  def terms(self):
    if self.kind == "macs":
      return [(self.name, r) for r in ("in", "out", "dw", "head", "in_query", "in_value",
                                       "in_key")]
    return [(layer, role) for _, _, terms, _, _ in self.axes for layer, role, _ in terms]

  def grid(self, fractions, tile=1):
    values = []
    for _, full, _, prunable, tiled in self.axes:
      if not prunable:
        values.append([full])
        continue
      values.append(sorted({_tiled(max(1, int(round(full * f))), full, tile if tiled else 1)
                            for f in fractions}, reverse=True))
    out = [()]
    for v in values:
      out = [w + (x,) for w in out for x in v]
    return out

  def describe(self):
    return " x ".join(f"{a[0]} {a[1]}" for a in self.axes)


def _specs(model, graph, xnnpack=True):
  """([_Spec] of the costed layers, {layer: why it costs nothing})."""
  config = graph.config
  ops = {op.name: op for op in model.operations}
  info, consumers, children = {}, {}, {}
  for layer_config in config["layers"]:
    name, cls = layer_config["name"], layer_config["class_name"]
    module = layer_config.get("module") or ""
    if cls == "PruneWrapper":
      inner = layer_config["config"]["layer"]
      cls, module = inner["class_name"], inner.get("module") or ""
    nodes = layer_config.get("inbound_nodes") or []
    parents = []
    if nodes:
      for path, tensor in depgraph.node_tensors(nodes[0]):
        if path[0] == "kwargs" and path[1] not in ("query", "value", "key"):
          continue
        parents.append(tensor["keras_history"][0])
    info[name] = (cls, module.startswith("keras.src.ops"), parents, len(nodes))
    for p in parents:
      consumers[p] = consumers.get(p, 0) + 1
      children.setdefault(p, []).append(name)
  prunable = {(m.layer, m.role) for g in graph.prunable_groups for unit in g.units
              for m in unit}
  memo = {}

  def channel_terms(name):
    """[(layer, role, mult)] whose removals shrink the channels of `name`'s output."""
    if name in memo:
      return memo[name]
    memo[name] = []
    cls, is_op, parents, _ = info.get(name, ("?", False, [], 0))
    layer = _layers.inner_layer(ops[name]) if name in ops else None
    if is_op:
      out = channel_terms(parents[0]) if parents else []
    elif cls in _CONVS + _TRANSPOSES + _SEPARABLE + _BY_MACS + ("Embedding",):
      out = [(name, "out", 1)]
    elif cls in _DEPTHWISE:
      out = [(name, "dw", int(getattr(layer, "depth_multiplier", 1) or 1))]
    elif cls == "Concatenate":
      out = [t for p in parents for t in channel_terms(p)]
    elif cls in _PASS and parents:
      out = channel_terms(parents[0])
    else:
      out = []
    memo[name] = out
    return out

  def fused(name):
    """True if TFLite folds / fuses `name` into the op that produces its input."""
    cls, is_op, parents, _ = info[name]
    if is_op or len(parents) != 1 or consumers.get(parents[0], 0) != 1:
      return False
    p_cls = info.get(parents[0], ("?",))[0]
    p_layer = _layers.inner_layer(ops[parents[0]]) if parents[0] in ops else None
    linear = getattr(getattr(p_layer, "activation", None), "__name__", "linear") == "linear"
    producer = p_cls in _CONVS + _TRANSPOSES + _DEPTHWISE + _SEPARABLE
    if cls == "BatchNormalization":
      return producer and linear
    if _fusable_activation(_layers.inner_layer(ops[name])):
      if producer and linear:
        return True
      if p_cls == "BatchNormalization" and fused(parents[0]):
        return True
      return p_cls in _FUSING_MERGES and not info[parents[0]][1]
    return False

  specs, unmeasured = [], {}
  for op in model.operations:
    name = op.name
    if name not in info:
      continue
    cls, is_op, parents, n_nodes = info[name]
    layer = _layers.inner_layer(op)
    if cls in _FREE:
      continue
    if is_op:
      unmeasured[name] = f"keras.ops node {cls} (not measured)"
      continue
    if n_nodes != 1:
      unmeasured[name] = f"{cls} called {n_nodes} times (shared layers are not measured)"
      continue
    try:
      in_shapes = [list(t.shape) for t in (op.input if isinstance(op.input, (list, tuple))
                                           else [op.input])]
      out_shape = list(op.output.shape)
    except (AttributeError, ValueError, TypeError) as e:
      unmeasured[name] = f"no static input/output shape ({e})"
      continue
    if any(None in s[1:] for s in in_shapes + [out_shape]):
      unmeasured[name] = "a dynamic (None) dimension"
      continue
    if cls in ("BatchNormalization",) + _ACTIVATIONS and fused(name):
      continue
    if xnnpack and cls.startswith("ZeroPadding") and len(children.get(name, ())) == 1 \
        and info[children[name][0]][0] in _CONVS + _DEPTHWISE:
      continue  # XNNPACK folds a PAD into the convolution that reads it
    spec = _spec(name, cls, layer, op, in_shapes, out_shape, parents, channel_terms,
                 prunable)
    if isinstance(spec, str):
      unmeasured[name] = spec
    elif spec is not None:
      specs.append(spec)
  return specs, unmeasured


def _fusable_activation(layer):
  cls = type(layer).__name__
  if cls == "ReLU":
    return (layer.negative_slope in (0, 0.0) and layer.threshold in (0, 0.0) and
            layer.max_value in (None, 6, 6.0))
  if cls == "Activation":
    return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
  return False


def _signature(cls, layer, in_shapes, extra=None):
  config = layer.get_config()
  items = {k: v for k, v in config.items()
           if k not in _NOISE_KEYS and not any(s in k for s in ("initializer",
                                                                "regularizer",
                                                                "constraint"))}
  items.update(extra or {})
  shapes = ";".join("x".join(str(d) for d in s[1:]) for s in in_shapes)
  return f"{cls}[{shapes}]" + json.dumps(items, sort_keys=True, default=str,
                                          separators=(",", ":"))


def _spec(name, cls, layer, op, in_shapes, out_shape, parents, channel_terms, prunable):
  """The `_Spec` of one layer, None if it costs nothing, or a reason string."""
  import keras  # pylint: disable=g-import-not-at-top

  def has(terms):
    return any((l, r) in prunable for l, r, _ in terms)

  sig = _signature(cls, layer, in_shapes)
  config = layer.get_config()
  config.pop("name", None)
  if cls in _CONVS + _TRANSPOSES + _SEPARABLE:
    if cls in _SEPARABLE:
      cin_terms, width_key = [(name, "dw", 1)], "filters"
    else:
      cin_terms, width_key = [(name, "in", 1)], "units" if cls == "Dense" else "filters"
    cin, cout = int(in_shapes[0][-1]), int(config[width_key])
    out_terms = [(name, "out", 1)]
    axes = [("in", cin, cin_terms, has(cin_terms), False),
            ("out", cout, out_terms, has(out_terms), True)]
    base_shape = in_shapes[0]
    cost = costs.layer_cost(op, layer)

    def build(widths):
      i = keras.Input(tuple(base_shape[1:-1]) + (widths[0],), batch_size=1)
      return keras.Model(i, type(layer).from_config({**config, width_key: widths[1]})(i))

    return _Spec(name, cls, "conv", sig, axes, build, macs=cost({}) if cost else 0)
  if cls in _DEPTHWISE:
    terms = [(name, "dw", 1)]
    axes = [("channels", int(in_shapes[0][-1]), terms, has(terms), True)]
    base_shape = in_shapes[0]

    def build_dw(widths):
      i = keras.Input(tuple(base_shape[1:-1]) + (widths[0],), batch_size=1)
      return keras.Model(i, type(layer).from_config(config)(i))

    return _Spec(name, cls, "channels", sig, axes, build_dw)
  if cls in _BY_MACS:
    cost = costs.layer_cost(op, layer)
    if cost is None:
      return f"{cls} without a MACs formula (not measured)"
    return _Spec(name, cls, "macs", sig, [], macs=cost({}), mac_cost=cost)
  # A layer of fixed weights whose data scales with the channels of its input(s).
  if cls == "Concatenate":
    terms = channel_terms(name)
  else:
    terms = channel_terms(parents[0]) if parents else []
  full = int(out_shape[-1]) if cls == "Concatenate" else int(in_shapes[0][-1])
  axes = [("channels", full, terms, has(terms), False)]
  shapes = in_shapes
  dtypes = [t.dtype for t in (op.input if isinstance(op.input, (list, tuple))
                              else [op.input])]

  def build_ew(widths):
    c = widths[0]
    inputs = []
    for s in shapes:
      own = int(s[-1])
      if cls == "Concatenate":  # every part scaled alike
        width = max(1, int(round(own * c / full)))
      else:
        width = c if own == full else own  # (broadcast operands keep theirs)
      inputs.append(keras.Input(tuple(s[1:-1]) + (width,), batch_size=1,
                                dtype=dtypes[len(inputs)]))
    new = type(layer).from_config(config)
    out = new(inputs if len(inputs) > 1 or cls in _MERGES + ("Concatenate",)
              else inputs[0])
    if cls == "BatchNormalization":  # nontrivial statistics (not folded away)
      new.set_weights([np.linspace(0.5, 1.5, w.shape[0]).astype("float32")
                       for w in new.weights])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], out)

  return _Spec(name, cls, "channels", sig, axes, build_ew)


def _by_macs(spec, rate):
  """cost(removed) -> us for a layer costed from its MACs at `rate` us per MAC."""
  name, formula = spec.name, spec.mac_cost

  def cost(removed):
    return rate * formula({role: removed.get((name, role), 0) for _, role in spec.terms()})

  return cost


def _tiled(width, full, tile):
  """`width` rounded up to whole tiles of `tile` channels (at most `full`)."""
  return min(full, -(-width // tile) * tile)


def _interpolator(spec, entry, tile=1):
  """cost(removed) -> us: multilinear interpolation of the entry's grid of points."""
  points = entry["points"]
  n = len(entry["axes"])
  values = [sorted({int(p[k]) for p in points}) for k in range(n)]
  grid = {tuple(int(v) for v in p[:n]): float(p[n]) for p in points}
  for combo in _product(values):
    if combo not in grid:
      raise ValueError(f"latency table entry for layer {spec.name!r} ({spec.signature}) "
                       f"does not form a full grid: width {list(combo)} is missing.")
  # Non-decreasing in every width (removing channels never costs time).
  for k in range(n):
    for combo in sorted(_product(values), key=lambda c: c[k]):
      i = values[k].index(combo[k])
      if i:
        lower = combo[:k] + (values[k][i - 1],) + combo[k + 1:]
        grid[combo] = max(grid[combo], grid[lower])
  fulls = [a[1] for a in spec.axes]
  terms = [a[2] for a in spec.axes]
  tiles = [tile if a[4] else 1 for a in spec.axes]

  def cost(removed):
    corners = [((), 1.0)]
    for k in range(n):
      width = fulls[k] - sum(removed.get((l, r), 0) * mult for l, r, mult in terms[k])
      width = _tiled(max(width, 1), fulls[k], tiles[k])
      vs = values[k]
      if len(vs) == 1:
        pairs = [(vs[0], 1.0)]
      else:
        i = int(np.clip(np.searchsorted(vs, width) - 1, 0, len(vs) - 2))
        t = (width - vs[i]) / (vs[i + 1] - vs[i])
        pairs = [(vs[i], 1.0 - t), (vs[i + 1], t)]
      corners = [(c + (v,), w * wv) for c, w in corners for v, wv in pairs]
    return max(0.0, sum(w * grid[c] for c, w in corners))

  return cost


def _product(values):
  out = [()]
  for v in values:
    out = [c + (x,) for c in out for x in v]
  return out


# ------------------------------------------------------------ convert and time
def _convert(model, precision, what):
  """TFLite bytes of `model` (float, or full-int8 with int8 inputs and outputs)."""
  samples = None
  if precision == "int8":  # 4 random calibration samples (token ids 0 / 1)
    rng = np.random.default_rng(0)
    specs = [(tuple(t.shape), np.dtype(t.dtype)) for t in model.inputs]
    draws = [[rng.standard_normal(s).astype(np.float32)
              if np.issubdtype(d, np.floating) else rng.integers(0, 2, s).astype(d)
              for s, d in specs] for _ in range(4)]
    samples = [np.concatenate(arrays) for arrays in zip(*draws)]
  try:
    data, _ = _litert.convert(model, precision if precision == "int8" else None, samples,
                              saved_model=False)
  except _litert.ConverterFailed as e:
    raise ValueError(f"latency: layer {what!r} could not be converted to TFLite alone "
                     f"({precision}): {e}\n{e.log.tail()}") from e.cause
  return data


def _overhead_us(precision, xnnpack):
  """Invoke time of a model with one tiny op (subtracted from each layer's time)."""
  key = ("overhead", precision, xnnpack)
  if key not in _CACHE:
    import keras  # pylint: disable=g-import-not-at-top
    i = keras.Input((1,), batch_size=1)
    data = _convert(keras.Model(i, keras.layers.ReLU()(i)), precision, "overhead")
    _CACHE[key] = min(_litert.time_us(data, xnnpack) for _ in range(3))
  return _CACHE[key]


def _runtime():
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return f"ai_edge_litert {metadata.version('ai-edge-litert')}"
  except Exception:  # pylint: disable=broad-except
    return "ai_edge_litert"
