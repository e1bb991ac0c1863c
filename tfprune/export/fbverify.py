"""Bounds-checking verifier for TFLite flatbuffers, run before any object-API read.

The flatbuffers Python runtime trusts every offset it reads: a corrupt vtable
offset makes it read from the wrong place (Python's negative indexing reads from
the end of the buffer), a corrupt string length silently truncates, and shared or
hostile offsets make the object API unpack the same tables over and over. This
module does in Python what the C++ `flatbuffers::Verifier` does for
`VerifyModelBuffer`: it walks every table, vtable, string, vector and union the
schema's Python reader would touch and checks that each lies inside the buffer,
with a depth limit and a table budget proportional to the file size, so the
object-API parse that follows (`graph.load`) reads only verified bytes and its
work is linear in the file size.

The table layout is derived once from the installed `schema_py_generated` module
(the same code the object API runs), so it always matches the reader that follows.
"""
import inspect as _pyinspect
import re
import struct

from ai_edge_litert import schema_py_generated as schema
from flatbuffers import number_types
from tfprune.export import errors

MAX_DEPTH = 64  # as flatbuffers::Verifier's default max_depth
MAX_BUFFER_SIZE = 2**31 - 1  # flatbuffers' limit (FLATBUFFERS_MAX_BUFFER_SIZE)
ROOT_TABLE = "Model"

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


_layout_cache = None


def _widths():
  return {name[:-len("Flags")]: getattr(number_types, name).bytewidth
          for name in dir(number_types) if name.endswith("Flags")}


_METHOD = re.compile(r"\n    def (\w+)\(self(?:, j)?\):\n((?:(?:        .*)?\n)*)")
_CREATOR_CALL = re.compile(r"= (\w+)Creator\(self\.\w+, \w+\.(\w+)\(\)\)")
_CREATOR_CASE = re.compile(r"if unionType == (\w+)\.(\w+):\n\s+return (\w+)T\.InitFromBuf")


def _classify(body, widths):
  """(slot, kind, arg) of one generated accessor body, or None for helpers."""
  m = re.search(r"self\._tab\.Offset\((\d+)\)", body)
  if not m or "VectorLen(" in body or "GetVectorAsNumpy(" in body or "return o == 0" in body:
    return None
  slot = int(m.group(1))
  obj = re.search(r"obj = (\w+)\(\)", body)
  get = re.search(r"Get\(flatbuffers\.number_types\.(\w+)Flags, (a|o) \+", body)
  if "self._tab.Union(" in body:
    return slot, "union", None
  if "self._tab.Vector(o)" in body:
    if "self._tab.Indirect(x)" in body and obj:
      return slot, "tables", obj.group(1)
    if "self._tab.String(" in body:
      return slot, "strings", None
    if get and get.group(2) == "a":
      return slot, "scalars", widths[get.group(1)]
    return slot, "unknown", None
  if "self._tab.Indirect(o + self._tab.Pos)" in body and obj:
    return slot, "table", obj.group(1)
  if "self._tab.String(o + self._tab.Pos)" in body:
    return slot, "string", None
  if get and get.group(2) == "o":
    return slot, "scalar", widths[get.group(1)]
  return slot, "unknown", None


def layout():
  """Per table name: list of (vtable slot, kind, arg, field name), from the generated reader.

  Kinds: "scalar" (arg: byte width), "string", "table" (arg: table name),
  "scalars" (vector; arg: element width), "tables" (vector; arg: table name),
  "strings" (vector), "union" (arg: (type slot, {type value: table name})) and
  "unknown" (checked only to lie inside its table).
  """
  global _layout_cache  # pylint: disable=global-statement
  if _layout_cache is not None:
    return _layout_cache
  source = _pyinspect.getsource(schema)
  widths = _widths()
  chunks = re.split(r"\n(?=class \w+\(object\):)", source)
  classes, creators = {}, {}
  for chunk in chunks:
    head = re.match(r"class (\w+)\(object\):", chunk)
    if head:
      classes[head.group(1)] = chunk
  for m in re.finditer(r"\ndef (\w+)Creator\(unionType, table\):\n((?:(?:    .*)?\n)*)", source):
    creators[m.group(1)] = {int(getattr(getattr(schema, enum), member)): table
                            for enum, member, table in _CREATOR_CASE.findall(m.group(2))}
  result = {}
  for name, chunk in classes.items():
    if "self._tab = flatbuffers.table.Table(buf, pos)" not in chunk:
      continue  # enums and object-API (...T) classes
    fields, by_name = [], {}
    for method, body in _METHOD.findall(chunk):
      field = _classify(body, widths)
      if field is not None:
        fields.append(field + (method,))
        by_name[method] = field
    obj_api = classes.get(name + "T", "")
    for union, accessor in _CREATOR_CALL.findall(obj_api):
      slot = by_name[accessor][0]
      type_slot = by_name[accessor + "Type"][0]
      fields = [(s, k, (type_slot, creators.get(union, {})) if s == slot else a, n)
                for s, k, a, n in fields]
    fields = [(s, "unknown", None, n) if k == "union" and a is None else (s, k, a, n)
              for s, k, a, n in fields]
    unique = {}
    for field in fields:
      if unique.setdefault(field[0], field) != field:
        raise RuntimeError(f"schema_py_generated: {name} reads vtable slot {field[0]} as both "
                           f"{unique[field[0]][1]} and {field[1]}")
    result[name] = [unique[s] for s in sorted(unique)]
  _layout_cache = result
  return result


