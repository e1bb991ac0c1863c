"""Schedule: epochs, batches, learning rate, the sparsity schedule, seed."""
from absl import flags

flags.DEFINE_integer("dense_epochs", 10, "[schedule] Epochs of dense training.",
                     lower_bound=0)
flags.DEFINE_integer("prune_epochs", 10, "[schedule] Epochs of pruning + fine-tuning (the "
                     "method's whole budget).", lower_bound=0)
flags.DEFINE_integer("finetune_epochs", None, "[schedule] Masked fine-tuning epochs (ADMM: "
                     "after the hard prune; post-training methods: after pruning, default "
                     "0).", lower_bound=0)
flags.DEFINE_integer("batch_size", 128, "[schedule] Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "[schedule] Adam learning rate.",
                   lower_bound=0.0)
flags.DEFINE_enum("schedule", "polynomial", ["polynomial", "constant"],
                  "[schedule] Sparsity schedule for training-time methods.")
flags.DEFINE_float("schedule_fraction", 0.6, "[schedule] PolynomialDecay reaches the "
                   "target after this fraction of the pruning steps.", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_integer("frequency", 100, "[schedule] Steps between mask updates.",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "[schedule] Random seed (weights, data order).")
flags.DEFINE_integer("bn_recalibration_samples", 1024,
                     "[schedule] After dense training and after strip, re-estimate every "
                     "BatchNormalization's moving mean/variance on the first N training "
                     "inputs (label-free, no weight update; short runs leave them stale). "
                     "0: off. No effect on models without BatchNormalization.",
                     lower_bound=0)
