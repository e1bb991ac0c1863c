"""tfprune-inspect: per-tensor formats, sizes, known-broken patterns and corruption of .tflite files.

Usage: tfprune-inspect model.tflite [more.tflite ...] [--target=micro] [--strict]

Exit status (the most serious over all files): 1 if a file cannot be read (missing,
truncated, not TFLite), 3 if a file exported by tfprune fails its checksum (corrupt),
2 if a file has warnings and --strict, else 0.
"""
import sys

from absl import app
from absl import flags

from tfprune import export
from tfprune.bin import _cli
from tfprune.export import targets

_TARGET = flags.DEFINE_enum("target", None, list(targets.TARGETS),
                            "Runtime the file is meant for (default: from its tfprune metadata).")
_STRICT = flags.DEFINE_bool("strict", False, "Exit with status 2 when any warning is found.")

EXIT_UNREADABLE = 1
EXIT_WARNINGS = 2
EXIT_CORRUPT = 3
_SEVERITY = {0: 0, EXIT_WARNINGS: 1, EXIT_CORRUPT: 2, EXIT_UNREADABLE: 3}


def _status(path):
  """Prints the report of one file; returns its exit status."""
  try:
    report = export.inspect(path, target=_TARGET.value)
  except export.InvalidTFLiteError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return EXIT_UNREADABLE
  print(report.format_table())
  if report.corruption:
    print(f"ERROR: {path}: corrupt file: {'; '.join(report.corruption)}", file=sys.stderr)
    return EXIT_CORRUPT
  return EXIT_WARNINGS if report.warnings and _STRICT.value else 0


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give at least one .tflite file: tfprune-inspect model.tflite")
  return max((_status(path) for path in paths), key=_SEVERITY.get)


def run():
  _cli.run(main, __name__)


if __name__ == "__main__":
  run()
