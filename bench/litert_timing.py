"""LiteRT latency as the benchmarks measure it: median of single-threaded invokes.

Protocol: one interpreter per measurement (XNNPACK on or off, 1 thread), every input
set once to seeded random values (not zeros: hybrid kernels short-circuit on all-zero
inputs), `warmup` invokes, then the median of `iters` timed invokes, in microseconds.
Shared by every bench script; imported as a sibling module (`import litert_timing`).
"""
import time

import numpy as np


def random_input(detail, rng, vocab=None):
  """A random value for one input: normal floats, int8/uint8 in range, ids for ints."""
  dtype, shape = detail["dtype"], detail["shape"]
  if np.issubdtype(dtype, np.floating):
    return rng.standard_normal(shape).astype(dtype)
  info = np.iinfo(dtype)
  if vocab is not None or info.bits > 8:  # token ids
    return rng.integers(1, min(vocab or 127, info.max), shape).astype(dtype)
  return np.clip(np.round(rng.standard_normal(shape) * 20), info.min, info.max).astype(dtype)


def latency_us(model_bytes, xnnpack=True, iters=100, warmup=10, vocab=None, seed=0):
  """Median invoke time (us) of `model_bytes` in LiteRT, 1 thread."""
  from tfprune.export import verify  # pylint: disable=g-import-not-at-top
  interp = verify.make_litert_interpreter(model_bytes, xnnpack, num_threads=1)
  rng = np.random.default_rng(seed)
  for detail in interp.get_input_details():
    interp.set_tensor(detail["index"], random_input(detail, rng, vocab))
  for _ in range(warmup):
    interp.invoke()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    interp.invoke()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e6)
