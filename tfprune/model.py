"""Model-level entry points: `prune` and `strip`.

Lookup (`get_method`, `find_wrappers`) lives with the wrapper (`tfprune.wrapper`) and
reporting in `tfprune.report`; both are re-exported here for older imports.
"""
from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np

from tfprune import _liveness
from tfprune import distribute
from tfprune import registry
from tfprune import shrink as shrink_lib
from tfprune import _layers
from tfprune._layers import all_layers
from tfprune.methods import base
from tfprune.report import effective_weights  # pylint: disable=unused-import
from tfprune.report import format_report  # pylint: disable=unused-import
from tfprune.report import sparsity_report  # pylint: disable=unused-import
from tfprune.report import total_sparsity  # pylint: disable=unused-import
from tfprune.wrapper import find_wrappers  # pylint: disable=unused-import
from tfprune.wrapper import get_method  # pylint: disable=unused-import
from tfprune.wrapper import PruneWrapper


def _check_graph_model(model, what):
  if not isinstance(model, keras.Model):
    raise ValueError(f"{what} needs a keras.Model, got {type(model).__name__}.")
  is_functional = type(model).__name__ == "Functional" or hasattr(model, "_nodes_by_depth")
  if not (isinstance(model, keras.Sequential) or is_functional):
    raise ValueError(
        f"{what} supports Sequential and Functional models; {model.name!r} is a subclassed "
        f"model ({type(model).__name__}). Wrap its prunable layers yourself in "
        f"tfprune.PruneWrapper(layer, method=...) inside __init__, then use "
        f"tfprune.get_method(model) / tfprune.PruningCallback as usual.")
  if not model.built:
    raise ValueError(f"Model {model.name!r} is not built: give it an Input shape or call "
                     f"it on data before {what}.")


