"""Torch-Pruning (DepGraph) baseline: ResNet-8 dense training, structured pruning, fine-tune.

Runs in its own venv (bench/setup_torch_pruning.sh: PyTorch CPU + torch-pruning 1.6), never
in a process with TensorFlow; bench/structured_bench.py starts it as a subprocess with the
same data (an .npz of NHWC float32 images) and the same epochs, and reads one JSON line.

  .venv-torch/bin/python bench/torch_pruning_runner.py --data=D.npz --dense_epochs=4 \
      --finetune_epochs=4 --target_macs=0.5 --allocation=layer
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn
import torch_pruning as tp


class Block(nn.Module):
  """MLPerf Tiny ResNet-8 stack: two 3x3 convs, a 1x1 projection when the shape changes."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
    self.bn2 = nn.BatchNorm2d(cout)
    self.proj = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    s = x if self.proj is None else self.proj(x)
    return torch.relu(y + s)


class ResNet8(nn.Module):
  def __init__(self, channels=1, classes=10):
    super().__init__()
    self.stem = nn.Conv2d(channels, 16, 3, 1, 1)
    self.bn = nn.BatchNorm2d(16)
    self.stack1 = Block(16, 16, 1)
    self.stack2 = Block(16, 32, 2)
    self.stack3 = Block(32, 64, 2)
    self.fc = nn.Linear(64, classes)

  def forward(self, x):
    x = torch.relu(self.bn(self.stem(x)))
    x = self.stack3(self.stack2(self.stack1(x)))
    return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _batches(x, y, batch, rng):
  order = rng.permutation(len(x))
  for i in range(0, len(x), batch):
    idx = order[i:i + batch]
    yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def train(model, x, y, epochs, batch, lr, seed):
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  rng = np.random.default_rng(seed)
  loss_fn = nn.CrossEntropyLoss()
  model.train()
  for _ in range(epochs):
    for xb, yb in _batches(x, y, batch, rng):
      opt.zero_grad()
      loss_fn(model(xb), yb).backward()
      opt.step()


@torch.no_grad()
def accuracy(model, x, y):
  model.eval()
  correct = 0
  for i in range(0, len(x), 1000):
    correct += int((model(torch.from_numpy(x[i:i + 1000])).argmax(1).numpy() ==
                    y[i:i + 1000]).sum())
  return correct / len(x)


def prune_to_macs(model, example, target, allocation):
  """Group-L2 magnitude pruning (DepGraph) at the channel ratio that meets the MACs."""
  base_macs, _ = tp.utils.count_ops_and_params(model, example)
  lo, hi, best = 0.0, 0.95, None
  state = {k: v.clone() for k, v in model.state_dict().items()}
  for _ in range(12):  # bisection on the channel ratio
    ratio = (lo + hi) / 2
    trial = ResNet8(example.shape[1], model.fc.out_features)
    trial.load_state_dict(state)
    pruner = tp.pruner.MetaPruner(trial, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, global_pruning=allocation == "global",
                                  ignored_layers=[trial.fc])
    pruner.step()
    macs, _ = tp.utils.count_ops_and_params(trial, example)
    if macs <= target * base_macs:
      best, hi = (trial, ratio, macs), ratio
    else:
      lo = ratio
  trial, ratio, macs = best
  return trial, ratio, macs / base_macs


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data", required=True)
  parser.add_argument("--dense_epochs", type=int, default=4)
  parser.add_argument("--finetune_epochs", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--target_macs", type=float, default=0.5)
  parser.add_argument("--allocation", choices=["layer", "global"], default="layer")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  torch.manual_seed(args.seed)
  torch.set_num_threads(args.threads)
  data = np.load(args.data)
  to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2), np.float32)
  x, y = to_nchw(data["x_train"]), data["y_train"].astype(np.int64)
  xt, yt = to_nchw(data["x_test"]), data["y_test"].astype(np.int64)
  start = time.time()
  model = ResNet8(x.shape[1], int(y.max()) + 1)
  train(model, x, y, args.dense_epochs, args.batch_size, args.learning_rate, args.seed)
  dense_acc = accuracy(model, xt, yt)
  example = torch.from_numpy(x[:1])
  pruned, ratio, mac_fraction = prune_to_macs(model, example, args.target_macs,
                                              args.allocation)
  train(pruned, x, y, args.finetune_epochs, args.batch_size, args.learning_rate,
        args.seed + 1)
  print(json.dumps({
      "runner": "torch_pruning", "version": tp.__version__, "torch": torch.__version__,
      "allocation": args.allocation, "dense_accuracy": dense_acc,
      "accuracy": accuracy(pruned, xt, yt), "channel_ratio": ratio,
      "mac_fraction": mac_fraction,
      "params": sum(p.numel() for p in pruned.parameters()),
      "seconds": time.time() - start}))


if __name__ == "__main__":
  main()
