"""Reference models for the pruning experiments (Keras 3 functional API).

Every model outputs logits (no softmax): compile with
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

* `lenet_300_100`: LeCun et al. 1998, the fully connected net of Han et al. 2015
  ("Learning both Weights and Connections for Efficient Neural Networks").
* `lenet5`: the Caffe LeNet-5 variant used by Han et al. 2015 and most pruning papers
  (20 and 50 5x5 filters, 500 hidden units; 430,500 kernel weights on 28x28x1).
* `resnet_cifar`: the CIFAR ResNet of He et al. 2016 ("Deep Residual Learning for Image
  Recognition", section 4.2): depth 6n+2, three stages of 16/32/64 filters.

The MLPerf Tiny edge reference models (Banbury et al. 2021, "MLPerf Tiny Benchmark";
reference training code in github.com/mlcommons/tiny, benchmark/training/), with
exactly the reference layer shapes (the final softmax left out):

* `resnet8`: image classification (CIFAR-10, 32x32x3): 78,666 parameters.
* `ds_cnn`: keyword spotting (Speech Commands, 49x10x1 MFCCs, 12 classes): the
  MLPerf Tiny DS-CNN with 64 filters and 4 depthwise-separable blocks, 24,908
  parameters (23,756 trainable); not the larger "DS-CNN-S" of Zhang et al. 2017
  ("Hello Edge"), which has 5 blocks (~38.6K).
* `mobilenet_v1_025`: visual wake words (96x96x3, 2 classes): MobileNetV1 (Howard et
  al. 2017) with width 0.25, 221,794 parameters.

And a small Transformer encoder classifier (Vaswani et al. 2017), `transformer`: token
ids, token + position embeddings, `num_layers` post-norm encoder blocks
(MultiHeadAttention, LayerNorm, ReLU FFN), mean pooling, logits; on image-shaped input it
reads each image row as one float token.

`get(name, input_shape, num_classes)` builds a model by name. Each entry of `NAMES` is
a plain `str` that also carries the model's reference input (`input_shape`,
`input_dtype`, `num_classes`, `task`), e.g. `NAMES[3].input_shape == (32, 32, 3)`.
"""
import keras
from keras import layers



class ModelName(str):
  """A zoo model name (a plain `str`) carrying the model's reference input and head.

  Attributes:
    input_shape: the default input shape (no batch dimension).
    input_dtype: "float32", or "int32" for token ids.
    num_classes: the default number of logits.
    task: what the reference model is for.
  """

  def __new__(cls, name, input_shape, num_classes, task, input_dtype="float32"):
    self = super().__new__(cls, name)
    self.input_shape = tuple(input_shape)
    self.input_dtype = input_dtype
    self.num_classes = int(num_classes)
    self.task = task
    return self

  def __getnewargs__(self):
    return (str(self), self.input_shape, self.num_classes, self.task, self.input_dtype)


NAMES = (
    ModelName("lenet_300_100", (28, 28, 1), 10, "image classification (MNIST)"),
    ModelName("lenet5", (28, 28, 1), 10, "image classification (MNIST)"),
    ModelName("resnet_cifar", (32, 32, 3), 10, "image classification (CIFAR-10)"),
    ModelName("resnet8", (32, 32, 3), 10, "MLPerf Tiny image classification (CIFAR-10)"),
    ModelName("ds_cnn", (49, 10, 1), 12, "MLPerf Tiny keyword spotting (Speech Commands)"),
    ModelName("mobilenet_v1_025", (96, 96, 3), 2, "MLPerf Tiny visual wake words"),
    ModelName("transformer", (64,), 2, "text classification (token ids)",
              input_dtype="int32"),
)


def spec(name):
  """The `NAMES` entry for `name` (its default input shape, dtype, classes, task)."""
  for entry in NAMES:
    if entry == name:
      return entry
  raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(NAMES)}.")


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


def _l2(weight_decay):
  return keras.regularizers.L2(weight_decay) if weight_decay else None


