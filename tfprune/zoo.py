"""Reference models for the pruning experiments (Keras 3 functional API).

Every model outputs logits (no softmax): compile with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

* `lenet_300_100`: LeCun et al. 1998, the fully connected net of Han et al. 2015
  ("Learning both Weights and Connections for Efficient Neural Networks").
* `lenet5`: the Caffe LeNet-5 variant used by Han et al. 2015 and most pruning papers
  (20 and 50 5x5 filters, 500 hidden units; 430,500 kernel weights on 28x28x1).
* `resnet_cifar`: the CIFAR ResNet of He et al. 2016 ("Deep Residual Learning for Image
  Recognition", section 4.2): depth 6n+2, three stages of 16/32/64 filters.

`get(name, input_shape, num_classes)` builds a model by name (see `NAMES`).
"""
import keras
from keras import layers

NAMES = ("lenet_300_100", "lenet5", "resnet_cifar")


def _check_common(input_shape, num_classes, model):
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(
        f"{model}: input_shape must be (height, width, channels) with positive sizes, "
        f"got {input_shape}.")
  if int(num_classes) < 2:
    raise ValueError(f"{model}: num_classes must be >= 2, got {num_classes}.")
  return input_shape, int(num_classes)


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10):
  """LeNet-300-100: Flatten - Dense 300 relu - Dense 100 relu - Dense num_classes.

  Args:
    input_shape: (height, width, channels) of the images.
    num_classes: number of output logits.

  Returns:
    A `keras.Model` named "lenet_300_100" with Dense layers "fc1", "fc2", "logits".

  Raises:
    ValueError: on a malformed `input_shape` or `num_classes` < 2.
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "lenet_300_100")
  inputs = keras.Input(shape=input_shape, name="image")
  x = layers.Flatten(name="flatten")(inputs)
  x = layers.Dense(300, activation="relu", name="fc1")(x)
  x = layers.Dense(100, activation="relu", name="fc2")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="lenet_300_100")


def _lenet5_out_size(size, padding):
  """Spatial size after conv5 - pool2 - conv5 - pool2 (0 when it does not fit)."""
  for _ in range(2):
    if padding == "valid":
      size -= 4
    size //= 2
    if size < 1:
      return 0
  return size


# Smallest square input each padding can take.
_LENET5_MIN_SIZE = {p: next(s for s in range(1, 64) if _lenet5_out_size(s, p) >= 1)
                    for p in ("valid", "same")}


def lenet5(input_shape=(28, 28, 1), num_classes=10, padding="auto"):
  """LeNet-5, Caffe variant.

  Conv 5x5x20 - MaxPool 2 - Conv 5x5x50 - MaxPool 2 - Flatten - Dense 500 relu -
  Dense num_classes. As in Caffe's `lenet_train_test.prototxt`, the convolutions have no
  activation. On 28x28x1 with "valid" padding it has 430,500 kernel weights
  (500 + 25,000 + 400,000 + 5,000).

  Args:
    input_shape: (height, width, channels) of the images.
    num_classes: number of output logits.
    padding: "valid" (the Caffe model; needs inputs of at least 16x16), "same" (works
      down to 4x4, e.g. the 8x8 `digits` set), or "auto": "valid" when the input is
      large enough, else "same".

  Returns:
    A `keras.Model` named "lenet5" with layers "conv1", "pool1", "conv2", "pool2",
    "flatten", "fc1", "logits".

  Raises:
    ValueError: on an unknown `padding`, or an input too small for it (the message
      names the minimum size).
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "lenet5")
  if padding not in ("auto", "valid", "same"):
    raise ValueError(
        f"lenet5: unknown padding {padding!r}; valid options: 'auto', 'valid', 'same'.")
  spatial = input_shape[:2]
  if padding == "auto":
    padding = "valid" if min(spatial) >= _LENET5_MIN_SIZE["valid"] else "same"
  if min(spatial) < _LENET5_MIN_SIZE[padding]:
    hint = (f" Use padding='same' (minimum {_LENET5_MIN_SIZE['same']}x"
            f"{_LENET5_MIN_SIZE['same']}) for smaller inputs." if padding == "valid"
            else "")
    raise ValueError(
        f"lenet5: input {input_shape} is too small for padding={padding!r}: the "
        f"minimum is {_LENET5_MIN_SIZE[padding]}x{_LENET5_MIN_SIZE[padding]}.{hint}")
  inputs = keras.Input(shape=input_shape, name="image")
  x = layers.Conv2D(20, 5, padding=padding, name="conv1")(inputs)
  x = layers.MaxPooling2D(2, name="pool1")(x)
  x = layers.Conv2D(50, 5, padding=padding, name="conv2")(x)
  x = layers.MaxPooling2D(2, name="pool2")(x)
  x = layers.Flatten(name="flatten")(x)
  x = layers.Dense(500, activation="relu", name="fc1")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="lenet5")