def _is_graph_model(layer):
  """True for the models `clone_model(recursive=True)` rebuilds node by node."""
  return isinstance(layer, keras.Sequential) or (
      isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"))


def _copy_op(op):
  """A copy of a raw `keras.ops` operation recorded in a Functional graph.

  Keras 3 records `x + 3.0`, `ops.*` calls and a mask's `ops.not_equal` as operation
  nodes. They hold no weights; a copy from their config keeps the two models independent
  (as `keras.models.clone_model` does). An operation that cannot be rebuilt from its
  config is stateless, so the clone may call the same object.
  """
  try:
    return op.__class__.from_config(op.get_config())
  except (NotImplementedError, TypeError, ValueError):
    return op


def _fresh_copy(layer, source=None):
  """An unshared copy of `layer` (new variables, same config), built like the original.

  A copy whose `build()` leaves sublayers unbuilt (a lazy custom layer, a keras_hub
  block) is built by tracing its call on the original's recorded inputs. A layer whose
  own `get_config()` cannot rebuild it (a library layer the user cannot fix) does not
  block pruning: `_copy_despite_config` rebuilds it another way, or reuses it, and warns.

  Args:
    layer: the layer (or raw operation) to copy.
    source: the graph layer whose recorded call gives the input specs (default `layer`;
      a wrapper for its inner layer).

  Raises:
    ValueError: naming the layer, when the copy's sublayers cannot be built.
  """
  if not isinstance(layer, keras.layers.Layer):
    return _copy_op(layer)
  if not layer.weights and not type(layer).__module__.startswith("keras."):
    # A custom layer without weights has nothing to prune or train: reused, it keeps
    # the state its first call made (Stable Diffusion 3's scheduler caches its sigmas
    # then; a copy from config would make them on its own first call).
    return layer
  spec = _layers.recorded_call(source or layer)
  try:
    new = layer.__class__.from_config(layer.get_config())
  except Exception as e:  # pylint: disable=broad-except
    return _copy_despite_config(layer, spec, e)
  _build_like(new, layer, spec)
  problem = _copy_problem(layer, new, spec)
  if problem:
    return _copy_despite_config(layer, spec, ValueError(problem))
  if getattr(layer, "_tfprune_init_args", None) is not None:
    _give_config(new, layer._tfprune_init_args)  # pylint: disable=protected-access
  return new


def _copy_problem(layer, new, spec):
  """Why `new` (from `layer`'s config) is not a copy of `layer`, or None: its weights
  must have the same shapes (keras_hub's D-FINE decoder puts a variable in its config, so
  the copy holds one more weight). Not probed: calling a layer can change its state."""
  shapes = [tuple(v.shape) for v in layer.weights]
  if [tuple(v.shape) for v in new.weights] != shapes:
    return (f"its copy from get_config() holds {len(new.weights)} weights, not the "
            f"layer's {len(shapes)} of the same shapes")
  return None


def _give_config(layer, init_args):
  """Makes `layer.get_config()` return `init_args` (the arguments tfprune rebuilt it
  from), so a model holding it saves and loads although its class's config is broken."""
  def get_config():
    base = {"name": layer.name, "trainable": layer.trainable,
            "dtype": keras.saving.serialize_keras_object(layer.dtype_policy)}
    return {**base, **{k: _class_config(v) for k, v in init_args.items() if k not in base}}
  object.__setattr__(layer, "_tfprune_init_args", dict(init_args))
  object.__setattr__(layer, "get_config", get_config)


def _class_config(value):
  """`value`, or a class argument (keras_hub Swin's `norm_layer=LayerNormalization`) in
  the form `keras.saving.deserialize_keras_object` turns back into the class (Keras
  cannot serialize a class itself: it calls the unbound `get_config`)."""
  if not isinstance(value, type):
    return value
  return {"module": value.__module__, "class_name": "function",
          "config": value.__name__, "registered_name": value.__name__}


def _build_like(new, layer, spec):
  """Builds `new` (a copy of `layer`) until it holds the same variables as `layer`."""
  build_config = _layers.build_config(layer)
  # A layer whose config carries its build shape (keras_hub TransformerDecoder's
  # `decoder_sequence_shape`) is built by `from_config`: building it again would add state.
  if build_config and not new.built:
    new.build_from_config(build_config)
  if len(new.weights) >= len(layer.weights):
    return
  error = (_layers.build_by_tracing(new, *spec) if spec is not None
           else "it is not called in the model")
  if len(new.weights) != len(layer.weights):
    unbuilt = [l.name for l in _layers.unbuilt_sublayers(new)]
    cause = f"{type(error).__name__}: {error}" if isinstance(error, Exception) else error
    raise ValueError(
        f"Cannot copy layer {layer.name!r} ({type(layer).__name__}): its build() leaves "
        f"sublayers {unbuilt} unbuilt and tracing its call on the recorded inputs failed "
        f"({' '.join(str(cause).split())}). Give {type(layer).__name__} a "
        f"build(input_shape) that builds its sublayers (e.g. self.dense.build(input_shape)).")


def _from_init_args(layer):
  """`layer`'s class called with the constructor arguments Keras recorded (plain values)."""
  recorded = getattr(layer, "_auto_config", None)
  if recorded is None:
    raise ValueError("no recorded constructor arguments (not all plain values)")
  kwargs = dict(recorded.config)
  kwargs.setdefault("name", layer.name)
  return layer.__class__(**kwargs), kwargs


def _from_attributes(layer):
  """`layer`'s class called with its attributes named like its `__init__` arguments."""
  params = list(inspect.signature(layer.__class__.__init__).parameters.values())[1:]
  kwargs = {}
  for p in params:
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
      continue
    found = [getattr(layer, a) for a in (p.name, f"_{p.name}", f"_{p.name}_cls")
             if a in vars(layer)]
    if not found:
      raise ValueError(f"no attribute for __init__ argument {p.name!r}")
    # A class argument is often kept twice: the class, and the layer made from it
    # (keras_hub Swin's `self.downsample = downsample(...)`, `self._downsample_cls`).
    kwargs[p.name] = next((v for v in found if isinstance(v, type)), found[0]) if (
        isinstance(found[0], keras.layers.Layer)) else found[0]
  if any(p.kind is p.VAR_KEYWORD for p in params):
    kwargs.update(name=layer.name, dtype=layer.dtype_policy, trainable=layer.trainable)
  return layer.__class__(**kwargs), kwargs


def _same_outputs(a, b, spec):
  """True if layers `a` and `b` compute the same outputs on a random input like `spec`."""
  rng = np.random.default_rng(0)

  def concrete(t):
    if not isinstance(t, keras.KerasTensor):
      return t
    shape = tuple(2 if d is None else d for d in t.shape)
    dtype = keras.backend.standardize_dtype(t.dtype)
    if "float" in dtype:
      return rng.normal(size=shape).astype(dtype)
    return np.ones(shape, dtype) if dtype == "bool" else np.zeros(shape, dtype) + (
        rng.integers(0, 2, size=shape).astype(dtype))

  args, kwargs = keras.tree.map_structure(concrete, spec)
  kwargs = _layers.call_kwargs(a, kwargs)
  out_a = keras.tree.flatten(a(*args, **kwargs))
  out_b = keras.tree.flatten(b(*args, **kwargs))
  return len(out_a) == len(out_b) and all(
      np.allclose(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y),
                  rtol=1e-5, atol=1e-6) for x, y in zip(out_a, out_b))