class _Verifier:
  """One verification pass over `data` (see `verify`)."""

  def __init__(self, data, label):
    self.data = data
    self.size = len(data)
    self.label = label
    self.layout = layout()
    self.tables_left = self.size // 4 + 16
    self.path = []

  def fail(self, what):
    where = "/".join(self.path) or ROOT_TABLE
    raise errors.MalformedFlatbufferError(f"{self.label}: corrupt TFLite flatbuffer at {where}: {what}")

  def check(self, pos, n, what):
    if pos < 0 or n < 0 or pos + n > self.size:
      self.fail(f"{what} [{pos}, {pos + n}) outside the file of {self.size} bytes")

  def u16(self, pos):
    self.check(pos, 2, "uint16")
    return _U16.unpack_from(self.data, pos)[0]

  def u32(self, pos, what="offset"):
    self.check(pos, 4, what)
    return _U32.unpack_from(self.data, pos)[0]

  def deref(self, pos, what):
    """Target of the uoffset stored at `pos`."""
    target = pos + self.u32(pos, what)
    self.check(target, 4, what)
    return target

  def vector(self, pos, width, what):
    """(first element position, length) of the vector whose uoffset is at `pos`."""
    start = self.deref(pos, what)
    n = self.u32(start, f"{what} length")
    if n * width > self.size - start - 4:
      self.fail(f"{what} claims {n} elements of {width} bytes, more than the "
                f"{self.size - start - 4} bytes left in the file")
    return start + 4, n

  def string(self, pos, what):
    start, n = self.vector(pos, 1, what)
    self.check(start, n + 1, f"{what} (with its terminating zero)")

  def table(self, pos, name, depth):
    if depth > MAX_DEPTH:
      self.fail(f"tables nested deeper than {MAX_DEPTH}")
    self.tables_left -= 1
    if self.tables_left < 0:
      self.fail(f"more tables than a file of {self.size} bytes can hold (shared or cyclic "
                "offsets)")
    self.check(pos, 4, f"{name} table")
    vt = pos - _I32.unpack_from(self.data, pos)[0]
    vt_size = self.u16(vt)
    obj_size = self.u16(vt + 2)
    if vt_size < 4 or vt_size % 2:
      self.fail(f"{name} vtable size {vt_size} (must be even and >= 4)")
    self.check(vt, vt_size, f"{name} vtable")
    if obj_size < 4:
      self.fail(f"{name} table size {obj_size} (must be >= 4)")
    self.check(pos, obj_size, f"{name} table")
    fields = self.layout.get(name)
    if fields is None:
      self.fail(f"unknown table type {name}")

    def field_pos(slot, width):
      if slot + 2 > vt_size:
        return None
      off = _U16.unpack_from(self.data, vt + slot)[0]
      if off == 0:
        return None
      if off + width > obj_size:
        self.fail(f"{name} field at vtable slot {slot} (offset {off}, {width} bytes) outside "
                  f"its table of {obj_size} bytes")
      return pos + off

    for slot, kind, arg, field in fields:
      width = arg if kind == "scalar" else (1 if kind == "unknown" else 4)
      p = field_pos(slot, width)
      if p is None or kind in ("scalar", "unknown"):
        continue
      self.path.append(f"{name}.{field}")
      if kind == "string":
        self.string(p, "string")
      elif kind == "table":
        self.table(self.deref(p, f"{arg} offset"), arg, depth + 1)
      elif kind == "scalars":
        self.vector(p, arg, "vector")
      elif kind == "strings":
        start, n = self.vector(p, 4, "string vector")
        for i in range(n):
          self.string(start + 4 * i, f"string {i}")
      elif kind == "tables":
        start, n = self.vector(p, 4, f"{arg} vector")
        if n > self.tables_left:
          self.fail(f"{n} {arg} tables, more than a file of {self.size} bytes can hold")
        for i in range(n):
          self.path[-1] = f"{name}.{field}[{i}]"
          self.table(self.deref(start + 4 * i, f"{arg} offset"), arg, depth + 1)
      elif kind == "union":
        type_slot, members = arg
        tp = field_pos(type_slot, 1)
        utype = 0 if tp is None else self.data[tp]
        member = members.get(utype)
        if member is not None:  # the object API ignores unknown union types
          self.table(self.deref(p, f"{member} offset"), member, depth + 1)
      self.path.pop()


def verify(data, label="<bytes>"):
  """Checks that every part of a TFLite flatbuffer the reader will touch is in bounds.

  Args:
    data: the file's bytes (bytes, bytearray or memoryview).
    label: file name used in error messages.

  Raises:
    errors.MalformedFlatbufferError: naming the table path and the offending offset or length.
  """
  data = bytes(data)
  v = _Verifier(data, label)
  if len(data) > MAX_BUFFER_SIZE:
    v.fail(f"{len(data)} bytes is above the {MAX_BUFFER_SIZE}-byte flatbuffer limit")
  v.table(v.deref(0, "root table offset"), ROOT_TABLE, 0)
