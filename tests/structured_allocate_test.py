"""Group importance, allocation (global / layer, round_to, MACs) and exact masked shrink."""
import keras
import numpy as np
import pytest

from tfprune.structured import costs
from tfprune.structured import importance
from tfprune.structured import members
from tfprune.structured import selection
from tfprune.structured import ChannelGraph
from tfprune.structured import remove_units

from depgraph_test import _residual_cnn  # pylint: disable=g-bad-import-order
from depgraph_test import _transformer


def _apply(model, masks):
  for (layer, name), mask in masks.items():
    var = members.weights_by_name(model.get_layer(layer))[name]
    var.assign(var.numpy() * mask)


@pytest.mark.parametrize("allocation", ["global", "layer"])
def test_half_the_channels_masked_then_removed_exactly(allocation):
  m = _residual_cnn()
  g = ChannelGraph(m)
  scores = importance.unit_scores(m, g, "l2")
  units = selection.select_units(g, scores, fraction=0.5, allocation=allocation)
  total = sum(gr.size for gr in g.prunable_groups)
  assert abs(len(units) - total / 2) <= 4
  _apply(m, selection.unit_masks(m, g, units))
  new = remove_units(m, g, units)
  x = np.random.default_rng(0).standard_normal((3, 12, 12, 3)).astype("float32")
  np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-4)
  assert new.count_params() < 0.6 * m.count_params()


def test_round_to_and_min_units():
  m = _residual_cnn()
  g = ChannelGraph(m)
  scores = importance.unit_scores(m, g, "l1")
  units = selection.select_units(g, scores, fraction=0.6, round_to=4, min_units=4)
  kept = {k: gr.size for k, gr in enumerate(g.groups) if not gr.blocked}
  for gi, _ in units:
    kept[gi] -= 1
  assert all(v % 4 == 0 and v >= 4 for v in kept.values()), kept


def test_target_macs_budget_met():
  m = _residual_cnn()
  g = ChannelGraph(m)
  macs = costs.MacModel(m, g)
  dense = macs.total()
  units = selection.select_units(g, importance.unit_scores(m, g), target=0.5,
                                 cost_model=macs)
  assert macs.total() <= 0.5 * dense
  _apply(m, selection.unit_masks(m, g, units))
  new = remove_units(m, g, units)
  assert costs.MacModel(new, ChannelGraph(new)).total() == macs.total()


def test_target_macs_with_layer_allocation_cuts_every_group_alike():
  m = _residual_cnn()
  g = ChannelGraph(m)
  macs = costs.MacModel(m, g)
  dense = macs.total()
  units = selection.select_units(g, importance.unit_scores(m, g), target=0.5,
                                 allocation="layer", cost_model=macs)
  assert macs.total() <= 0.5 * dense
  cut = {}
  for gi, _ in units:
    cut[gi] = cut.get(gi, 0) + 1
  fractions = [cut.get(k, 0) / gr.size for k, gr in enumerate(g.groups) if not gr.blocked]
  assert max(fractions) - min(fractions) <= 0.2, fractions


def test_bn_scale_and_taylor_and_errors():
  m = _residual_cnn()
  g = ChannelGraph(m)
  with pytest.raises(ValueError, match="bn_scale"):
    importance.unit_scores(m, g, "bn_scale")  # the branch/head groups have no BN
  with pytest.raises(ValueError, match="gradients"):
    importance.unit_scores(m, g, "taylor")
  with pytest.raises(ValueError, match="criterion"):
    importance.unit_scores(m, g, "movement")
  with pytest.raises(ValueError, match="exactly one"):
    selection.select_units(g, {}, fraction=0.5, target=0.5)


def test_transformer_heads_removed_exactly():
  m = _transformer()
  g = ChannelGraph(m)
  scores = importance.unit_scores(m, g)
  units = selection.select_units(g, scores, fraction=0.5)
  heads = [k for k, gr in enumerate(g.groups) if gr.units and
           any(mem.role == "head" for mem in gr.units[0])][0]
  assert any(gi == heads for gi, _ in units)
  _apply(m, selection.unit_masks(m, g, units))
  new = remove_units(m, g, units)
  x = np.random.default_rng(5).integers(0, 20, (4, 6)).astype("int32")
  np.testing.assert_allclose(new(x), m(x), rtol=1e-4, atol=1e-5)
  assert new.get_layer("mha").num_heads < 4


def test_pruned_wrapper_model_masks_then_strip_and_shrink_exact():
  import tfprune  # pylint: disable=g-import-not-at-top
  from tfprune.structured import shrink  # pylint: disable=g-import-not-at-top
  m = _residual_cnn()
  pruned = tfprune.prune(m, "magnitude", target_sparsity=0.5)
  g = ChannelGraph(pruned)
  assert len(g.prunable_groups) == len(ChannelGraph(m).prunable_groups)
  masks, units = selection.structured_masks(pruned, 0.5, graph=g)
  for wrapper in tfprune.methods.base.find_wrappers(pruned):
    for var, mask in zip(wrapper.prunable_weights, wrapper.masks):
      key = (wrapper.name, members.weight_name(wrapper.layer, var))
      if key in masks:
        mask.assign(masks[key])
  x = np.random.default_rng(6).standard_normal((3, 12, 12, 3)).astype("float32")
  want = pruned(x)
  small, report = shrink(tfprune.strip(pruned))
  assert sum(report["removed"].values()) == len(units)
  np.testing.assert_allclose(small(x), want, rtol=1e-4, atol=1e-4)