def resnet8(input_shape=(32, 32, 3), num_classes=10, weight_decay=1e-4):
  """MLPerf Tiny image classification reference: ResNet-8 (ResNet v1, EEMBC variant).

  Conv 3x3x16 - BN - relu, then three residual stacks of 16 / 32 / 64 filters (each
  conv3x3-BN-relu-conv3x3-BN plus the shortcut, added, relu; stacks 2 and 3 start with
  stride 2 and a 1x1 stride-2 convolution on the shortcut, without BN), then an average
  pool over the whole map, Flatten, Dense num_classes. Every convolution has a bias,
  he_normal initialisation and L2 `weight_decay`, as in the reference
  (benchmark/training/image_classification/keras_model.py, `resnet_v1_eembc`). On
  32x32x3 with 10 classes: 78,666 parameters (78,186 trainable).

  Args:
    input_shape: (height, width, channels); (32, 32, 1) for grey images.
    num_classes: number of output logits.
    weight_decay: L2 factor of the convolution kernels (0 disables it).

  Returns:
    A `keras.Model` named "resnet8" (layers "conv1", "stack{1,2,3}_conv{1,2}",
    "stack{2,3}_shortcut", "logits").
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "resnet8")
  if min(input_shape[:2]) < 4:
    raise ValueError(f"resnet8: input {input_shape} is too small; the two stride-2 "
                     f"stacks need at least 4x4.")

  def conv(filters, kernel, stride, name):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same",
                         kernel_initializer="he_normal",
                         kernel_regularizer=_l2(weight_decay), name=name)

  inputs = keras.Input(shape=input_shape, name="image")
  x = conv(16, 3, 1, "conv1")(inputs)
  x = layers.BatchNormalization(name="bn1")(x)
  x = layers.Activation("relu", name="relu1")(x)
  for stack, filters in enumerate((16, 32, 64), start=1):
    stride = 1 if stack == 1 else 2
    y = conv(filters, 3, stride, f"stack{stack}_conv1")(x)
    y = layers.BatchNormalization(name=f"stack{stack}_bn1")(y)
    y = layers.Activation("relu", name=f"stack{stack}_relu1")(y)
    y = conv(filters, 3, 1, f"stack{stack}_conv2")(y)
    y = layers.BatchNormalization(name=f"stack{stack}_bn2")(y)
    if stack > 1:
      x = conv(filters, 1, 2, f"stack{stack}_shortcut")(x)
    x = layers.Add(name=f"stack{stack}_add")([x, y])
    x = layers.Activation("relu", name=f"stack{stack}_relu")(x)
  pool = int(min(x.shape[1:3]))
  x = layers.AveragePooling2D(pool_size=pool, name="pool")(x)
  x = layers.Flatten(name="flatten")(x)
  outputs = layers.Dense(num_classes, kernel_initializer="he_normal", name="logits")(x)
  return keras.Model(inputs, outputs, name="resnet8")


def ds_cnn(input_shape=(49, 10, 1), num_classes=12, filters=64, blocks=4,
           weight_decay=1e-4):
  """MLPerf Tiny keyword spotting reference: DS-CNN (Zhang et al. 2017, "Hello Edge").

  Conv (10, 4) stride 2 - BN - relu - Dropout 0.2, then `blocks` depthwise-separable
  blocks (DepthwiseConv 3x3 - BN - relu - Conv 1x1 - BN - relu), Dropout 0.4, average
  pool of size (height // 2, width // 2), Flatten, Dense num_classes, as in the
  reference (benchmark/training/keyword_spotting/keras_model.py, "ds_cnn"). On 49x10x1
  MFCCs with 12 classes: 24,908 parameters (23,756 trainable). `blocks=5` gives the
  5-block layout of Hello Edge's DS-CNN-S.

  Args:
    input_shape: (time frames, MFCC coefficients, 1) by default; any image shape works.
    num_classes: number of output logits (12: 10 words, silence, unknown).
    filters: channels of every layer (64 in the reference).
    blocks: depthwise-separable blocks (4 in the reference).
    weight_decay: L2 factor of the kernels (0 disables it).

  Returns:
    A `keras.Model` named "ds_cnn" (layers "conv1", "dw{i}", "pw{i}", "logits").
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "ds_cnn")
  if int(filters) < 1 or int(blocks) < 1:
    raise ValueError(f"ds_cnn: filters and blocks must be >= 1, got {filters}, {blocks}.")
  reg = _l2(weight_decay)
  inputs = keras.Input(shape=input_shape, name="mfcc")
  x = layers.Conv2D(filters, (10, 4), strides=2, padding="same", kernel_regularizer=reg,
                    name="conv1")(inputs)
  x = layers.BatchNormalization(name="bn1")(x)
  x = layers.Activation("relu", name="relu1")(x)
  x = layers.Dropout(0.2, name="dropout1")(x)
  for i in range(1, int(blocks) + 1):
    x = layers.DepthwiseConv2D(3, padding="same", depthwise_regularizer=reg,
                               name=f"dw{i}")(x)
    x = layers.BatchNormalization(name=f"dw{i}_bn")(x)
    x = layers.Activation("relu", name=f"dw{i}_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", kernel_regularizer=reg, name=f"pw{i}")(x)
    x = layers.BatchNormalization(name=f"pw{i}_bn")(x)
    x = layers.Activation("relu", name=f"pw{i}_relu")(x)
  x = layers.Dropout(0.4, name="dropout2")(x)
  pool = tuple(max(1, min(d // 2, int(s))) for d, s in zip(input_shape[:2], x.shape[1:3]))
  x = layers.AveragePooling2D(pool_size=pool, name="pool")(x)
  x = layers.Flatten(name="flatten")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="ds_cnn")


# MobileNetV1 (Howard et al. 2017, Table 1): (pointwise filters at width 1, stride) of the
# 13 depthwise-separable blocks.
_MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
                        (1024, 1))


def mobilenet_v1_025(input_shape=(96, 96, 3), num_classes=2, alpha=0.25,
                     weight_decay=1e-4):
  """MLPerf Tiny visual wake words reference: MobileNetV1, width `alpha` 0.25.

  Conv 3x3 stride 2 (32 * alpha filters) - BN - relu, then the 13 depthwise-separable
  blocks of MobileNetV1 (DepthwiseConv 3x3 - BN - relu - Conv 1x1 - BN - relu; filters
  times alpha), an average pool over the whole map, Flatten, Dense num_classes. As in
  the reference (benchmark/training/visual_wake_words/vww_model.py, from the EEMBC
  `mobilenet_v1_eembc`): plain ReLU, "same" padding, biases, he_normal, L2. On 96x96x3
  with 2 classes: 221,794 parameters.

  Args:
    input_shape: (height, width, channels); at least 32x32 (five stride-2 layers).
    num_classes: number of output logits (person / no person).
    alpha: width multiplier (0.25 in the reference).
    weight_decay: L2 factor of the kernels (0 disables it).

  Returns:
    A `keras.Model` named "mobilenet_v1_025" (layers "conv1", "dw{i}", "pw{i}",
    "logits").
  """
  input_shape, num_classes = _check_common(input_shape, num_classes, "mobilenet_v1_025")
  if float(alpha) <= 0:
    raise ValueError(f"mobilenet_v1_025: alpha must be > 0, got {alpha}.")
  if min(input_shape[:2]) < 32:
    raise ValueError(f"mobilenet_v1_025: input {input_shape} is too small; five stride-2 "
                     f"layers need at least 32x32.")
  reg = _l2(weight_decay)
  width = lambda f: max(1, int(f * float(alpha)))  # pylint: disable=unnecessary-lambda-assignment

  def bn_relu(x, name):
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)

  inputs = keras.Input(shape=input_shape, name="image")
  x = layers.Conv2D(width(32), 3, strides=2, padding="same", kernel_initializer="he_normal",
                    kernel_regularizer=reg, name="conv1")(inputs)
  x = bn_relu(x, "conv1")
  for i, (filters, stride) in enumerate(_MOBILENET_V1_BLOCKS, start=1):
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same",
                               depthwise_initializer="he_normal",
                               depthwise_regularizer=reg, name=f"dw{i}")(x)
    x = bn_relu(x, f"dw{i}")
    x = layers.Conv2D(width(filters), 1, padding="same", kernel_initializer="he_normal",
                      kernel_regularizer=reg, name=f"pw{i}")(x)
    x = bn_relu(x, f"pw{i}")
  x = layers.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]), name="pool")(x)
  x = layers.Flatten(name="flatten")(x)
  outputs = layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, outputs, name="mobilenet_v1_025")


