"""Keras layer traversal shared by training code and the exporter (no TF graph logic)."""
import keras


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
