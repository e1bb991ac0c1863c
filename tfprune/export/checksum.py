"""CRC32 checksums of an exported file, stored in its tfprune metadata.

At export, `dump_with_metadata` records in the metadata JSON (key "crc32"):

* "buffers": the CRC32 of every buffer's bytes (weights, biases, sparse index
  constants, converter metadata), in buffer order, as base64 of little-endian
  uint32s (4 bytes per buffer before base64), so a corrupt weight is located;
* "file": the CRC32 of the whole serialized file with these 8 hex digits
  written as "00000000", so corruption anywhere else (op wiring, shapes,
  quantization scales, the metadata itself) is caught too.

CRC32 detects every burst error up to 32 bits and random corruption with
probability 1 - 2**-32; it is not a signature and does not protect against
deliberate tampering. `check` recomputes both on a parsed file and describes
each mismatch; the buffers tfprune appends after the checksum is taken (its own
metadata buffer) are covered by the file checksum only.
"""
import base64
import json
import zlib

import numpy as np

from ai_edge_litert import schema_py_generated as schema

from tfprune.export import graph

KEY = "crc32"  # the algorithm; a later one would use its own key
_PLACEHOLDER = b"00000000"
_FILE_FIELD = b'"file":"'


def buffer_crcs(model):
  """CRC32 of each buffer of `model` (a `schema.ModelT`), in buffer order."""
  out = []
  for buf in model.buffers or []:
    data = b"" if buf.data is None else np.asarray(buf.data, np.uint8).tobytes()
    out.append(zlib.crc32(data))
  return out


def _encode(crcs):
  return base64.b64encode(np.asarray(crcs, "<u4").tobytes()).decode("ascii")


def _decode(text):
  raw = base64.b64decode(text.encode("ascii"), validate=True)
  if len(raw) % 4:
    raise ValueError(f"{len(raw)} bytes is not a whole number of CRC32 values")
  return [int(c) for c in np.frombuffer(raw, "<u4")]


def _file_field(meta_bytes):
  """Position of the file CRC's 8 hex digits inside the metadata JSON bytes."""
  pos = meta_bytes.rfind(_FILE_FIELD)
  if pos < 0:
    return None
  pos += len(_FILE_FIELD)
  return pos if meta_bytes[pos + 8:pos + 9] == b'"' else None


def _file_crc(data, start):
  """CRC32 of `data` with the 8 bytes at `start` read as the placeholder."""
  crc = zlib.crc32(data[:start])
  crc = zlib.crc32(_PLACEHOLDER, crc)
  return zlib.crc32(data[start + 8:], crc)


def dump_with_metadata(model, name, meta):
  """Serializes `model` with metadata `name` = `meta` JSON plus checksums.

  Args:
    model: `schema.ModelT` in its final form (modified: the metadata is added).
    name: metadata entry name.
    meta: JSON-serializable dict; a "crc32" entry is added (see the module docstring).

  Returns:
    The .tflite bytes.
  """
  meta = dict(meta)
  meta[KEY] = {"buffers": _encode(buffer_crcs(model)), "file": _PLACEHOLDER.decode()}
  meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
  graph.set_metadata(model, name, meta_bytes)
  data = bytearray(graph.dump(model))
  _, index = graph.metadata_entry(model, name)
  start, length = graph.buffer_data_span(data, index)
  if bytes(data[start:start + length]) != meta_bytes:
    raise RuntimeError(f"metadata '{name}' was not serialized verbatim at buffer {index}; "
                       "cannot write its file checksum.")
  field = start + _file_field(meta_bytes)
  data[field:field + 8] = b"%08x" % _file_crc(data, field)
  return bytes(data)


def _raw_file(data):
  """(buffer bytes list, {metadata name: buffer}, {buffer: tensor names}) in file order.

  Read with the flatbuffer accessors, not the object API: `graph.load` drops empty
  buffers and renumbers the rest, while the checksums follow the file's order.
  """
  root = schema.Model.GetRootAs(data, 0)
  buffers = []
  for i in range(root.BuffersLength()):
    vec = root.Buffers(i).DataAsNumpy()
    buffers.append(b"" if isinstance(vec, int) else vec.tobytes())
  entries = {}
  for i in range(root.MetadataLength()):
    m = root.Metadata(i)
    entries.setdefault(graph.text(m.Name()), m.Buffer())
  owners = {}
  for s in range(root.SubgraphsLength()):
    sg = root.Subgraphs(s)
    for t in range(sg.TensorsLength()):
      tensor = sg.Tensors(t)
      names = owners.setdefault(tensor.Buffer(), [])
      if len(names) < 3 and tensor.Buffer():  # buffer 0 is the shared empty buffer
        names.append(f"'{graph.text(tensor.Name())}'" + (f" of subgraph {s}" if s else ""))
  return buffers, entries, owners


def check(data, name):
  """Recomputes the checksums of a TFLite file.

  Args:
    data: the file bytes, already verified by `fbverify.verify`.
    name: metadata entry name.

  Returns:
    (status, findings): status "absent" (no tfprune metadata or no checksum in
    it), "ok" or "mismatch"; findings is a list of strings, one per mismatch.
  """
  data = bytes(data)
  buffers, entries, owners = _raw_file(data)
  index = entries.get(name)
  if index is None or index >= len(buffers):
    return "absent", []
  raw = buffers[index]
  try:
    meta = json.loads(raw.decode("utf-8"))
  except ValueError:
    return "mismatch", [f"tfprune metadata '{name}' is unreadable (not UTF-8 JSON): the file "
                        "is corrupt"]
  info = meta.get(KEY) if isinstance(meta, dict) else None
  if info is None:
    return "absent", []
  try:
    if not isinstance(info, dict):
      raise ValueError(f"not a dict: {str(info)[:60]!r}")
    stored = _decode(str(info["buffers"]))
    stored_file = int(str(info["file"]), 16)
  except (ValueError, KeyError, TypeError) as e:
    return "mismatch", [f"checksum entry of metadata '{name}' is unreadable ({e}): the file is "
                        "corrupt"]
  findings = []
  if len(buffers) < len(stored):
    findings.append(f"checksum mismatch: the file has {len(buffers)} buffers, the checksum "
                    f"lists {len(stored)}")
  for i, (want, buf) in enumerate(zip(stored, buffers)):
    got = zlib.crc32(buf)
    if want != got:
      what = f" (tensor {', '.join(owners[i])})" if owners.get(i) else ""
      findings.append(f"checksum mismatch in buffer {i}{what}: stored crc32 {want:08x}, "
                      f"file has {got:08x}")
  start, _ = graph.buffer_data_span(data, index)
  field = _file_field(raw)
  if field is None:
    findings.append("checksum mismatch: the file checksum field is missing from the metadata")
  elif not findings and _file_crc(data, start + field) != stored_file:
    findings.append(
        f"checksum mismatch outside the weight buffers: stored file crc32 {stored_file:08x}, "
        f"file has {_file_crc(data, start + field):08x} (graph, shapes, quantization "
        "parameters or metadata changed after export: corruption, or the file was "
        "rewritten by another tool)")
  return ("mismatch" if findings else "ok"), findings