def _positions(x):
  """0, 1, ..., length - 1 along axis 1 of `x`, per example (int32), from raw ops.

  Built from the input (a running sum of ones), so the graph has no constant and
  exports with builtin ops (CUMSUM).
  """
  ones = keras.ops.ones_like(x[..., 0] if len(x.shape) == 3 else x, dtype="int32")
  return keras.ops.cumsum(ones, axis=1) - 1


def transformer(input_shape=None, num_classes=2, vocab_size=1000, seq_len=64,
                embed_dim=64, num_heads=4, ff_dim=128, num_layers=2, dropout=0.1):
  """A small Transformer encoder classifier (Vaswani et al. 2017, encoder only).

  Token ids -> Embedding(vocab_size, embed_dim) + learned position Embedding(seq_len,
  embed_dim) -> `num_layers` x [MultiHeadAttention (self-attention, key_dim =
  embed_dim / num_heads) - Dropout - Add - LayerNorm - Dense ff_dim relu - Dense
  embed_dim - Dropout - Add - LayerNorm] -> mean over positions -> Dropout -> Dense
  num_classes. Every kernel (embeddings, attention projections, FFN, head) is
  prunable.

  Args:
    input_shape: None or (seq_len,): int32 token ids of length `seq_len`. (height,
      width) or (height, width, channels): float images read row by row, each row a
      token projected by Dense(embed_dim) (`vocab_size` unused); e.g. (28, 28, 1).
    num_classes: number of output logits.
    vocab_size: token vocabulary (ids 0 .. vocab_size - 1).
    seq_len: sequence length for token ids (ignored when `input_shape` gives it).
    embed_dim: model width; a multiple of `num_heads`.
    num_heads: attention heads.
    ff_dim: hidden units of each block's feed-forward network.
    num_layers: encoder blocks.
    dropout: dropout rate (attention weights, residual branches, head).

  Returns:
    A `keras.Model` named "transformer" (layers "token_embedding" or "row_embedding",
    "position_embedding", "block{i}_attention", "block{i}_ffn1", "block{i}_ffn2",
    "logits").

  Raises:
    ValueError: on a malformed shape, `embed_dim` not a multiple of `num_heads`, or
      sizes < 1.
  """
  if int(num_classes) < 2:
    raise ValueError(f"transformer: num_classes must be >= 2, got {num_classes}.")
  for arg, value in (("vocab_size", vocab_size), ("seq_len", seq_len),
                     ("embed_dim", embed_dim), ("num_heads", num_heads),
                     ("ff_dim", ff_dim), ("num_layers", num_layers)):
    if int(value) < 1:
      raise ValueError(f"transformer: {arg} must be >= 1, got {value}.")
  if int(embed_dim) % int(num_heads):
    raise ValueError(f"transformer: embed_dim ({embed_dim}) must be a multiple of "
                     f"num_heads ({num_heads}).")
  if not 0 <= float(dropout) < 1:
    raise ValueError(f"transformer: dropout must be in [0, 1), got {dropout}.")
  shape = (int(seq_len),) if input_shape is None else tuple(int(d) for d in input_shape)
  if len(shape) not in (1, 2, 3) or min(shape) < 1:
    raise ValueError(f"transformer: input_shape must be (seq_len,) for token ids or "
                     f"(height, width[, channels]) for images read row by row, got "
                     f"{input_shape}.")
  embed_dim, num_heads = int(embed_dim), int(num_heads)
  length = shape[0]
  if len(shape) == 1:
    inputs = keras.Input(shape=shape, dtype="int32", name="tokens")
    x = layers.Embedding(int(vocab_size), embed_dim, name="token_embedding")(inputs)
  else:
    inputs = keras.Input(shape=shape, name="image")
    rows = inputs
    if len(shape) == 3:
      rows = layers.Reshape((length, shape[1] * shape[2]), name="rows")(inputs)
    x = layers.Dense(embed_dim, name="row_embedding")(rows)
  x = x + layers.Embedding(length, embed_dim, name="position_embedding")(_positions(x))
  for i in range(1, int(num_layers) + 1):
    attention = layers.MultiHeadAttention(num_heads, embed_dim // num_heads,
                                          dropout=dropout, name=f"block{i}_attention")(x, x)
    attention = layers.Dropout(dropout, name=f"block{i}_dropout1")(attention)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x + attention)
    ffn = layers.Dense(int(ff_dim), activation="relu", name=f"block{i}_ffn1")(x)
    ffn = layers.Dense(embed_dim, name=f"block{i}_ffn2")(ffn)
    ffn = layers.Dropout(dropout, name=f"block{i}_dropout2")(ffn)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x + ffn)
  x = layers.GlobalAveragePooling1D(name="pool")(x)
  x = layers.Dropout(dropout, name="head_dropout")(x)
  outputs = layers.Dense(int(num_classes), name="logits")(x)
  return keras.Model(inputs, outputs, name="transformer")