def _copy_despite_config(layer, spec, error):
  """A copy of `layer` when `from_config(get_config())` fails, or `layer` itself.

  Tried in order: the constructor arguments Keras recorded (exact), the attributes
  named like the `__init__` arguments (kept only if it computes the same outputs on a
  probe input); each gets `layer`'s weights, and a `get_config()` returning those
  arguments (`_give_config`). Else the layer is reused: its variables are then shared
  with the original model. Every way warns, naming the layer and the whole cause.
  """
  what = f"Layer {layer.name!r} ({type(layer).__name__})"
  cause = f"{type(error).__name__}: {' '.join(str(error).split())}"
  ways = (("the constructor arguments Keras recorded", _from_init_args, False),
          ("its attributes named like its __init__ arguments (same outputs checked on "
           "a probe input)", _from_attributes, True))
  tried = []
  for how, make, verify in ways:
    try:
      new, init_args = make(layer)
      _build_like(new, layer, spec)
      new.set_weights(layer.get_weights())
      if verify and (spec is None or not _same_outputs(layer, new, spec)):
        raise ValueError("outputs differ on a probe input")
    except Exception as e:  # pylint: disable=broad-except
      tried.append(f"{how.split(' (')[0]}: {type(e).__name__}: {' '.join(str(e).split())}")
      continue
    _give_config(new, init_args)
    warnings.warn(f"{what}: its get_config() cannot rebuild it ({cause}). tfprune rebuilt "
                  f"it from {how} instead (new variables, same weights); the copy's "
                  f"get_config() returns those arguments, so the model saves and loads.",
                  stacklevel=2)
    return new
  warnings.warn(
      f"{what}: its get_config() cannot rebuild it ({cause}), nor could tfprune rebuild "
      f"it otherwise ({'; '.join(tried)}). tfprune reuses the layer itself: its variables "
      f"are SHARED between the original and the new model (pruning or training one "
      f"changes the other). Fix the layer's get_config() for an independent copy.",
      stacklevel=2)
  return layer


def _clone(model, make_layer):
  """Clones `model` with `make_layer(old) -> new`; returns (clone, [(old, new), ...]).

  The graph is rebuilt node by node (`keras.models.clone_model`, recursive): raw
  operation nodes and mask arguments are replayed as recorded, nested Functional and
  Sequential models are cloned in place, a shared layer is copied once. `pairs` lists the
  layers only (operations hold no weights).
  """
  pairs = []

  def clone_function(layer):
    if not isinstance(layer, keras.layers.Layer):
      return _copy_op(layer)
    new = make_layer(layer)
    pairs.append((layer, new))
    if new is not layer and not isinstance(new, PruneWrapper):  # a wrapper saves its
      _layers.load_by_call(new)  # layer's build itself; a reused layer stays the user's
    return new

  def call_function(op, *args, **kwargs):
    # A wrapper node records the `mask` argument (PruneWrapper.call takes one); the plain
    # layer strip puts back may not take it, and gets its mask from its input as the
    # original layer did.
    if "mask" in kwargs and not _accepts_mask(op):
      kwargs.pop("mask")
    return op(*args, **kwargs)

  clone = keras.models.clone_model(
      model, clone_function=clone_function, recursive=True,
      call_function=None if isinstance(model, keras.Sequential) else call_function)
  return clone, pairs


