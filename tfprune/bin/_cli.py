"""Shared entry point of the tfprune binaries: `--help` that works through console scripts.

absl's `--help` lists the key flags of `__main__` and exits with status 1. Through an
installed console script `__main__` is the entry-point shim, which defines no flags, so
`tfprune-train --help` printed only `USAGE: ... [flags]`. `run(main, module)` answers
`--help` (`-?`, `--helpshort`) with the binary's docstring and its own flags, and
`--helpfull` with every flag, both on stdout with exit status 0; everything else goes to
`absl.app.run(main)` unchanged.

A binary may group its flags in the help text by defining, at module level,
`FLAG_GROUPS = {"data": ["dataset", ...], "model": [...], ...}`; flags it does not list
are shown under "other". Without it, the flags are listed as absl lists them.
"""
import sys
import textwrap
import types
from typing import Any, Callable

from absl import app
from absl import flags

HELP = ("--help", "-help", "-?", "--helpshort", "-helpshort")
HELPFULL = ("--helpfull", "-helpfull")


def _wanted(argv, names):
  for arg in argv[1:]:
    if arg == "--":  # absl stops parsing flags here
      return False
    if arg in names or arg.split("=", 1)[0] in names and arg.endswith(("=true", "=1")):
      return True
  return False


def _doc(module):
  doc = (module.__doc__ or "").strip("\n")
  name = _program_name()
  if not doc:
    return f"USAGE: {name} [flags]\n"
  return f"{textwrap.dedent(doc)}\n\nUSAGE: {name} [flags]\n"


def _program_name():
  import os  # pylint: disable=g-import-not-at-top
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tfprune"


def _key_flags(module, flag_values):
  """The flags `module` defines (absl files them under the module's name, or under
  sys.argv[0] when the module runs as `__main__`)."""
  by_module = flag_values.flags_by_module_dict()
  for key in (module.__name__, getattr(module, "__file__", None), sys.argv[0]):
    if key in by_module:
      return key, list(by_module[key])
  return None, []


def _flag_help(flag):
  """One flag's help entry, in absl's layout (name, help, allowed values, default)."""
  if flag.parser.flag_type() == "bool":
    head = f"  --[no]{flag.name}"
    default = "'true'" if flag.default else "'false'"
  else:
    head = f"  --{flag.name}"
    default = flag.default_as_str if flag.default_as_str is not None else "None"
  if flag.short_name:
    head += f" (-{flag.short_name})"
  body = [flag.help or ""]
  allowed = getattr(flag.parser, "syntactic_help", "") or ""
  if allowed.startswith(("<", "a ")) and "|" in allowed:  # enums: <a|b|c>
    body.append(allowed)
  body.append(f"(default: {default})")
  wrapped = "\n".join(textwrap.fill(line, width=80) for line in body if line)
  return head + ":\n" + textwrap.indent(wrapped, "    ")


def help_text(module: types.ModuleType, full: bool = False,
              flag_values: "flags.FlagValues | None" = None) -> str:
  """The `--help` (or `--helpfull`) text of the binary defined by `module`.

  Args:
    module: the binary's module (its docstring, flags and optional FLAG_GROUPS).
    full: every flag (`--helpfull`), not only the binary's own.
    flag_values: the `absl.flags.FlagValues` (default `absl.flags.FLAGS`).
  """
  flag_values = flags.FLAGS if flag_values is None else flag_values
  out = [_doc(module)]
  if full:
    out.append("flags:\n" + flag_values.get_help())
    return "\n".join(out) + "\n"
  if hasattr(module, "grouped_help"):  # the binary groups its own flags
    out.append(module.grouped_help())
    out.append("Try --helpfull to get a list of all flags (TensorFlow's and absl's too).")
    return "\n".join(out) + "\n"
  key, own = _key_flags(module, flag_values)
  groups = getattr(module, "FLAG_GROUPS", None)
  if own and groups:
    by_name = {f.name: f for f in own}
    listed = set()
    for group, names in groups.items():
      members = [by_name[n] for n in names if n in by_name]
      listed.update(f.name for f in members)
      if members:
        out.append(f"{group} flags:\n" + "\n".join(_flag_help(f) for f in members) + "\n")
    rest = [f for f in own if f.name not in listed]
    if rest:
      out.append("other flags:\n" +
                 "\n".join(_flag_help(f) for f in sorted(rest, key=lambda f: f.name)) + "\n")
  elif own:
    out.append("flags:\n" + flag_values.module_help(key) + "\n")
  out.append("Try --helpfull to get a list of all flags (TensorFlow's and absl's too).")
  return "\n".join(out) + "\n"


def answer_help(module_name: str) -> None:
  """Prints the binary's --help / --helpfull text and exits 0 if it was asked for."""
  module = sys.modules[module_name]
  full = _wanted(sys.argv, HELPFULL)
  if full or _wanted(sys.argv, HELP):
    sys.stdout.write(help_text(module, full=full))
    sys.stdout.flush()
    sys.exit(0)


def subcommand_argv(argv, name, module):
  """The command line that runs `module` for `argv` = [prog, name, *rest], else None
  (e.g. `tfprune-export inspect f.tflite` -> `python -m tfprune.bin.inspect f.tflite`)."""
  if len(argv) > 1 and argv[1] == name:
    return [sys.executable, "-m", module] + list(argv[2:])
  return None


def run(main: Callable[[list[str]], Any], module_name: str) -> None:
  """Runs `main` like `absl.app.run`, answering --help/--helpfull itself (exit 0).

  Args:
    main: the binary's `main(argv)`.
    module_name: the binary module's `__name__` (its docstring and flags are shown).
  """
  answer_help(module_name)
  app.run(main)


def parse_input_shapes(text):
  """--input_shapes -> None, a shape tuple (single input) or `{name: shape}`."""
  if not text:
    return None

  def dims(part, entry):
    try:
      shape = tuple(int(d) for d in part.split("x"))
    except ValueError:
      shape = ()
    if not shape or any(d < 1 for d in shape):
      raise ValueError(f"--input_shapes={text}: '{entry}' is not a shape; write positive ints "
                       f"joined by 'x' (batch left out), e.g. token_ids:128 or image:32x32x3.")
    return shape

  entries = [e.strip() for e in text.split(",") if e.strip()]
  if len(entries) == 1 and ":" not in entries[0]:
    return dims(entries[0], entries[0])
  out = {}
  for entry in entries:
    name, sep, part = entry.rpartition(":")
    if not sep or not name:
      raise ValueError(f"--input_shapes={text}: '{entry}' needs the input name: name:DxD.")
    out[name] = dims(part, entry)
  return out
