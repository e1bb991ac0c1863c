"""MultiWorkerMirroredStrategy: 2 local worker processes run ADMM and end identical.

The test starts two worker processes of THIS file (`--worker`) on 127.0.0.1 ports with
their TF_CONFIG, waits for them with a time limit, and always kills what it started.
Each worker builds and prunes the model inside `strategy.scope()`, trains a custom
`strategy.run` loop through ADMM Z/U steps and the hard prune (Z-steps run in the
cross-replica context from the synchronised weights), then writes its masks, weights
and Z/U to an .npz. Both workers must hold identical masks (exact k) and state.

Run alone: `.venv/bin/python tests/multiworker_test.py` (about 30-60 s on 2 cores).
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

TIMEOUT_S = 240
STEPS = 7  # Z-steps at 0, 2, 4; hard prune at 6


def _free_ports(n):
  socks, ports = [], []
  for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
  for s in socks:
    s.close()
  return ports


def _worker(index, ports, out_dir):
  """One worker: ADMM for STEPS steps under MultiWorkerMirroredStrategy."""
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
      "task": {"type": "worker", "index": index}})
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune import distribute  # pylint: disable=g-import-not-at-top

  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS * 16, 10)).astype("float32")
  y = (x[:, 0] - x[:, 3] > 0).astype("int32")
  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(2)])
    pruned = tfprune.prune(model, "admm", target_sparsity=0.8, scope="global",
                           admm_interval=2, rho0=1e-2, admm_steps=STEPS - 1)
    optimizer = keras.optimizers.SGD(0.1)
  method = tfprune.get_method(pruned)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)

  def replica_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, pruned(xb, training=True)) / 16.0 + sum(pruned.losses, 0.0) / 2.0
    grads = tape.gradient(loss, pruned.trainable_variables)
    optimizer.apply_gradients(zip(grads, pruned.trainable_variables))

  @tf.function
  def step(xb, yb):
    strategy.run(replica_step, args=(xb, yb))

  method.on_train_begin()
  for xb, yb in strategy.experimental_distribute_dataset(data):
    method.on_train_step()  # Z/U steps and the hard prune, cross-replica
    step(xb, yb)
  method.on_train_end()
  arrays = {}
  for i, v in enumerate(method.masks):
    arrays[f"mask_{i}"] = v.numpy()
  for i, v in enumerate(method.weights):
    arrays[f"weight_{i}"] = v.numpy()
  for i, (z, u) in enumerate(zip(method.z, method.u)):
    arrays[f"z_{i}"], arrays[f"u_{i}"] = z.numpy(), u.numpy()
  arrays["steps"] = np.array(int(method.step.numpy()))
  arrays["hard_prune_step"] = np.array(method.hard_prune_step)
  arrays["out_of_sync"] = np.array(len(distribute.replicas_in_sync(pruned.weights)))
  np.savez(os.path.join(out_dir, f"worker{index}.npz"), **arrays)


def test_two_workers_end_with_identical_masks(tmp_path):
  ports = _free_ports(2)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
  procs = []
  try:
    for i in range(2):
      procs.append(subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), "--worker", str(i),
           ",".join(map(str, ports)), str(tmp_path)],
          env=env, stdout=logs[i], stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
  except subprocess.TimeoutExpired:
    pytest.fail(f"multi-worker run exceeded {TIMEOUT_S} s")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=30)
    for f in logs:
      f.close()
  for i, p in enumerate(procs):
    assert p.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-4000:]
  w0 = np.load(tmp_path / "worker0.npz")
  w1 = np.load(tmp_path / "worker1.npz")
  assert sorted(w0.files) == sorted(w1.files)
  for key in w0.files:
    np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
  assert int(w0["hard_prune_step"]) == STEPS - 1
  assert int(w0["out_of_sync"]) == 0
  masks = [w0[k] for k in sorted(w0.files) if k.startswith("mask_")]
  total = sum(m.size for m in masks)
  assert sum(m.sum() for m in masks) == int(np.ceil(0.2 * total - 1e-9))


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _worker(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], sys.argv[4])
    sys.exit(0)
  sys.exit(pytest.main([__file__]))
