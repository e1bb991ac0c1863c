"""Layer-wise, label-free, retrain-free pruning (log-sum, l0, ...): the shared engine.

Each prunable kernel is pruned on its own so that its response on unlabelled calibration
inputs stays close to the original one (Net-Trim, Aghasi et al. 2017; Wang et al., IEEE
Trans. Computers 70(2) 2021; Phan et al., ICDM 2020). For a layer with inputs `X`
(n x d; im2col patches for a convolution, one-hot rows for an embedding) and original
pre-activations `Y = X W0 + b`:

    F(W) = 1/(2n) ||X W + b - Y||_F^2 = 1/2 tr(W^T G W) - tr(W^T C) + const,
    G = X^T X / n,   C = X^T (Y - b) / n,   grad F = G W - C.

Modules (the maths: docs/algorithms.md sections 3 and 4):

  * `geometry`: which layers, and how a kernel is a batch of `[B, d, m]` problems
    (Dense, Conv1D/2D, DepthwiseConv1D/2D, EinsumDense incl. MultiHeadAttention's
    projections, Embedding), im2col, and why other kernel layers are skipped.
  * `calibration`: the calibration data and its checks, for both the single-device and
    the `tf.distribute` path.
  * `stats`: streaming Gram statistics (`compute_stats`), the all-reduced pass over a
    strategy (`distributed_stats`), token counts for embeddings.
  * `solvers`: the scaled `LayerProblem`, FISTA / prox iteration, refit, `LayerSolver`.
  * `relu`: the ReLU model (majorise-minimise).
  * `batchnorm`: BatchNorm re-calibration of the pruned network on the calibration
    inputs (`recalibrate_batchnorm`; `prune_layerwise(..., bn_recalibration=True)`).
  * `engine`: `prune_layerwise`, the cascade / parallel driver and its report.

Solvers plug in through `LayerSolver` (`tfprune.methods.logsum`, `tfprune.methods.l0`).
"""
from tfprune.layerwise.batchnorm import recalibrate_batchnorm
from tfprune.layerwise.calibration import calibration_batches
from tfprune.layerwise.calibration import calibration_dataset
from tfprune.layerwise.calibration import input_spec
from tfprune.layerwise.engine import ALLOCATIONS
from tfprune.layerwise.engine import MODES
from tfprune.layerwise.engine import Report
from tfprune.layerwise.engine import find_units
from tfprune.layerwise.engine import format_skip
from tfprune.layerwise.engine import format_table
from tfprune.layerwise.engine import prune_layerwise
from tfprune.layerwise.geometry import SUPPORTED_LAYERS
from tfprune.layerwise.geometry import inner_layer
from tfprune.layerwise.geometry import is_supported
from tfprune.layerwise.geometry import kernel_to_problems
from tfprune.layerwise.geometry import kernel_variable
from tfprune.layerwise.geometry import layer_patches
from tfprune.layerwise.geometry import problems_to_kernel
from tfprune.layerwise.geometry import skip_reason
from tfprune.layerwise.geometry import supported_layers
from tfprune.layerwise.solvers import LayerProblem
from tfprune.layerwise.solvers import LayerSolver
from tfprune.layerwise.solvers import accelerated_prox_solve
from tfprune.layerwise.solvers import gram_matmul
from tfprune.layerwise.solvers import make_problem
from tfprune.layerwise.solvers import power_iteration
from tfprune.layerwise.solvers import refit
from tfprune.layerwise.solvers import relative_error
from tfprune.layerwise.solvers import support_scores
from tfprune.layerwise.stats import STATS_DTYPES
from tfprune.layerwise.stats import EmbeddingStats
from tfprune.layerwise.stats import LayerStats
from tfprune.layerwise.stats import compute_stats
from tfprune.layerwise.stats import distributed_stats