def _residual_block(x, filters, stride, name):
  """Basic block: conv3x3-BN-relu-conv3x3-BN + shortcut, then relu."""
  shortcut = x
  y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                    kernel_initializer="he_normal", name=f"{name}_conv1")(x)
  y = layers.BatchNormalization(name=f"{name}_bn1")(y)
  y = layers.Activation("relu", name=f"{name}_relu1")(y)
  y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                    kernel_initializer="he_normal", name=f"{name}_conv2")(y)
  y = layers.BatchNormalization(name=f"{name}_bn2")(y)
  if stride != 1 or shortcut.shape[-1] != filters:
    # Projection shortcut (He et al. option B) where the shape changes.
    shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                             kernel_initializer="he_normal",
                             name=f"{name}_proj")(shortcut)
    shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
  y = layers.Add(name=f"{name}_add")([y, shortcut])
  return layers.Activation("relu", name=f"{name}_out")(y)


def resnet_cifar(input_shape=(32, 32, 3), num_classes=10, depth=20, base_filters=16):
  """CIFAR-style ResNet (He et al. 2016, section 4.2).

  Conv 3x3 - BN - relu, then three stages of n = (depth - 2) / 6 basic blocks with
  base_filters, 2x and 4x filters (stages 2 and 3 start with stride 2), then
  GlobalAveragePooling - Dense num_classes.

  Args:
    input_shape: (height, width, channels) of the images.
    num_classes: number of output logits.
    depth: total depth, 6n + 2: 8 (tiny, for tests), 14, 20, 32, 44, 56, 110.
    base_filters: filters of the first stage (16 in the paper).

  Returns:
    A `keras.Model` named f"resnet{depth}_cifar".

  Raises:
    ValueError: if `depth` is not 6n + 2 with n >= 1, or `base_filters` < 1.
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "resnet_cifar")
  depth = int(depth)
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(
        f"resnet_cifar: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), "
        f"got {depth}.")
  if int(base_filters) < 1:
    raise ValueError(f"resnet_cifar: base_filters must be >= 1, got {base_filters}.")
  blocks = (depth - 2) // 6
  inputs = keras.Input(shape=input_shape, name="image")
  x = layers.Conv2D(base_filters, 3, padding="same", use_bias=False,
                    kernel_initializer="he_normal", name="stem_conv")(inputs)
  x = layers.BatchNormalization(name="stem_bn")(x)
  x = layers.Activation("relu", name="stem_relu")(x)
  for stage in range(3):
    filters = base_filters * 2**stage
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      x = _residual_block(x, filters, stride, name=f"stage{stage + 1}_block{block + 1}")
  x = layers.GlobalAveragePooling2D(name="gap")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name=f"resnet{depth}_cifar")


_BUILDERS = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "resnet_cifar": resnet_cifar,
}


def get(name, input_shape=None, num_classes=10, **kwargs):
  """Builds a zoo model by name.

  Args:
    name: one of `NAMES`.
    input_shape: (height, width, channels); None uses the model's default
      ((28, 28, 1) for the LeNets, (32, 32, 3) for resnet_cifar).
    num_classes: number of output logits.
    **kwargs: passed to the builder (e.g. `padding=` for lenet5, `depth=` for
      resnet_cifar).

  Returns:
    A new, freshly initialised `keras.Model`.

  Raises:
    ValueError: if `name` is unknown (the message lists the valid names).
  """
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(NAMES)}.")
  if input_shape is not None:
    kwargs["input_shape"] = input_shape
  return _BUILDERS[name](num_classes=num_classes, **kwargs)
