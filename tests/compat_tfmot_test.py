"""TFMOT's own guide code, run on Keras 3 through `tfprune.compat.tfmot`.

The GUIDE_* blocks below are the code cells of TFMOT's pruning guides
(tensorflow_model_optimization/g3doc/guide/pruning/pruning_with_keras.ipynb and
comprehensive_guide.ipynb), run as they are except for:
  * the import: `import tensorflow_model_optimization as tfmot` ->
    `import tfprune.compat.tfmot as tfmot` (the one change a user makes);
  * data: `keras.datasets.mnist.load_data()` downloads, so a 1,280-image MNIST subset
    from `tfprune.data.load("mnist")` is put in the same raw 0-255 form; fewer epochs;
  * Keras 3 itself (not pruning): weights files must end in `.weights.h5`, so the
    comprehensive guide's `tempfile.mkstemp('.tf')` is `mkstemp('.weights.h5')`; the
    notebook magics (`%tensorboard`, `!pip`) are dropped.
The assertions check the sparsity TFMOT's arithmetic gives for the same schedule and
step count (keep `round((1 - s) * n)` weights per tensor).
"""
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.compat.tfmot as tfmot

# --------------------------------------------------------------- pruning_with_keras
GUIDE_DATA = """
import tfprune
(train_images, train_labels), (test_images, test_labels) = tfprune.data.load("mnist")
# The guide's load_data() gives raw uint8 images of shape (N, 28, 28).
train_images = np.round(train_images[:1280, :, :, 0] * 255.0)
train_labels = train_labels[:1280]
test_images = np.round(test_images[:256, :, :, 0] * 255.0)
test_labels = test_labels[:256]
"""

GUIDE_PRUNING_WITH_KERAS = """
import tempfile
import os

import tensorflow as tf
import numpy as np

from tensorflow import keras

# (data: see GUIDE_DATA)

# Normalize the input image so that each pixel value is between 0 and 1.
train_images = train_images / 255.0
test_images = test_images / 255.0

# Define the model architecture.
model = keras.Sequential([
  keras.layers.InputLayer(input_shape=(28, 28)),
  keras.layers.Reshape(target_shape=(28, 28, 1)),
  keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation='relu'),
  keras.layers.MaxPooling2D(pool_size=(2, 2)),
  keras.layers.Flatten(),
  keras.layers.Dense(10)
])

# Train the digit classification model
model.compile(optimizer='adam',
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])

model.fit(
  train_images,
  train_labels,
  epochs=1,
  validation_split=0.1,
)

_, baseline_model_accuracy = model.evaluate(
    test_images, test_labels, verbose=0)

print('Baseline test accuracy:', baseline_model_accuracy)

_, keras_file = tempfile.mkstemp('.h5')
tf.keras.models.save_model(model, keras_file, include_optimizer=False)
print('Saved baseline model to:', keras_file)

import tfprune.compat.tfmot as tfmot

prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude

# Compute end step to finish pruning after 2 epochs.
batch_size = 128
epochs = 2
validation_split = 0.1 # 10% of training set will be used for validation set.

num_images = train_images.shape[0] * (1 - validation_split)
end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs

# Define model for pruning.
pruning_params = {
      'pruning_schedule': tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50,
                                                               final_sparsity=0.80,
                                                               begin_step=0,
                                                               end_step=end_step)
}

model_for_pruning = prune_low_magnitude(model, **pruning_params)

# `prune_low_magnitude` requires a recompile.
model_for_pruning.compile(optimizer='adam',
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])

model_for_pruning.summary()

logdir = tempfile.mkdtemp()

callbacks = [
  tfmot.sparsity.keras.UpdatePruningStep(),
  tfmot.sparsity.keras.PruningSummaries(log_dir=logdir),
]

model_for_pruning.fit(train_images, train_labels,
                  batch_size=batch_size, epochs=epochs, validation_split=validation_split,
                  callbacks=callbacks)

_, model_for_pruning_accuracy = model_for_pruning.evaluate(
   test_images, test_labels, verbose=0)

print('Baseline test accuracy:', baseline_model_accuracy)
print('Pruned test accuracy:', model_for_pruning_accuracy)

model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)

_, pruned_keras_file = tempfile.mkstemp('.h5')
tf.keras.models.save_model(model_for_export, pruned_keras_file, include_optimizer=False)
print('Saved pruned Keras model to:', pruned_keras_file)

def get_gzipped_model_size(file):
  # Returns size of gzipped model, in bytes.
  import os
  import zipfile

  _, zipped_file = tempfile.mkstemp('.zip')
  with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
    f.write(file)

  return os.path.getsize(zipped_file)

print("Size of gzipped baseline Keras model: %.2f bytes" % (get_gzipped_model_size(keras_file)))
print("Size of gzipped pruned Keras model: %.2f bytes" % (get_gzipped_model_size(pruned_keras_file)))
"""

