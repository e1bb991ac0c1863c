"""Keras layer traversal shared by training code and the exporter (no TF graph logic)."""


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
