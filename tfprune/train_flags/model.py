"""Model: the zoo model to train, or your own trained model."""
from absl import flags

from tfprune import zoo

flags.DEFINE_enum("model", "lenet_300_100", zoo.NAMES, "[model] Zoo model to train "
                  "(ignored with --load_model).")
flags.DEFINE_string("load_model", None, "[model] Start from this trained dense .keras "
                    "model instead of training one (then --dense_epochs is ignored).")
flags.DEFINE_string("image_size", None, "[model] HxW (or N for NxN): build the zoo model "
                    "at this image size and resize the --dataset images to it (bilinear, "
                    "a data step before training), e.g. --model=resnet8 "
                    "--dataset=fashion_mnist --image_size=32 for the MLPerf Tiny 32x32x1 "
                    "input. Default: the data's own size. Not with --load_model (its "
                    "input decides).")


def parse_image_size(value):
  """`"32"` -> (32, 32), `"32x48"` -> (32, 48); None -> None.

  Raises:
    ValueError: naming the flag and the accepted forms.
  """
  if value is None:
    return None
  parts = str(value).lower().split("x")
  try:
    size = tuple(int(p) for p in parts)
  except ValueError:
    size = ()
  if len(size) == 1:
    size = size * 2
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"--image_size must be N or HxW with positive integers (e.g. 32 or "
                     f"32x32), got {value!r}.")
  return size


@flags.validator("image_size", message="--image_size must be N or HxW with positive "
                 "integers (e.g. 32 or 32x32).")
def _check_image_size(value):
  try:
    parse_image_size(value)
  except ValueError:
    return False
  return True
