"""Data: which data set, where it lives, how much of it."""
from absl import flags

from tfprune import data as data_lib

DATASET_FORMS = data_lib.NAMES + ("npz:PATH", "images:DIR")

flags.DEFINE_string(
    "dataset", "mnist",
    f"[data] Training data: a bundled data set ({', '.join(data_lib.NAMES)}), "
    f"npz:PATH (an .npz with arrays x_train, y_train, x_test, y_test, used as they are) "
    f"or images:DIR (DIR/train/<class>/* and DIR/test/<class>/*, raw 0-255 values, "
    f"resized to the model's input).")
flags.DEFINE_string("data_dir", None, "[data] Directory with the bundled data set's files "
                    "(else $TFPRUNE_DATA_DIR / the cache / the packaged files). Must "
                    "exist.")
flags.DEFINE_integer("train_samples", None, "[data] Use only the first N training samples "
                     "(quick runs).", lower_bound=1)
flags.DEFINE_integer("test_samples", None, "[data] Use only the first N test samples for "
                     "validation and the reported accuracy (quick runs).", lower_bound=1)


@flags.validator("dataset", message=f"--dataset must be one of {', '.join(DATASET_FORMS)}.")
def _check_dataset(value):
  if value in data_lib.NAMES:
    return True
  kind, sep, rest = value.partition(":")
  return bool(sep) and kind in ("npz", "images") and bool(rest)
