"""Export targets as objects: what each runtime reads, allows and is verified with.

One `Target` per runtime family (docs/export.md, sections 2-5 and 11). The converter
(`tflite.convert`), the sparse encoder (`sparsify`), the inspector and the CLI read these
attributes instead of comparing target names; a new target is one more instance here.
"""
from __future__ import annotations

import dataclasses

from tfprune.export import micro_compress

QUANTIZE = (None, "dynamic", "int8")


def _arg(name, value, cli):
  """How an argument is named in a message: `quantize='int8'` or `--quantize=int8`."""
  if cli:
    if isinstance(value, bool):
      return f"--{name}" if value else f"--no{name}"
    return f"--{name}={'none' if value is None else value}"
  return f"{name}={value!r}"


@dataclasses.dataclass(frozen=True)
class Target:
  """A runtime family a .tflite file is exported for.

  Attributes:
    name: the `target=` value.
    runtime: what runs the file, for messages.
    quantizations: the `quantize=` values it runs.
    quantize_note: why only those, for messages.
    sparse_tensors: reads TFLite's `sparsity` field (and DENSIFY): the converter's
      sparsity pass and tfprune's sparse encodings are used.
    hybrid_ops: runs dynamic-range (float input, int8 weight) ops.
    float_islands: runs float ops inside an int8 file (QUANTIZE / DEQUANTIZE around
      them): ops int8 cannot represent stay float (`islands`, docs/export.md).
    decode_op: has TFLM's DECODE kernel (`compress=` modes other than "off").
    compress_modes: the `compress=` values it takes.
    sparse_fc_kernel: takes 1x16 int8 FC weights for an application kernel
      (`micro_sparse_kernel=True`).
    verify_runtimes: the `verify` runtimes every file is checked in.
    memory_report: `ExportResult.memory` (flash / arena / invoke time) is measured.
  """
  name: str
  runtime: str
  quantizations: tuple
  quantize_note: str
  sparse_tensors: bool
  hybrid_ops: bool
  float_islands: bool
  decode_op: bool
  compress_modes: tuple
  sparse_fc_kernel: bool
  verify_runtimes: tuple
  memory_report: bool

  def sparse_mode(self, sparse, micro_sparse_kernel=False):
    """The `sparsify.encode_model` mode for this target: `sparse` where sparse tensors
    are read (or the application's sparse FC kernel reads them), else "off"."""
    return sparse if (self.sparse_tensors or micro_sparse_kernel) else "off"

  def runtimes(self, micro_sparse_kernel=False):
    """`(runtimes for the file, runtimes for its dense twin)`: a file for an
    application's sparse FC kernel cannot run in stock TFLM, its dense twin must."""
    if micro_sparse_kernel:
      inside = tuple(r for r in self.verify_runtimes if r != "tflm")
      return inside, tuple(r for r in self.verify_runtimes if r == "tflm")
    return self.verify_runtimes, ()

  def check(self, quantize=None, sparse="auto", micro_sparse_kernel=False, compress="off",
            cli=False):
    """Raises ValueError naming the argument (or flag, `cli=True`) this target refuses."""
    target = _arg("target", self.name, cli)
    if quantize not in self.quantizations:
      needed = " or ".join(_arg("quantize", q, cli) for q in self.quantizations)
      raise ValueError(f"{target} needs {needed} ({self.runtime} {self.quantize_note}), got "
                       f"{_arg('quantize', quantize, cli)}.")
    if micro_sparse_kernel and not self.sparse_fc_kernel:
      raise ValueError(f"{_arg('micro_sparse_kernel', True, cli)} is only valid with "
                       f"{_arg('target', MICRO.name, cli)}.")
    if compress not in self.compress_modes:
      if compress in MICRO.compress_modes:
        raise ValueError(f"{_arg('compress', compress, cli)} is only valid with "
                         f"{_arg('target', MICRO.name, cli)} (TFLite Micro's DECODE op; "
                         f"{self.runtime} has none): use {_arg('sparse', 'auto', cli)} "
                         f"(sparse tensors) for {self.runtime}.")
      raise ValueError(f"compress must be one of {self.compress_modes}, got {compress!r}.")
    if compress != "off" and micro_sparse_kernel:
      raise ValueError(f"{_arg('compress', compress, cli)} and "
                       f"{_arg('micro_sparse_kernel', True, cli)} cannot be combined: the "
                       f"sparse FC kernel reads block-sparse weights in place, DECODE "
                       f"compression replaces them; pick one.")
    if sparse == "csr" and quantize is not None:
      raise ValueError(
          f"{_arg('sparse', 'csr', cli)} is not valid with {_arg('quantize', quantize, cli)}: "
          f"quantized ops cannot read CSR weights directly; use {_arg('sparse', 'auto', cli)} "
          f"or {_arg('sparse', 'block', cli)}.")


LITERT = Target(
    name="litert", runtime="LiteRT", quantizations=QUANTIZE, quantize_note="",
    sparse_tensors=True,
    hybrid_ops=True, float_islands=True, decode_op=False, compress_modes=("off",),
    sparse_fc_kernel=False,
    verify_runtimes=("xnnpack", "builtin"), memory_report=False)
MICRO = Target(
    name="micro", runtime="TFLite Micro", quantizations=("int8",),
    quantize_note="runs full-int8 models and refuses dynamic-range ones",
    sparse_tensors=False,
    hybrid_ops=False, float_islands=False, decode_op=True,
    compress_modes=micro_compress.COMPRESS_MODES,
    sparse_fc_kernel=True, verify_runtimes=("xnnpack", "builtin", "tflm"),
    memory_report=True)
TARGETS = {t.name: t for t in (LITERT, MICRO)}


def get(name):
  """The `Target` called `name`; ValueError listing the valid names otherwise."""
  if name not in TARGETS:
    raise ValueError(f"target must be one of {tuple(TARGETS)}, got {name!r}.")
  return TARGETS[name]
