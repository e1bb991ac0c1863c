"""tfprune-inspect: per-tensor formats, sizes and known-broken patterns of .tflite files.

Usage: tfprune-inspect model.tflite [more.tflite ...] [--target=micro]
Exit status 1 if a file cannot be read, 2 if a file has warnings and --strict.
"""
import sys

from absl import app
from absl import flags

from tfprune import export
from tfprune.bin import _cli

_TARGET = flags.DEFINE_enum("target", None, ["litert", "micro"],
                            "Runtime the file is meant for (default: from its tfprune metadata).")
_STRICT = flags.DEFINE_bool("strict", False, "Exit with status 2 when any warning is found.")


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give at least one .tflite file: tfprune-inspect model.tflite")
  status = 0
  for path in paths:
    try:
      report = export.inspect(path, target=_TARGET.value)
    except export.InvalidTFLiteError as e:
      print(f"ERROR: {e}", file=sys.stderr)
      status = 1
      continue
    print(report.format_table())
    if report.warnings and _STRICT.value and status == 0:
      status = 2
  return status


def run():
  _cli.run(main, __name__)


if __name__ == "__main__":
  run()