def _accepts_mask(op):
  """True if `op.call` takes a `mask` argument (by name or through **kwargs)."""
  if not isinstance(op, keras.layers.Layer):
    return True
  params = inspect.signature(op.call).parameters.values()
  return any(p.name == "mask" or p.kind is p.VAR_KEYWORD for p in params)


def _graph_layers(model):
  """The layers `_clone` hands to `make_layer`, in model order, each once.

  Nested Functional / Sequential models are entered (they are cloned layer by layer);
  every other layer, custom ones and wrappers such as `TimeDistributed` included, is a
  leaf (copied whole).
  """
  found, seen = [], set()

  def visit(container):
    for layer in container.layers:
      if id(layer) in seen:
        continue
      seen.add(id(layer))
      if _is_graph_model(layer):
        visit(layer)
      elif not isinstance(layer, keras.layers.InputLayer):
        found.append(layer)

  visit(model)
  return found


def _check_finite_weights(model, what):
  """Raises ValueError naming every layer weight of `model` that holds NaN or Inf.

  NaN ranks above every finite magnitude in a top-k and survives `weight * mask`, so a
  non-finite weight would be kept by pruning and baked into the stripped model.
  """
  bad = []
  for layer in _graph_layers(model):
    owner = layer.layer.name if isinstance(layer, PruneWrapper) else layer.name
    for w in layer.weights:
      if "float" not in keras.backend.standardize_dtype(w.dtype):
        continue
      value = np.asarray(keras.ops.convert_to_numpy(w))
      if np.all(np.isfinite(value)):
        continue
      nans, infs = int(np.isnan(value).sum()), int(np.isinf(value).sum())
      bad.append(f"layer {owner!r} weight {w.path!r}: {nans} NaN, {infs} Inf "
                 f"of {value.size}")
  if bad:
    raise ValueError(
        f"{what}: model {model.name!r} has non-finite weights ({'; '.join(bad[:8])}"
        f"{'; ...' if len(bad) > 8 else ''}). NaN/Inf would rank as the largest magnitudes, "
        f"be kept, and survive strip: fix the training run (lower learning rate, gradient "
        f"clipping) or reload a finite checkpoint first.")


def _select(model, layers):
  """The layers to wrap, in model order (all prunable ones when `layers` is None)."""
  found = _graph_layers(model)
  wrapped = [l.name for l in found if isinstance(l, PruneWrapper)]
  if wrapped:
    raise ValueError(f"Model {model.name!r} is already pruned (wrapped layers: {wrapped}). "
                     f"Call tfprune.strip(model) first to prune it again.")
  for layer in found:
    if isinstance(layer, keras.Model) and any(
        registry.is_prunable(l) for l in base.all_layers(layer)):
      raise ValueError(
          f"Model {model.name!r} contains the subclassed model {layer.name!r} "
          f"({type(layer).__name__}) with prunable layers: tfprune can rebuild Functional "
          f"and Sequential models only. Build it as a Functional model, or wrap its "
          f"layers in tfprune.PruneWrapper inside its __init__.")
  if layers is None:
    chosen = [l for l in found if registry.is_prunable(l)]
    if not chosen:
      raise ValueError(f"Model {model.name!r} has no prunable layers; supported: "
                       f"{', '.join(registry.supported_layer_names())}.")
    return chosen
  by_name = {}
  for layer in found:
    by_name.setdefault(layer.name, layer)
  inner = {}  # layers inside a leaf (TimeDistributed(Dense), custom layers): their owner
  for layer in found:
    for sub in layer._flatten_layers(include_self=False):  # pylint: disable=protected-access
      inner.setdefault(sub.name, layer.name)
  wanted = set()
  for name in [layers] if isinstance(layers, str) else layers:
    if name not in by_name:
      if name in inner:
        raise ValueError(
            f"Layer {name!r} is inside layer {inner[name]!r} of model {model.name!r}: "
            f"name {inner[name]!r} instead (its wrapper prunes the kernels of {name!r}).")
      raise ValueError(f"No layer named {name!r} in model {model.name!r}; layers are "
                       f"{sorted(by_name)}.")
    registry.get_prunable_weights(by_name[name])  # raises a clear error if not prunable
    wanted.add(id(by_name[name]))
  return [l for l in found if id(l) in wanted]