# The guide's TFLite part (stock converter + interpreter), on the stripped model.
GUIDE_TFLITE = """
converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
quantized_and_pruned_tflite_model = converter.convert()

_, quantized_and_pruned_tflite_file = tempfile.mkstemp('.tflite')

with open(quantized_and_pruned_tflite_file, 'wb') as f:
  f.write(quantized_and_pruned_tflite_model)

print('Saved quantized and pruned TFLite model to:', quantized_and_pruned_tflite_file)

def evaluate_model(interpreter):
  input_index = interpreter.get_input_details()[0]["index"]
  output_index = interpreter.get_output_details()[0]["index"]

  # Run predictions on every image in the "test" dataset.
  prediction_digits = []
  for i, test_image in enumerate(test_images):
    # Pre-processing: add batch dimension and convert to float32 to match with
    # the model's input data format.
    test_image = np.expand_dims(test_image, axis=0).astype(np.float32)
    interpreter.set_tensor(input_index, test_image)

    # Run inference.
    interpreter.invoke()

    # Post-processing: remove batch dimension and find the digit with highest
    # probability.
    output = interpreter.tensor(output_index)
    digit = np.argmax(output()[0])
    prediction_digits.append(digit)

  # Compare prediction results with ground truth labels to calculate accuracy.
  prediction_digits = np.array(prediction_digits)
  accuracy = (prediction_digits == test_labels).mean()
  return accuracy

interpreter = tf.lite.Interpreter(model_content=quantized_and_pruned_tflite_model)
interpreter.allocate_tensors()

test_accuracy = evaluate_model(interpreter)

print('Pruned and quantized TFLite test_accuracy:', test_accuracy)
print('Pruned TF test accuracy:', model_for_pruning_accuracy)
"""

# ---------------------------------------------------------------- comprehensive guide
GUIDE_SETUP = """
import tensorflow as tf
import numpy as np
import tfprune.compat.tfmot as tfmot

import tempfile

input_shape = [20]
x_train = np.random.randn(1, 20).astype(np.float32)
y_train = tf.keras.utils.to_categorical(np.random.randn(1), num_classes=20)

def setup_model():
  model = tf.keras.Sequential([
      tf.keras.layers.Dense(20, input_shape=input_shape),
      tf.keras.layers.Flatten()
  ])
  return model

def setup_pretrained_weights():
  model = setup_model()

  model.compile(
      loss=tf.keras.losses.categorical_crossentropy,
      optimizer='adam',
      metrics=['accuracy']
  )

  model.fit(x_train, y_train)

  _, pretrained_weights = tempfile.mkstemp('.weights.h5')  # Keras 3: was '.tf'

  model.save_weights(pretrained_weights)

  return pretrained_weights

def get_gzipped_model_size(model):
  # Returns size of gzipped model, in bytes.
  import os
  import zipfile

  _, keras_file = tempfile.mkstemp('.h5')
  model.save(keras_file, include_optimizer=False)

  _, zipped_file = tempfile.mkstemp('.zip')
  with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
    f.write(keras_file)

  return os.path.getsize(zipped_file)

setup_model()
pretrained_weights = setup_pretrained_weights()
"""

