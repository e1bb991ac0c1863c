"""Model: the zoo model to train, or your own trained model."""
from absl import flags

from tfprune import zoo

flags.DEFINE_enum("model", "lenet_300_100", zoo.NAMES, "[model] Zoo model to train "
                  "(ignored with --load_model).")
flags.DEFINE_string("load_model", None, "[model] Start from this trained dense .keras "
                    "model instead of training one (then --dense_epochs is ignored).")
