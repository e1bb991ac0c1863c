"""Keras layer traversal shared by training code and the exporter (no TF graph logic)."""
import inspect

import keras
import numpy as np


def is_prune_wrapper(layer):
  """True for a `tfprune.PruneWrapper` or a subclass (e.g. the L0 gate wrapper), by class
  name (so that the graph code and the exporter need not import the training code)."""
  return any(c.__name__ == "PruneWrapper" and c.__module__ == "tfprune.wrapper"
             for c in type(layer).__mro__)


def inner_layer(layer):
  """The layer that holds the weights: a `PruneWrapper`'s layer, else `layer`."""
  return layer.layer if is_prune_wrapper(layer) else layer


def all_layers(model):
  """Every layer of `model`, nested models included, in order, each once."""
  found, seen = [], set()

  def visit(layer):
    for sub in getattr(layer, "layers", []):
      if id(sub) not in seen:
        seen.add(id(sub))
        found.append(sub)
        visit(sub)

  visit(model)
  return found


def children(layer):
  """The direct sublayers of `layer` (a model's layers; a custom layer's tracked ones)."""
  if isinstance(layer, keras.Model):
    return list(layer.layers)
  return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def call_count(layer):
  """How many times `layer` is called in the graphs it belongs to."""
  return len(getattr(layer, "_inbound_nodes", []) or [])


def recorded_call(layer):
  """`(args, kwargs)` of the first call of `layer` in a graph (KerasTensors), or None."""
  nodes = getattr(layer, "_inbound_nodes", None) or []
  if not nodes:
    return None
  return nodes[0].arguments.args, nodes[0].arguments.kwargs


def unbuilt_sublayers(layer):
  """The layers inside `layer` that are not built (a lazy layer's, before its first call)."""
  if isinstance(layer, keras.Model):
    return []
  inside = layer._flatten_layers(include_self=False)  # pylint: disable=protected-access
  return [l for l in inside if not l.built]


def call_kwargs(layer, kwargs):
  """`kwargs` less the names `layer.call` does not take (a wrapper's `mask`)."""
  params = inspect.signature(layer.call).parameters
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return dict(kwargs)
  return {k: v for k, v in kwargs.items() if k in params}


def build_by_tracing(layer, args, kwargs):
  """Builds the sublayers `layer.build()` left unbuilt by tracing `layer.call` on symbolic
  inputs shaped like `args` / `kwargs` (as Keras does for a layer without `build()`).

  Returns:
    None, or the exception of the trace (also tried with dense inputs: Keras marks
    `x * constant` sparse).
  """
  kwargs = call_kwargs(layer, kwargs)
  error = None
  for dense in (False, True):
    def fresh(t, dense=dense):
      if not isinstance(t, keras.KerasTensor):
        return t
      return keras.KerasTensor(t.shape, t.dtype, sparse=t.sparse and not dense,
                               ragged=t.ragged and not dense)
    a, k = keras.tree.map_structure(fresh, (tuple(args), kwargs))
    try:
      keras.Operation.compute_output_spec(layer, *a, **k)
      return None
    except Exception as e:  # pylint: disable=broad-except
      error = error or e
  return error


def spec_to_config(structure):
  """A JSON-able copy of `(args, kwargs)`: tensors as shape/dtype dicts, or None when a
  value is neither a tensor nor a plain value."""
  def encode(x):
    if isinstance(x, keras.KerasTensor):
      return {"__tensor__": [list(x.shape), str(x.dtype)]}
    if isinstance(x, (list, tuple)):
      return [encode(v) for v in x]
    if isinstance(x, dict) and all(isinstance(k, str) for k in x):
      return {k: encode(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, int, float, str)):
      return x
    raise TypeError(type(x).__name__)
  try:
    return encode(structure)
  except TypeError:
    return None