GUIDE_PRUNE_WHOLE_MODEL = """
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended.

model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

model_for_pruning.summary()
"""

GUIDE_PRUNE_SOME_LAYERS = """
# Create a base model
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy

# Helper function uses `prune_low_magnitude` to make only the
# Dense layers train with pruning.
def apply_pruning_to_dense(layer):
  if isinstance(layer, tf.keras.layers.Dense):
    return tfmot.sparsity.keras.prune_low_magnitude(layer)
  return layer

# Use `tf.keras.models.clone_model` to apply `apply_pruning_to_dense`
# to the layers of the model.
model_for_pruning = tf.keras.models.clone_model(
    base_model,
    clone_function=apply_pruning_to_dense,
)

model_for_pruning.summary()
print(base_model.layers[0].name)
"""

GUIDE_FUNCTIONAL = """
# Use `prune_low_magnitude` to make the `Dense` layer train with pruning.
i = tf.keras.Input(shape=(20,))
x = tfmot.sparsity.keras.prune_low_magnitude(tf.keras.layers.Dense(10))(i)
o = tf.keras.layers.Flatten()(x)
model_for_pruning = tf.keras.Model(inputs=i, outputs=o)

model_for_pruning.summary()
"""

GUIDE_SEQUENTIAL = """
# Use `prune_low_magnitude` to make the `Dense` layer train with pruning.
model_for_pruning = tf.keras.Sequential([
  tfmot.sparsity.keras.prune_low_magnitude(tf.keras.layers.Dense(20, input_shape=input_shape)),
  tf.keras.layers.Flatten()
])

model_for_pruning.summary()
"""

GUIDE_CUSTOM_LAYER = """
class MyDenseLayer(tf.keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):

  def get_prunable_weights(self):
    # Prune bias also, though that usually harms model accuracy too much.
    return [self.kernel, self.bias]

# Use `prune_low_magnitude` to make the `MyDenseLayer` layer train with pruning.
model_for_pruning = tf.keras.Sequential([
  tfmot.sparsity.keras.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
  tf.keras.layers.Flatten()
])

model_for_pruning.summary()
"""

GUIDE_MODEL_FIT = """
# Define the model.
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

log_dir = tempfile.mkdtemp()
callbacks = [
    tfmot.sparsity.keras.UpdatePruningStep(),
    # Log sparsity and other metrics in Tensorboard.
    tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)
]

model_for_pruning.compile(
      loss=tf.keras.losses.categorical_crossentropy,
      optimizer='adam',
      metrics=['accuracy']
)

model_for_pruning.fit(
    x_train,
    y_train,
    callbacks=callbacks,
    epochs=2,
)
"""

GUIDE_CUSTOM_LOOP = """
# Define the model.
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

# Boilerplate
loss = tf.keras.losses.categorical_crossentropy
optimizer = tf.keras.optimizers.Adam()
log_dir = tempfile.mkdtemp()
unused_arg = -1
epochs = 2
batches = 1 # example is hardcoded so that the number of batches cannot change.

# Non-boilerplate.
model_for_pruning.optimizer = optimizer
step_callback = tfmot.sparsity.keras.UpdatePruningStep()
step_callback.set_model(model_for_pruning)
log_callback = tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir) # Log sparsity and other metrics in Tensorboard.
log_callback.set_model(model_for_pruning)

step_callback.on_train_begin() # run pruning callback
for _ in range(epochs):
  log_callback.on_epoch_begin(epoch=unused_arg) # run pruning callback
  for _ in range(batches):
    step_callback.on_train_batch_begin(batch=unused_arg) # run pruning callback

    with tf.GradientTape() as tape:
      logits = model_for_pruning(x_train, training=True)
      loss_value = loss(y_train, logits)
      grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
      optimizer.apply_gradients(zip(grads, model_for_pruning.trainable_variables))

  step_callback.on_epoch_end(batch=unused_arg) # run pruning callback
"""

