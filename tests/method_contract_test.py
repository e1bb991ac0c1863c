"""The method contract stays small (docs/methods.md): the public members of the three
base classes are pinned, every registered method overrides only what the contract lists
as overridable, and post-training methods carry no training driver. No training here."""
import os
import re
import sys

import pytest

import tfprune
from tfprune.methods import base

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DOC = "docs/methods.md"

# Public members (methods, properties and class attributes; `dir()`, no underscore
# names). Adding one is a change of the contract: write it down in docs/methods.md and
# update the number here.
MEMBER_COUNTS = {base.MethodCore: 25, base.PruningMethod: 44, base.PostTrainingMethod: 27}


def _public(cls):
  return sorted(n for n in dir(cls) if not n.startswith("_"))


@pytest.mark.parametrize("cls", list(MEMBER_COUNTS), ids=lambda c: c.__name__)
def test_public_member_count_is_pinned(cls):
  names = _public(cls)
  assert len(names) == MEMBER_COUNTS[cls], (
      f"{cls.__name__} has {len(names)} public members, the contract {MEMBER_COUNTS[cls]}:"
      f" {names}. A new public member changes the method contract: document it in "
      f"{DOC} (and OVERRIDABLE in tfprune/methods/base.py if methods may override it), "
      f"then update MEMBER_COUNTS in tests/method_contract_test.py.")


def test_the_bases_split_the_core():
  core = set(_public(base.MethodCore))
  training, post = set(_public(base.PruningMethod)), set(_public(base.PostTrainingMethod))
  assert core < training and core < post
  assert post - core == {"apply", "calibration_samples"}
  assert {"update", "on_train_begin", "on_train_step", "on_train_end", "fit",
          "prepare_optimizer", "observe_gradients"} <= training - core
  # The channel scope is a plug-in (`method.channels`), not properties on every method.
  for gone in ("round_to", "min_units", "ignored_layers", "target_macs", "criterion",
               "target_latency", "latency_precision", "latency_table", "graph",
               "structured_units", "channel_report"):
    assert gone not in training | post, gone


@pytest.mark.parametrize("name", tfprune.available_methods())
def test_registered_methods_override_only_the_overridable(name):
  cls = tfprune.methods.get_method_class(name)
  bases = (base.PruningMethod, base.PostTrainingMethod, base.MethodCore)
  inherited = set(_public(base.PruningMethod)) | set(_public(base.PostTrainingMethod))
  defined = set()
  for klass in cls.__mro__:
    if klass in bases:
      break
    defined |= {k for k in vars(klass) if not k.startswith("_")}
  overridden = defined & inherited
  extra = sorted(overridden - set(base.OVERRIDABLE))
  assert not extra, (f"{cls.__name__} overrides {extra}, which the contract does not "
                     f"list as overridable (base.OVERRIDABLE, {DOC}).")
  assert issubclass(cls, base.PostTrainingMethod) != issubclass(cls, base.PruningMethod)
  assert cls.post_training == issubclass(cls, base.PostTrainingMethod)


@pytest.mark.parametrize("name", [n for n in tfprune.available_methods()
                                  if tfprune.methods.get_method_class(n).post_training])
def test_post_training_methods_have_no_training_driver(name):
  cls = tfprune.methods.get_method_class(name)
  method = cls(target_sparsity=0.5)
  for driver in ("on_train_step", "on_train_begin", "on_train_end", "update", "fit"):
    assert not hasattr(cls, driver), (name, driver)
  assert not hasattr(method, "on_train_step")
  assert cls.apply is not base.PostTrainingMethod.apply
  with pytest.raises(ValueError, match=rf"Method '{name}' prunes after training: call "
                                       r"method\.apply"):
    tfprune.PruningCallback(method)


def test_the_document_mirrors_the_overridable_list():
  with open(os.path.join(ROOT, DOC), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## 2.", 1)[1].split("\n## ", 1)[0]
  listed = set(re.findall(r"`(\w+)`", section))
  missing = sorted(set(base.OVERRIDABLE) - listed)
  assert not missing, f"{DOC} section 2 does not list {missing} (base.OVERRIDABLE)."
  for name in base.HOOKS + base.DECLARED:
    assert f"`{name}`" in text, name


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
