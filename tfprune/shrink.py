"""`shrink_model`: a smaller DENSE Keras model with the same outputs (the one shrink engine).

Structured pruning (`scope="structured"` masks, closed `l0_gates`) leaves channels that no
layer reads any more, or that are input-independent constants. `shrink_model` deletes them
through the channel dependency graph (`tfprune.structured.ChannelGraph`: residual `Add`s,
BatchNormalization, depthwise convs, concatenations, channel-axis splits, Flatten, attention
heads), folding constants exactly into the readers' biases (`tfprune.structured.shrink`),
and returns a new model whose layers are narrower - what a microcontroller needs, since
stock TFLM runs dense kernels only (docs/export.md). `tfprune.strip(pruned, shrink=True)`
calls it.

It is never silently wrong: the smaller model is compared with the original on probe
inputs before it is returned (`tfprune.structured.ShrinkMismatchError` otherwise, naming
the layer), and a dead channel that has to stay is reported. Nodes the graph does not
understand block their channels (docs/structured.md section 4). This replaced, in 0.3, an
older walk over `_keras_history` that handled chains only; there is no fallback.
"""
import numpy as np


def _as_graph(model):
  import keras  # pylint: disable=import-outside-toplevel
  if not isinstance(model, keras.Model):
    raise ValueError(f"shrink needs a keras.Model, got {type(model).__name__}.")
  try:
    inputs, outputs = model.inputs, model.outputs
  except (AttributeError, ValueError):
    inputs = outputs = None
  if not inputs or not outputs:
    raise ValueError(f"shrink needs a built Sequential or Functional model; "
                     f"{model.name!r} has no symbolic inputs/outputs.")
  return inputs, outputs


def count_params_and_macs(model):
  """(parameters, multiply-accumulates per sample) of a model.

  MACs are `tfprune.structured.layer_costs` (the one MAC count: Dense, Conv, Conv
  transpose, Depthwise, Separable, EinsumDense, MultiHeadAttention); parameters are all
  of the model's.
  """
  from tfprune.structured import report  # pylint: disable=import-outside-toplevel
  macs = sum(m for _, m in report.layer_costs(model).values())
  return int(model.count_params()), int(macs)


def _dead_output(arrays, layer, member):
  """Whether the output channel `member` of producer `layer` has all-zero weights from
  the input (the weights it owns: `members.member_slices`, biases aside)."""
  from tfprune.structured import members  # pylint: disable=import-outside-toplevel
  return not any(np.any(np.take(arrays[name], idx, axis=axis))
                 for name, axis, idx in members.member_slices(layer, member)
                 if not name.endswith("bias"))


def shrink_model(model, strict=False, data=None):
  """The exact channel shrink of a plain model through its channel dependency graph.

  Deletes every channel unit (`tfprune.structured.ChannelGraph`) that no layer reads any
  more (its reader rows are zero: `scope="structured"` masks) or that is an
  input-independent constant folded exactly into its readers' biases (closed L0 gates,
  a zeroed conv before BatchNormalization): `tfprune.structured.shrink`, which verifies
  the result on probe inputs.

  Never silent: a producer channel that is dead (zero weights from the input) but
  stays is reported - a `UserWarning` naming the layer and why, or with `strict` a
  ValueError when a merge ties it to a live channel of another layer, or when nothing
  at all could be removed.

  Args:
    model: a plain Functional or Sequential model (e.g. `tfprune.strip(pruned)`).
    strict: raise instead of warning (structured methods: their masks remove whole
      channels, so a dead channel that stays is a wrong graph or a gate layout the
      shrink cannot honour).
    data: optional probe inputs for the constants (default random).

  Returns:
    The smaller model (`model` itself when nothing could be removed).

  Raises:
    ValueError: subclassed or unbuilt model; with `strict`, dead channels that must stay.
    tfprune.structured.ShrinkMismatchError: the smaller model would differ from `model`.
  """
  import warnings  # pylint: disable=import-outside-toplevel
  from tfprune.structured import depgraph  # pylint: disable=import-outside-toplevel
  from tfprune.structured import slicing  # pylint: disable=import-outside-toplevel
  _as_graph(model)
  graph = depgraph.ChannelGraph(model)
  new_model, report = slicing.shrink(model, data=data, graph=graph)
  flat = graph.model  # (nested models inlined: their layers by name)
  removed = report["removed"]
  arrays = {}
  problems = []
  for g, group in enumerate(graph.groups):
    dead_units, mixed = [], []
    for members in group.units:
      outs = [m for m in members if m.role == "out"]
      for m in outs:
        if m.layer not in arrays:
          arrays[m.layer] = slicing.weight_arrays(flat.get_layer(m.layer))
      dead = [(m.layer, int(m.index)) for m in outs
              if _dead_output(arrays[m.layer], flat.get_layer(m.layer), m)]
      outs = [(m.layer, int(m.index)) for m in outs]
      if dead and len(dead) < len(outs):
        mixed.append((dead[0], next(o for o in outs if o not in dead)))
      elif dead:
        dead_units.append(dead[0])
    if mixed:
      (dl, dc), (al, ac) = mixed[0]
      where = (f"layer {group.merges[0]!r} merges inputs with different dead channels"
               if group.merges else "its layers have different dead channels")
      problems.append((True, f"{where}: channel {dc} of {dl!r} is dead but the channel "
                             f"it is tied to in {al!r} (channel {ac}) is alive "
                             f"({len(mixed)} such channels); prune both sides alike "
                             f"(scope='structured' does)"))
    lost = len(dead_units) - removed.get(g, 0)
    if lost > 0 and (group.blocked or g in report["kept"]):
      why = group.blocked or report["kept"][g]
      problems.append((False, f"{lost} dead channel(s) of "
                              f"{', '.join(repr(p) for p in group.producers)} "
                              f"stay: {why}"))
  from tfprune.structured import blocks  # pylint: disable=import-outside-toplevel
  kept_in_blocks = blocks.kept_notes(graph, report["kept"])  # [blocks hook]
  if kept_in_blocks:  # zeroed units a block cannot lose: the model is right, not smaller
    warnings.warn(f"shrink of model {model.name!r}: {'; '.join(kept_in_blocks)}.",
                  stacklevel=3)
  if problems:
    nothing = not removed
    text = "; ".join(p for _, p in problems)
    if strict and (nothing or any(hard for hard, _ in problems)):
      raise ValueError(f"shrink of model {model.name!r}: "
                       f"{'nothing could be removed: ' if nothing else ''}{text}.")
    warnings.warn(f"shrink of model {model.name!r}: {text}.", stacklevel=3)
  return new_model
