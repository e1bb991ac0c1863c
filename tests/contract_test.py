"""The method contract (tfprune.methods.base): every method fits it, and training a pruned
model without the driver, or a phased method under a plain `model.fit`, never silently
does nothing."""
import logging
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune.methods import base

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
DRIVER = ("on_train_begin", "on_train_step", "on_train_end", "check_training")


@pytest.mark.parametrize("name", tfprune.available_methods())
def test_every_method_fits_the_contract_without_private_overrides(name):
  cls = tfprune.methods.get_method_class(name)
  bases = (base.PruningMethod, base.PostTrainingMethod, base.MethodCore)
  private = {k for b in bases for k in vars(b) if k.startswith("_") and
             not k.startswith("__")}
  for klass in cls.__mro__:
    if klass in bases:
      break
    overridden = private & set(vars(klass))
    assert not overridden, f"{klass.__name__} overrides private {sorted(overridden)}"
    assert "on_train_step" not in vars(klass), f"{klass.__name__} overrides the driver"
  assert cls.post_training == issubclass(cls, base.PostTrainingMethod)
  assert cls.post_training != issubclass(cls, base.PruningMethod)
  if cls.post_training:
    assert cls.apply is not base.PostTrainingMethod.apply


def _compiled(mlp, method, **kwargs):
  pruned = tfprune.prune(mlp(hidden=(16, 8)), method, **kwargs)
  pruned.compile(tfprune.get_method(pruned).prepare_optimizer(keras.optimizers.Adam(1e-2)),
                 LOSS)
  return pruned


def test_fit_without_callback_raises_with_the_fix_and_recovers(mlp, toy_data):
  x, y = toy_data(32)
  pruned = _compiled(mlp, "magnitude", target_sparsity=0.5)
  with pytest.raises(ValueError, match=r"callbacks=\[tfprune.PruningCallback\(\)\]"):
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0)
  pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.PruningCallback()])
  assert tfprune.get_method(pruned).diagnostics()["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_custom_loop_that_starts_the_method_trains(mlp, toy_data):
  pruned = tfprune.prune(mlp(), "magnitude", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  x, y = toy_data(16)
  with pytest.raises(ValueError, match="on_train_begin"):
    pruned(x, training=True)
  with pytest.raises(ValueError, match="before on_train_step"):
    method.on_train_step()
  method.on_train_begin()
  method.on_train_step()
  assert pruned(x, training=True).shape == (16, 3)
  method.on_train_end()
  assert not method.started
  assert method.diagnostics()["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_post_training_methods_fine_tune_without_the_driver(mlp, toy_data):
  x, y = toy_data(64)
  pruned = tfprune.prune(mlp(), "logsum", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  method.apply(pruned, x, verbose=False)
  pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
  pruned.fit(x, y, epochs=1, batch_size=16, verbose=0)  # masks fixed: allowed
  with pytest.raises(ValueError, match="prunes during training"):
    tfprune.get_method(_compiled(mlp, "magnitude")).apply(pruned, x)


def test_admm_under_plain_fit_hard_prunes_at_train_end_with_a_warning(mlp, toy_data,
                                                                       caplog):
  x, y = toy_data(64)
  pruned = _compiled(mlp, "admm", target_sparsity=0.8, admm_interval=2)
  method = tfprune.get_method(pruned)
  with caplog.at_level(logging.WARNING):
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0,
               callbacks=[tfprune.PruningCallback()])
  assert method.hard_prune_step == 4
  assert method.diagnostics()["sparsity"] == pytest.approx(0.8, abs=0.01)
  assert "fine-tune was skipped" in caplog.text
  weights = np.concatenate([w.numpy().ravel() for w in method.weights])
  assert np.mean(weights == 0) == pytest.approx(0.8, abs=0.01)  # not a dense model


def test_admm_penalty_optimizer_refuses_a_plain_optimizer(mlp, toy_data):
  pruned = tfprune.prune(mlp(), "admm", target_sparsity=0.5, penalty="optimizer")
  pruned.compile(keras.optimizers.Adam(), LOSS)
  with pytest.raises(ValueError, match="ADMMOptimizer"):
    pruned.fit(*toy_data(16), verbose=0, callbacks=[tfprune.PruningCallback()])


def test_sap_under_plain_fit_is_refused_before_training(mlp, toy_data):
  pruned = _compiled(mlp, "sap", rounds=2)
  before = [w.numpy() for w in pruned.weights]
  with pytest.raises(ValueError, match=r"tfprune.get_method\(model\)\.fit"):
    pruned.fit(*toy_data(16), verbose=0, callbacks=[tfprune.PruningCallback()])
  for a, b in zip(before, pruned.weights):
    np.testing.assert_array_equal(a, b.numpy())  # refused before any step


def test_l0_gates_under_plain_fit_hard_prunes_at_train_end(mlp, toy_data, caplog):
  pruned = _compiled(mlp, "l0_gates", target_sparsity=0.5)
  method = tfprune.get_method(pruned)
  with caplog.at_level(logging.WARNING):
    pruned.fit(*toy_data(32), epochs=1, batch_size=16, verbose=0,
               callbacks=[tfprune.PruningCallback()])
  assert "fine-tune with fixed gates was skipped" in caplog.text
  assert all(not w.gate.trainable for w in method.wrappers)
  kept = {w.layer.name: int(w.gate.unit_mask.numpy().sum()) for w in method.wrappers}
  assert kept == {"fc1": 8, "fc2": 4}


def test_callback_signatures_are_consistent(tmp_path, mlp):
  method = tfprune.get_method(tfprune.prune(mlp(), "magnitude"))
  new = tfprune.PruningSummaries(method, str(tmp_path))
  assert new.method is method and new.log_dir == str(tmp_path)
  with pytest.warns(DeprecationWarning, match="old argument order"):
    old = tfprune.PruningSummaries(str(tmp_path), method)
  assert old.method is method and old.log_dir == str(tmp_path)
  callback = tfprune.PruningCallback(method, str(tmp_path))
  assert callback.method is method and callback.log_dir == str(tmp_path)
  with pytest.raises(ValueError, match="needs log_dir"):
    tfprune.PruningSummaries(method)


def test_no_function_shadows_its_submodule():
  import types  # pylint: disable=g-import-not-at-top
  assert isinstance(tfprune.shrink, types.ModuleType)
  assert callable(tfprune.shrink_model)
  for name in ("report", "optimizers", "methods", "masks", "schedules"):
    assert isinstance(getattr(tfprune, name), types.ModuleType), name


def test_gradient_hook_without_a_gradient_method_is_refused():
  opt = tfprune.optimizers.GradientHook(keras.optimizers.SGD())
  with pytest.raises(ValueError, match="not attached"):
    opt.apply_gradients([(tf.ones(2), keras.Variable(np.ones(2, "float32")))])
  with pytest.raises(ValueError, match="cannot serve"):
    opt.attach(tfprune.methods.get_method_class("magnitude")())


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