def prune(model: keras.Model,
          method: str | base.PruningMethod | base.PostTrainingMethod = "magnitude",
          layers: str | list[str] | None = None, **method_kwargs) -> keras.Model:
  """Returns a copy of `model` with its prunable layers wrapped in `PruneWrapper`.

  The original model is not modified; the copy starts from its weights with all masks 1.

  Args:
    model: a built Sequential or Functional Keras model. Any Keras 3 graph works:
      branches, skip connections, shared layers, nested Functional / Sequential models,
      raw `keras.ops` nodes (`x + 3.0`, hard-swish), masks (`Embedding(mask_zero=True)`),
      multiple inputs and outputs. Layers that contain prunable layers
      (`TimeDistributed(Dense)`, `Bidirectional(LSTM)`, custom layers with a Dense
      inside) are wrapped whole and their inner kernels pruned. The copy computes
      exactly what `model` computes.
    method: a registered method name (`tfprune.methods.available_methods()`) or a
      method instance (a `PruningMethod` or a `PostTrainingMethod`, docs/methods.md).
    layers: names of the layers to prune; default every prunable layer.
    **method_kwargs: arguments of the method (target_sparsity, scope, schedule, ...).

  Returns:
    The pruned (wrapped) model; `tfprune.get_method(result)` is the bound method.

  Raises:
    ValueError: subclassed or unbuilt model, non-finite (NaN / Inf) weights (naming the
      layer and weight), unknown method, unknown or unprunable layer, a lazy layer whose
      sublayers cannot be built (docs/layers.md section 2).

  Warns:
    UserWarning: weights of rank >= 2 left dense (`unpruned_weights`); a layer whose
      `get_config()` cannot rebuild it, copied another way or reused (docs/layers.md
      section 3).
  """
  _check_graph_model(model, "tfprune.prune")
  _check_finite_weights(model, "tfprune.prune")
  distribute.check_prune_scope(model)
  if isinstance(method, str):
    method = base.get_method_class(method)(**method_kwargs)
  elif not isinstance(method, base.MethodCore):
    raise ValueError(f"method must be a method name ({', '.join(base.available_methods())}) "
                     f"or a PruningMethod / PostTrainingMethod, got "
                     f"{type(method).__name__}.")
  elif method_kwargs:
    raise ValueError(f"Pass method arguments {sorted(method_kwargs)} to the method's "
                     f"constructor when method is an instance.")
  chosen = {id(l) for l in method.select_layers(model, _select(model, layers),
                                                explicit=layers is not None)}

  def make_layer(layer):
    new = _fresh_copy(layer)
    return method.make_wrapper(new) if id(layer) in chosen else new

  pruned, pairs = _clone(model, make_layer)
  for old, new in pairs:
    target = new.layer if isinstance(new, PruneWrapper) else new
    target.set_weights(old.get_weights())
  method.bind(pruned)
  if layers is None:
    left = unpruned_weights(pruned)
    if left:
      warnings.warn(f"tfprune.prune: {len(left)} weight(s) of model {model.name!r} stay "
                    f"dense: {'; '.join(f'{p} ({why})' for p, why in left)}.", stacklevel=2)
  shared = _shared_by_attribute(model)
  if shared:
    held = "; ".join(f"layer {v!r} is also held by layer {h!r} (its attribute {a!r})"
                     for h, a, v in shared)
    warnings.warn(
        f"tfprune.prune: {held}. The copies "
        f"tfprune makes cannot share a layer held that way: model {model.name!r}'s copy "
        f"holds it twice, each copy pruned and trained on its own (the holder runs its "
        f"copy). Prune such a model's parts separately, or leave those layers out with "
        f"`layers=`.", stacklevel=2)
  return pruned


