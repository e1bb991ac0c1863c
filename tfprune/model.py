"""Model-level entry points: `prune` and `strip`.

Lookup (`get_method`, `find_wrappers`) lives with the wrapper (`tfprune.wrapper`) and
reporting in `tfprune.report`; both are re-exported here for older imports.
"""
import keras

from tfprune import distribute
from tfprune import registry
from tfprune import shrink as shrink_lib
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


def _fresh_copy(layer):
  """An unshared copy of `layer` (same config), built like the original."""
  new = layer.__class__.from_config(layer.get_config())
  build_config = layer.get_build_config() if layer.built else None
  if build_config:
    new.build_from_config(build_config)
  return new


def _clone(model, make_layer):
  """Clones `model` with `make_layer(old) -> new`; returns (clone, [(old, new), ...])."""
  pairs = []

  def clone_function(layer):
    new = make_layer(layer)
    pairs.append((layer, new))
    return new

  clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
  return clone, pairs


def _select(model, layers):
  """The layers to wrap, in model order (all prunable ones when `layers` is None)."""
  found = all_layers(model)
  wrapped = [l.name for l in found if isinstance(l, PruneWrapper)]
  if wrapped:
    raise ValueError(f"Model {model.name!r} is already pruned (wrapped layers: {wrapped}). "
                     f"Call tfprune.strip(model) first to prune it again.")
  if layers is None:
    chosen = [l for l in found if registry.is_prunable(l)]
    if not chosen:
      raise ValueError(f"Model {model.name!r} has no prunable layers; supported: "
                       f"{', '.join(registry.supported_layer_names())}.")
    return chosen
  by_name = {}
  for layer in found:
    by_name.setdefault(layer.name, layer)
  wanted = set()
  for name in [layers] if isinstance(layers, str) else layers:
    if name not in by_name:
      raise ValueError(f"No layer named {name!r} in model {model.name!r}; layers are "
                       f"{sorted(by_name)}.")
    registry.get_prunable_weights(by_name[name])  # raises a clear error if not prunable
    wanted.add(id(by_name[name]))
  return [l for l in found if id(l) in wanted]


def prune(model, method="magnitude", layers=None, **method_kwargs):
  """Returns a copy of `model` with its prunable layers wrapped in `PruneWrapper`.

  The original model is not modified; the copy starts from its weights with all masks 1.

  Args:
    model: a built Sequential or Functional Keras model (branches, skip connections,
      shared and nested layers are fine).
    method: a registered method name (`tfprune.methods.available_methods()`) or a
      `PruningMethod` instance.
    layers: names of the layers to prune; default every prunable layer.
    **method_kwargs: arguments of the method (target_sparsity, scope, schedule, ...).

  Returns:
    The pruned (wrapped) model; `tfprune.get_method(result)` is the bound method.

  Raises:
    ValueError: subclassed or unbuilt model, unknown method, unknown or unprunable layer.
  """
  _check_graph_model(model, "tfprune.prune")
  distribute.check_prune_scope(model)
  if isinstance(method, str):
    method = base.get_method_class(method)(**method_kwargs)
  elif not isinstance(method, base.PruningMethod):
    raise ValueError(f"method must be a method name ({', '.join(base.available_methods())}) "
                     f"or a PruningMethod, got {type(method).__name__}.")
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
  return pruned


def strip(model, shrink=False):
  """Returns a plain Keras model (no wrappers) whose pruned weights are exact zeros.

  Args:
    model: a pruned (wrapped) model.
    shrink: also delete the units (neurons / filters) that output exact zeros, with the
      matching inputs of the next layers (`tfprune.shrink_model`): a physically smaller
      dense model with the same outputs. Raises ValueError naming the layer where a
      shape cannot shrink.
  """
  _check_graph_model(model, "tfprune.strip")
  if shrink:
    return shrink_lib.shrink_model(strip(model))

  def make_layer(layer):
    return _fresh_copy(layer.layer if isinstance(layer, PruneWrapper) else layer)

  stripped, pairs = _clone(model, make_layer)
  for old, new in pairs:
    if isinstance(old, PruneWrapper):
      new.set_weights(old.stripped_weights())
    else:
      new.set_weights(old.get_weights())
  return stripped
