"""Output: where the run goes, resuming, logs."""
from absl import flags

flags.DEFINE_string("output_dir", "runs/default", "[output] Where model.keras, report.json, "
                    "sparsity.png and calibration.npz go. The run is written into a "
                    "temporary sibling directory and renamed into place when complete.")
flags.DEFINE_bool("overwrite", False, "[output] Replace a non-empty --output_dir (and "
                  "discard an interrupted run's checkpoint).")
flags.DEFINE_bool("resume", False, "[output] Continue an interrupted run of the same "
                  "flags from its last epoch checkpoint.")
flags.DEFINE_string("tensorboard_dir", None, "[output] TensorBoard log directory "
                    "(loss/accuracy per phase, pruning scalars; optional).")
flags.DEFINE_enum("tf_log_level", "quiet", ["quiet", "error", "warning", "info"],
                  "[output] TensorFlow's own C++/Python log output: quiet (default: "
                  "none) ... info (everything TF prints).")
flags.DEFINE_float("testonly_epoch_delay_s", 0.0, "[output] Testing only: sleep this long "
                   "after each epoch checkpoint (fault-injection tests).", lower_bound=0.0)