def spec_from_config(config):
  """The `(args, kwargs)` of `spec_to_config`, tensors as KerasTensors."""
  def is_tensor(x):
    return isinstance(x, dict) and set(x) == {"__tensor__"}
  def decode(x):
    if is_tensor(x):
      shape, dtype = x["__tensor__"]
      return keras.KerasTensor(tuple(shape), dtype)
    if isinstance(x, dict):
      return {k: decode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [decode(v) for v in x]
    return x
  args, kwargs = config
  return tuple(decode(args)), decode(kwargs)


def shapes_as_tuples(config):
  """A build config read back from JSON with each shape (a list of ints / None) a tuple
  again, as Keras hands shapes to `build()` when it calls the layer: library builds do
  `input_shape[:-1] + (n,)`, or read a list as several shapes (keras_hub's)."""
  if isinstance(config, dict):
    return {k: shapes_as_tuples(v) for k, v in config.items()}
  if isinstance(config, (list, tuple)):
    if all(d is None or isinstance(d, int) for d in config):
      return tuple(config)
    return [shapes_as_tuples(v) for v in config]
  return config


def build_config(layer):
  """`layer`'s build config as its class makes it (None when unbuilt), also for a copy
  that saves none (`load_by_call`)."""
  return type(layer).get_build_config(layer) if layer.built else None


def load_by_call(layer):
  """Makes a saved model rebuild library layer `layer` by calling it on its recorded
  inputs, as the library's model did, instead of from its default build config.

  That config is the input shape as JSON lists, which a library's `build()` may reject
  (`input_shape[:-1] + (n,)`; a list read as several shapes), and a layer without
  `build()` but with `compute_output_shape` is then marked built without its sublayers
  (Keras traces the call only for an unbuilt layer): the library's own model, saved as
  its constructor arguments, loads, a Functional copy of it would not. Keras's own layers
  and layers that define their own build config keep theirs.
  """
  cls, base = type(layer), keras.layers.Layer
  if (cls.__module__.startswith("keras.")
      or cls.get_build_config is not base.get_build_config
      or cls.build_from_config is not base.build_from_config):
    return
  object.__setattr__(layer, "get_build_config", lambda: None)


# --- Which vocabulary each integer input has (exporter and liveness probes) ---------

_MAX_WALK = 64


def _inputs_of(op):
  """Every Keras tensor `op` (a layer or op node) was called on, over all its calls."""
  out = []
  for node in getattr(op, "_inbound_nodes", None) or []:
    out.extend(getattr(node, "input_tensors", None) or [])
  if out:
    return out
  try:
    return keras.tree.flatten(op.input)
  except (AttributeError, ValueError, RuntimeError):
    return []


def _producer(tensor):
  """(operation, its input tensors for THIS call) of a Keras tensor, or (None, [])."""
  history = getattr(tensor, "_keras_history", None)
  op = getattr(history, "operation", None) if history is not None else None
  if op is None:
    return None, []
  nodes = getattr(op, "_inbound_nodes", None) or []
  index = getattr(history, "node_index", None)
  if index is not None and 0 <= index < len(nodes):
    return op, list(getattr(nodes[index], "input_tensors", None) or [])
  return op, _inputs_of(op)


# Operations that pass token ids through unchanged (they move, select, copy or cast
# ids, never compute new ones): the only ones the vocabulary walk follows. Keras 3 records
# raw `keras.ops` calls as op nodes of these class names; the layers are the
# value-preserving Keras layers. A tensor COMPUTED from an input (positions from
# `ones_like` + `cumsum`, `arange`, arithmetic) is not that input's ids, so an Embedding
# fed by it (a position Embedding) says nothing about the input's vocabulary.
_ID_PRESERVING = frozenset({
    # keras.ops op nodes
    "Cast", "Reshape", "GetItem", "ExpandDims", "Squeeze", "Transpose", "Take",
    "TakeAlongAxis", "StopGradient", "Concatenate", "Stack", "Flip", "Split", "Slice",
    "Tile", "Repeat", "BroadcastTo", "MoveAxis", "Swapaxes", "Ravel", "Roll", "Identity",
    # Keras layers
    "Flatten", "Permute", "RepeatVector", "Cropping1D",
})


def _nested_links(model):
  """`{id(input tensor of a nested model): [outer tensors it was called with]}`.

  A model used as a layer (keras_hub's task models call their backbone) starts a new
  graph at its own Inputs; this links each of them to the tensors passed at each call,
  so the vocabulary walk continues into the outer graph.
  """
  links = {}
  for layer in all_layers(model):
    if not _has_graph(layer):
      continue
    try:
      inner = list(layer.inputs or [])
    except (AttributeError, ValueError):
      continue
    for node in getattr(layer, "_inbound_nodes", None) or []:
      arguments = getattr(node, "arguments", None)
      args = getattr(arguments, "args", None)
      outer = keras.tree.flatten(args[0] if args and len(args) == 1 else args) if args else []
      if len(outer) != len(inner):  # the call's structure does not map: no link
        continue
      for t_in, t_out in zip(inner, outer):
        if t_in is not t_out:  # a task model reusing its backbone's Inputs: no link needed
          links.setdefault(id(t_in), []).append(t_out)
  return links


def _id_sources(tensor, links=None):
  """The tensors whose values `tensor` carries unchanged: where the walk stops.

  Walks back from `tensor` through id-preserving operations only (`_ID_PRESERVING`:
  casts, reshapes, slices, ...) and from a nested model's Input to what it was called
  with (`links`, from `_nested_links`); returns the tensors it stops at: inputs
  (produced by an InputLayer) or tensors computed by any other operation (positions,
  arithmetic).
  """
  links = links or {}
  found, stack, seen = [], [tensor], set()
  while stack and len(seen) < _MAX_WALK:
    t = stack.pop()
    if id(t) in seen:
      continue
    seen.add(id(t))
    if id(t) in links:
      stack.extend(links[id(t)])
      continue
    op, parents = _producer(t)
    if op is None or type(op).__name__ not in _ID_PRESERVING:
      found.append((t, op))
    else:
      stack.extend(parents)
  return found


def _has_graph(layer):
  """A Functional / Sequential model (its layers record their calls); subclassed models
  and custom layers call their sublayers inside `call`, leaving no graph to walk."""
  return isinstance(layer, keras.Model) and (isinstance(layer, keras.Sequential)
                                             or hasattr(layer, "_run_through_graph"))


def _inner_embeddings(layer):
  """The Embeddings inside a custom layer (no graph), nested graph models left out (they
  are walked as graphs)."""
  found, stack = [], list(children(layer))
  while stack:
    sub = stack.pop()
    if isinstance(sub, keras.layers.Embedding):
      found.append(sub)
    elif not _has_graph(sub):
      stack.extend(children(sub))
  return found


def _probe_id_readers(layer, embeddings):
  """`{index in the first call's input tensors: smallest input_dim}`: which inputs of
  custom layer `layer` its inner `embeddings` look ids up from ({} for none), or None
  when the probe cannot tell.

  The layer runs eagerly on its first call's structure (dynamic dimensions 1), once
  with every numeric input 0 and once per numeric input with that input 1, each inner
  Embedding's integer input recorded. An Embedding reads an input's ids
  when its input is all 0 in the first run and all 1 with that input set: the ids,
  moved or cast but not computed. A position Embedding (positions from `ops.arange` or
  a weight holding them) reads none, so it says nothing about the input's vocabulary.
  """
  node = (getattr(layer, "_inbound_nodes", None) or [None])[0]
  arguments = getattr(node, "arguments", None)
  tensors = list(getattr(node, "input_tensors", None) or [])
  numeric = [k for k, t in enumerate(tensors)   # ids may also arrive cast to float
             if keras.backend.standardize_dtype(t.dtype) != "bool"]
  if arguments is None or not numeric:
    return None
  seen = {}

  def run(ones):
    values = {}
    for k, t in enumerate(tensors):
      shape = tuple(1 if d is None else int(d) for d in t.shape)
      values[id(t)] = keras.ops.full(shape, 1 if k == ones else 0,
                                     dtype=keras.backend.standardize_dtype(t.dtype))
    args, kwargs = keras.tree.map_structure(
        lambda v: values.get(id(v), v) if isinstance(v, keras.KerasTensor) else v,
        (tuple(arguments.args), dict(arguments.kwargs)))
    for e in embeddings:
      seen[id(e)] = []
    layer(*args, **kwargs)
    return {i: list(v) for i, v in seen.items()}

  def recorder(e):
    original = e.call
    def call(inputs, *args, **kwargs):
      value = keras.ops.convert_to_numpy(inputs)
      if "int" in str(value.dtype) and value.size:
        seen[id(e)].append(value)
      return original(inputs, *args, **kwargs)
    return call

  previous = {id(e): vars(e)["call"] for e in embeddings if "call" in vars(e)}
  try:
    for e in embeddings:
      object.__setattr__(e, "call", recorder(e))
    base = run(None)
    found = {}
    for k in numeric:
      probe = run(k)
      for e in embeddings:
        if any(not np.any(a) and np.all(b == 1) for a, b in zip(base[id(e)], probe[id(e)])
               if a.shape == b.shape):
          found[k] = min(found.get(k, int(e.input_dim)), int(e.input_dim))
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    for e in embeddings:
      if id(e) in previous:
        object.__setattr__(e, "call", previous[id(e)])
      elif "call" in vars(e):
        object.__delattr__(e, "call")
  # An Embedding never seen (its rows read other than through its `call`, e.g. keras_hub
  # SAM3's class token) may look up any input that no called Embedding follows.
  unseen = [int(e.input_dim) for e in embeddings if not base[id(e)]]
  for k in numeric if unseen else ():
    found.setdefault(k, min(unseen))
  return found


def _embedding_readers(model):
  """`[(tensor, input_dim)]`: each Keras tensor whose values a graph layer looks up as
  ids, with that lookup's vocabulary.

  An `Embedding` (or a subclass, e.g. keras_hub's `ReversibleEmbedding`) reads its own
  input. A custom layer or subclassed model (no graph of its own) holding Embeddings
  (keras_hub's `TokenAndPositionEmbedding`, `SigLIPTextEmbedding`) reads an input with
  the smallest `input_dim` of the Embeddings inside that look that input's ids up,
  found by running it (`_probe_id_readers`: a position Embedding beside the token
  Embedding does not count); when the probe cannot tell, every input with the smallest
  `input_dim` inside (the conservative choice: never wider than the real vocabulary).
  """
  out = []
  for layer in all_layers(model):
    if isinstance(layer, keras.layers.Embedding):
      out.extend((t, int(layer.input_dim)) for t in _inputs_of(layer))
    elif not _has_graph(layer):
      embeddings = _inner_embeddings(layer)
      if not embeddings:
        continue
      read = _probe_id_readers(layer, embeddings)
      for node in getattr(layer, "_inbound_nodes", None) or []:
        tensors = list(getattr(node, "input_tensors", None) or [])
        if read is None:
          dim = min(int(e.input_dim) for e in embeddings)
          out.extend((t, dim) for t in tensors)
        else:
          out.extend((tensors[k], dim) for k, dim in read.items() if k < len(tensors))
  return out


def embedding_vocab(model):
  """`{input index: vocabulary}` of the integer inputs that feed an Embedding.

  An input's vocabulary is the smallest `input_dim` of the Embeddings that read that
  input's ids: through casts, reshapes, slices and the like only, never through a
  computed tensor (a position Embedding fed by positions computed from the tokens does
  not count), and across nested models (a backbone inside a task model) to the outer
  Inputs. Each input gets its own vocabulary (BERT: the token ids the token Embedding's,
  the segment ids the 2-row segment Embedding's). An integer input that feeds no
  Embedding (a padding mask) is absent: callers pick a small range for it (the
  exporter's `random_samples` uses 0 / 1 and checks no range).
  """
  links = _nested_links(model)
  vocab = {}
  for t, dim in _embedding_readers(model):
    for src, _ in _id_sources(t, links):
      for k, mi in enumerate(model.inputs):
        if src is mi:
          vocab[k] = min(vocab.get(k, dim), dim)
  return vocab
