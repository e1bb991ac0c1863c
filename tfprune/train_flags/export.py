"""Export: what the stripped model and the files for tfprune-export look like."""
from absl import flags

flags.DEFINE_bool("shrink", False, "[export] Strip with shrink=True: delete closed units "
                  "(l0_gates).")
flags.DEFINE_integer("calibration_export", 500, "[export] Training inputs written to "
                     "<output_dir>/calibration.npz (key 'x') for tfprune-export's int8 "
                     "calibration and verification; 0 writes none. Clamped (with a "
                     "message) to the training set size.", lower_bound=0)
flags.DEFINE_bool("save_optimizer", False, "[export] Keep the optimizer state in "
                  "model.keras (only useful to continue training; about 3x the size).")