GUIDE_CHECKPOINT = """
# Define the model.
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

_, keras_model_file = tempfile.mkstemp('.h5')

# Checkpoint: saving the optimizer is necessary (include_optimizer=True is the default).
model_for_pruning.save(keras_model_file, include_optimizer=True)

# Deserialize model.
with tfmot.sparsity.keras.prune_scope():
  loaded_model = tf.keras.models.load_model(keras_model_file)

loaded_model.summary()
"""

GUIDE_EXPORT = """
# Define the model.
base_model = setup_model()
base_model.load_weights(pretrained_weights) # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

# Typically you train the model here.

model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)

print("final model")
model_for_export.summary()

print("\\n")
print("Size of gzipped pruned model without stripping: %.2f bytes" % (get_gzipped_model_size(model_for_pruning)))
print("Size of gzipped pruned model with stripping: %.2f bytes" % (get_gzipped_model_size(model_for_export)))
"""

GUIDE_BLOCK = """
base_model = setup_model()

# For using intrinsics on a CPU with 128-bit registers, together with 8-bit
# quantized weights, a 1x16 block size is nice because the block perfectly
# fits into the register.
pruning_params = {'block_size': [1, 16]}
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model, **pruning_params)

model_for_pruning.summary()
"""


def _run(*blocks, namespace=None):
  namespace = {} if namespace is None else namespace
  for block in blocks:
    assert "tensorflow_model_optimization" not in block
    exec(compile(block, "<tfmot guide>", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def _zeros(variable):
  return float(np.mean(np.asarray(variable) == 0))


def _tfmot_sparsity(size, sparsity):
  """The fraction of zeros TFMOT's mask update leaves: keep round((1 - s) * n)."""
  return 1.0 - round(size * (1.0 - sparsity)) / size


@pytest.fixture(scope="module")
def setup_ns():
  keras.utils.set_random_seed(0)
  return _run(GUIDE_SETUP)


def test_pruning_with_keras_guide(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  keras.utils.set_random_seed(0)
  ns = _run(GUIDE_DATA.replace("import tfprune\n", "import numpy as np\nimport tfprune\n"),
            GUIDE_PRUNING_WITH_KERAS)
  # 1,152 training images / 128 = 9 steps per epoch, 18 steps (0..17) in all;
  # end_step = 18 and frequency 100: TFMOT prunes at step 0 only, to 50%.
  assert int(ns["end_step"]) == 18
  wrapped = [l for l in ns["model_for_pruning"].layers
             if isinstance(l, tfmot.sparsity.keras.PruneLowMagnitude)]
  # TFMOT names each wrapper prune_low_magnitude_<layer name> (Keras numbers repeated
  # layer names within a process, e.g. dense_2, when other tests built models first).
  assert [l.name for l in wrapped] == [f"prune_low_magnitude_{l.layer.name}"
                                       for l in wrapped]
  assert [type(l.layer).__name__ for l in wrapped] == ["Conv2D", "Dense"]
  assert int(wrapped[0].pruning_step.numpy()) == 17
  export = ns["model_for_export"]
  assert not any(isinstance(l, tfprune.PruneWrapper) for l in export.layers)
  conv, dense = (export.get_layer(w.layer.name) for w in wrapped)
  assert _zeros(conv.kernel) == pytest.approx(_tfmot_sparsity(108, 0.5))
  assert _zeros(dense.kernel) == pytest.approx(_tfmot_sparsity(20280, 0.5))
  assert _zeros(dense.bias) < 0.5  # biases are not pruned
  assert ns["model_for_pruning_accuracy"] > 0.5
  assert os.listdir(os.path.join(ns["logdir"], "train"))  # PruningSummaries wrote logs
  # The guide's TFLite part: stock converter + interpreter on the stripped model.
  _run(GUIDE_TFLITE, namespace=ns)
  assert abs(ns["test_accuracy"] - ns["model_for_pruning_accuracy"]) < 0.05
  # And tfprune's exporter on the same model: a verified sparse file.
  from tfprune import export as export_lib  # pylint: disable=g-import-not-at-top
  blob = export_lib.to_tflite(export, representative_data=ns["test_images"][:8])
  assert len(blob) < len(ns["quantized_and_pruned_tflite_model"]) * 4


def test_prune_whole_model_defaults_to_constant_sparsity_half(setup_ns):
  ns = _run(GUIDE_PRUNE_WHOLE_MODEL, namespace=dict(setup_ns))
  wrapper = ns["model_for_pruning"].layers[0]
  assert isinstance(wrapper, tfmot.sparsity.keras.PruneLowMagnitude)
  assert wrapper.name == "prune_low_magnitude_" + ns["base_model"].layers[0].name
  schedule = wrapper.pruning_schedule
  assert isinstance(schedule, tfmot.sparsity.keras.ConstantSparsity)
  assert (schedule.target_sparsity, schedule.begin_step, schedule.frequency) == (0.5, 0, 100)
  assert isinstance(ns["model_for_pruning"].layers[1], keras.layers.Flatten)
  # The original model is untouched (a copy is pruned), weights carried over.
  np.testing.assert_array_equal(wrapper.layer.kernel.numpy(),
                                ns["base_model"].layers[0].kernel.numpy())
  assert ns["base_model"].layers[0] is not wrapper.layer


def test_clone_function_makes_a_working_pruned_model(setup_ns):
  ns = _run(GUIDE_PRUNE_SOME_LAYERS, namespace=dict(setup_ns))
  model = ns["model_for_pruning"]
  assert isinstance(model.layers[0], tfmot.sparsity.keras.PruneLowMagnitude)
  model.compile(loss="categorical_crossentropy", optimizer="adam")
  model.fit(ns["x_train"], ns["y_train"], epochs=2, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  stripped = tfmot.sparsity.keras.strip_pruning(model)
  assert type(stripped.layers[0]) is keras.layers.Dense  # pylint: disable=unidiomatic-typecheck
  assert _zeros(stripped.layers[0].kernel) == pytest.approx(0.5)


@pytest.mark.parametrize("block", ["GUIDE_FUNCTIONAL", "GUIDE_SEQUENTIAL"])
def test_layer_wrapping_in_functional_and_sequential(setup_ns, block):
  ns = _run(globals()[block], namespace=dict(setup_ns))
  model = ns["model_for_pruning"]
  assert model.built
  model.compile(loss="mse", optimizer="adam")
  width = model(ns["x_train"]).shape[-1]
  model.fit(ns["x_train"], np.zeros((1, width)), epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  wrapper, = [l for l in model.layers if isinstance(l, tfmot.sparsity.keras.PruneLowMagnitude)]
  assert _zeros(wrapper.layer.kernel) == pytest.approx(0.5)


def test_custom_prunable_layer_prunes_kernel_and_bias(setup_ns):
  ns = _run(GUIDE_CUSTOM_LAYER, namespace=dict(setup_ns))
  model = ns["model_for_pruning"]
  # A fresh bias is all zeros: equal magnitudes tie at the threshold and are all kept
  # (as in TFMOT). Give it distinct values first.
  model.layers[0].layer.bias.assign(np.arange(1, 21, dtype="float32"))
  model.compile(loss="mse", optimizer="adam")
  model.fit(ns["x_train"], np.zeros((1, 20)), epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  layer = model.layers[0].layer
  assert len(model.layers[0].masks) == 2
  assert _zeros(layer.kernel) == pytest.approx(0.5)
  assert _zeros(layer.bias) == pytest.approx(0.5)


def test_model_fit_with_callbacks(setup_ns):
  ns = _run(GUIDE_MODEL_FIT, namespace=dict(setup_ns))
  wrapper = ns["model_for_pruning"].layers[0]
  assert int(wrapper.pruning_step.numpy()) == 1  # two batches: steps 0 and 1
  assert _zeros(wrapper.layer.kernel) == pytest.approx(0.5)
  assert os.listdir(os.path.join(ns["log_dir"], "train"))


def test_custom_training_loop(setup_ns):
  ns = _run(GUIDE_CUSTOM_LOOP, namespace=dict(setup_ns))
  wrapper = ns["model_for_pruning"].layers[0]
  assert int(wrapper.pruning_step.numpy()) == 1
  assert _zeros(wrapper.layer.kernel) == pytest.approx(0.5)


def test_checkpoint_and_deserialize(setup_ns):
  ns = _run(GUIDE_CHECKPOINT, namespace=dict(setup_ns))
  loaded = ns["loaded_model"]
  wrapper = loaded.layers[0]
  assert isinstance(wrapper, tfmot.sparsity.keras.PruneLowMagnitude)
  assert wrapper.pruning_schedule.get_config() == (
      ns["model_for_pruning"].layers[0].pruning_schedule.get_config())
  np.testing.assert_array_equal(wrapper.layer.kernel.numpy(),
                                ns["model_for_pruning"].layers[0].layer.kernel.numpy())


def test_export_strips_and_shrinks(setup_ns):
  ns = _run(GUIDE_EXPORT, namespace=dict(setup_ns))
  assert [type(l).__name__ for l in ns["model_for_export"].layers] == ["Dense", "Flatten"]


def test_block_size_1x16(setup_ns):
  ns = _run(GUIDE_BLOCK, namespace=dict(setup_ns))
  model = ns["model_for_pruning"]
  assert model.layers[0].block_size == (1, 16)
  rng = np.random.default_rng(0)
  model.layers[0].layer.kernel.assign(rng.normal(size=(20, 20)).astype("float32"))
  model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.0))
  model.fit(ns["x_train"], np.zeros((1, 20)), epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  mask = model.layers[0].masks[0].numpy()
  # TFMOT's (1, 16) blocks run along the kernel's second (output) axis: columns 0-15
  # and 16-19 (the overhanging block pooled over its 4 entries).
  for row in mask:
    assert len(set(row[:16])) == 1 and len(set(row[16:])) == 1
  # 20 rows x 2 blocks: keep round(40 * 0.5) = 20 blocks.
  assert int(mask[:, 0].sum() + mask[:, 16].sum()) == 20


# ---------------------------------------------------------------- TFMOT's contract
def _dense_model():
  return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="d1"),
                           keras.layers.Dense(4, name="d2")])


def test_forgetting_update_pruning_step_raises_naming_it():
  model = tfmot.sparsity.keras.prune_low_magnitude(_dense_model())
  model.compile(loss="mse", optimizer="adam")
  x, y = np.ones((4, 8), "float32"), np.zeros((4, 4), "float32")
  with pytest.raises(ValueError, match="UpdatePruningStep"):
    model.fit(x, y, epochs=1, verbose=0)
  # The same fit with the callback then works (a fresh training function).
  model.fit(x, y, epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  assert _zeros(model.layers[0].layer.kernel) == pytest.approx(0.5)
  # Custom loop without the callback.
  other = tfmot.sparsity.keras.prune_low_magnitude(_dense_model())
  with pytest.raises(ValueError, match="UpdatePruningStep"):
    other(x, training=True)
  other(x, training=False)  # inference is fine


def test_polynomial_decay_per_layer_schedules_and_step_from_optimizer():
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
  y = np.zeros((64, 4), "float32")
  schedule_a = tfmot.sparsity.keras.PolynomialDecay(0.2, 0.8, begin_step=0, end_step=6,
                                                    frequency=2)
  schedule_b = tfmot.sparsity.keras.ConstantSparsity(0.25, begin_step=3, frequency=100)

  def clone_function(layer):
    if layer.name == "d1":
      return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule_a)
    return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule_b)

  model = keras.models.clone_model(_dense_model(), clone_function=clone_function)
  model.compile(loss="mse", optimizer="adam")
  model.fit(x, y, batch_size=8, epochs=1, verbose=0,  # 8 steps: 0..7
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  d1, d2 = model.layers
  # d1: pruned at steps 0, 2, 4, 6; the last at s(6) = 0.8 (end_step on the grid).
  assert _zeros(d1.layer.kernel) == pytest.approx(_tfmot_sparsity(128, 0.8))
  assert _zeros(d2.layer.kernel) == pytest.approx(_tfmot_sparsity(64, 0.25))
  # A second fit continues from the optimizer's iteration count (8), as TFMOT does.
  model.fit(x, y, batch_size=8, epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  assert int(d1.pruning_step.numpy()) == 15


def test_sparsity_m_by_n():
  keras.utils.set_random_seed(0)
  model = tfmot.sparsity.keras.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(2, 4))
  model.compile(loss="mse", optimizer="adam")
  model.fit(np.ones((4, 8), "float32"), np.zeros((4, 4), "float32"), epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  for wrapper in model.layers:
    kernel = wrapper.layer.kernel.numpy()  # [in, out]: groups of 4 along the input axis
    groups = (kernel.T.reshape(kernel.shape[1], -1, 4) != 0).sum(axis=-1)
    assert (groups == 2).all()
  with pytest.raises(ValueError, match="sparsity_m_by_n"):
    tfmot.sparsity.keras.prune_low_magnitude(_dense_model(), sparsity_m_by_n=(4, 4))


def test_pruning_policy_for_xnnpack():
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, name="conv3x3")(inputs)
  x = keras.layers.Conv2D(16, 1, name="conv1x1")(x)
  outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, outputs)
  pruned = tfmot.sparsity.keras.prune_low_magnitude(
      model, pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack())
  wrapped = [l.layer.name for l in pruned.layers
             if isinstance(l, tfmot.sparsity.keras.PruneLowMagnitude)]
  assert wrapped == ["conv1x1"]
  with pytest.raises(ValueError, match="1x1 Conv2D"):
    tfmot.sparsity.keras.prune_low_magnitude(
        _dense_model(), pruning_policy=tfmot.sparsity.keras.PruneForLatencyOnXNNPack())


def test_keras_file_round_trip_and_clear_errors(tmp_path):
  model = tfmot.sparsity.keras.prune_low_magnitude(
      _dense_model(), pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(
          0.1, 0.6, 0, 10, frequency=5))
  model.compile(loss="mse", optimizer="adam")
  model.fit(np.ones((4, 8), "float32"), np.zeros((4, 4), "float32"), epochs=1, verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  path = str(tmp_path / "pruned.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert loaded.layers[0].pruning_schedule.get_config() == (
      model.layers[0].pruning_schedule.get_config())
  np.testing.assert_array_equal(loaded.layers[0].masks[0].numpy(),
                                model.layers[0].masks[0].numpy())
  assert int(loaded.layers[0].pruning_step.numpy()) == 0
  with pytest.raises(ValueError, match="block_pooling_type"):
    tfmot.sparsity.keras.prune_low_magnitude(_dense_model(), block_pooling_type="MIN")
  with pytest.raises(ValueError, match="subclassed"):

    class Sub(keras.Model):

      def call(self, x):
        return x

    tfmot.sparsity.keras.prune_low_magnitude(Sub())
  with pytest.raises(ValueError, match="can only prune"):
    tfmot.sparsity.keras.prune_low_magnitude("dense")
  with pytest.raises(AttributeError, match="quantize='int8'"):
    tfmot.quantization  # pylint: disable=pointless-statement
  # Clustering is provided (tests/clustering_test.py); only quantization is refused.
  assert callable(tfmot.clustering.keras.cluster_weights)


def test_tf_keras_alias_is_keras_3():
  # The guide code says tf.keras: on TF >= 2.16 with Keras 3 that is Keras 3 itself.
  assert tf.keras.layers.Dense is keras.layers.Dense


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