_BUILDERS = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "resnet_cifar": resnet_cifar,
    "resnet8": resnet8,
    "ds_cnn": ds_cnn,
    "mobilenet_v1_025": mobilenet_v1_025,
    "transformer": transformer,
}


def get(name, input_shape=None, num_classes=None, **kwargs):
  """Builds a zoo model by name.

  Args:
    name: one of `NAMES`.
    input_shape: the input shape without the batch dimension; None uses the model's
      default (`spec(name).input_shape`: (28, 28, 1) for the LeNets, (32, 32, 3) for
      resnet_cifar / resnet8, (49, 10, 1) for ds_cnn, (96, 96, 3) for
      mobilenet_v1_025, 64 token ids for transformer).
    num_classes: number of output logits; None uses the model's default
      (`spec(name).num_classes`).
    **kwargs: passed to the builder (e.g. `padding=` for lenet5, `depth=` for
      resnet_cifar, `vocab_size=` for transformer).

  Returns:
    A new, freshly initialised `keras.Model`.

  Raises:
    ValueError: if `name` is unknown (the message lists the valid names).
  """
  entry = spec(name)
  if input_shape is not None:
    kwargs["input_shape"] = input_shape
  return _BUILDERS[str(entry)](
      num_classes=entry.num_classes if num_classes is None else num_classes, **kwargs)