def _shared_by_attribute(model):
  """`[(holder, attribute, layer)]` names: graph layers that another graph layer also
  holds as an attribute (keras_hub Gemma3n's embedding processor holds the text model,
  which is a node of the graph as well). Copies made from configs lose that sharing."""
  layers = _graph_layers(model)
  nodes = {id(l) for l in layers}
  return [(l.name, attr.lstrip("_"), v.name) for l in layers
          for attr, v in vars(l).items() if id(v) in nodes and v is not l]


def unpruned_weights(model: keras.Model) -> list[tuple[str, str]]:
  """The trainable weights of rank >= 2 of a pruned model that no wrapper masks.

  `tfprune.prune` warns with this list (vectors such as biases and norm scales are left
  out: they are never pruned).

  Returns:
    `(weight path, reason)` pairs, in model order.
  """
  wrappers = find_wrappers(model)
  masked = {id(w) for wr in wrappers for w in wr.prunable_weights}
  method = type(wrappers[0].method).__name__ if wrappers and wrappers[0].method else None
  left = []
  for layer in _graph_layers(model):
    inner = layer.layer if isinstance(layer, PruneWrapper) else layer
    for path, why in registry.unpruned_weights(inner, masked):
      if not isinstance(layer, PruneWrapper) and registry.is_prunable(inner):
        why = f"not selected by {method or 'the method'}"
      left.append((path, why))
  return left


def strip(model: keras.Model, shrink: bool = False) -> keras.Model:
  """Returns a plain Keras model (no wrappers) whose pruned weights are exact zeros.

  Args:
    model: a pruned (wrapped) model.
    shrink: also delete the channels the pruning removed (`tfprune.shrink_model`
      through the channel dependency graph, docs/structured.md): every channel no layer
      reads any more (`scope="structured"` masks) and every input-independent constant
      channel (closed L0 gates, a zeroed conv before BatchNormalization, folded into the
      readers' biases), in every layer of its group: a physically smaller dense model
      computing the same outputs. A dead channel that must stay is reported (a warning;
      for structured methods a ValueError naming the layer when a merge ties it to a
      live channel or nothing could be removed). The smaller model is compared with
      the stripped one on probe inputs before it is returned.
      `tfprune.structured.shrink_report` compares the layers' parameters and MACs
      before and after.

  Raises:
    ValueError: subclassed or unbuilt model, or non-finite (NaN / Inf) weights (naming
      the layer and weight).
    tfprune.DeadModelError (a ValueError): the stripped model's outputs no longer depend
      on its inputs (two random inputs, equal outputs; `tfprune._liveness`), naming the
      weights pruned to all zeros.
  """
  _check_graph_model(model, "tfprune.strip")
  _check_finite_weights(model, "tfprune.strip")
  if shrink:
    wrappers = find_wrappers(model)
    method = wrappers[0].method if wrappers else None
    strict = getattr(method, "scope", None) == "structured"
    return shrink_lib.shrink_model(strip(model), strict=strict)

  def make_layer(layer):
    if isinstance(layer, PruneWrapper):
      return _fresh_copy(layer.layer, source=layer)
    return _fresh_copy(layer)

  stripped, pairs = _clone(model, make_layer)
  for old, new in pairs:
    if isinstance(old, PruneWrapper):
      new.set_weights(old.stripped_weights())
    else:
      new.set_weights(old.get_weights())
  _liveness.check_alive(stripped, "tfprune.strip")  # never return a dead model
  return stripped
