"""Method: the pruning method, its target, scope and method-specific arguments."""
from absl import flags

import tfprune
from tfprune import masks as masks_lib

flags.DEFINE_enum("method", "magnitude", tfprune.available_methods(),
                  "[method] Pruning method.")
flags.DEFINE_float("target_sparsity", 0.9, "[method] Final fraction of zero weights, in "
                   "[0, 1). Refused before training when a layer would keep no weight.")
flags.DEFINE_enum("scope", None, masks_lib.SCOPES + ("neuron",),
                  "[method] Mask scope (default: the method's own; magnitude: layer, "
                  "admm: global; sap also takes neuron).")
flags.DEFINE_integer("block_size", 4, "[method] Block length for --scope=block (4 float, "
                     "16 int8).")
flags.DEFINE_enum("allocation", None, masks_lib.ALLOCATIONS,
                  "[method] Allocation for block/structured scopes (default: the "
                  "method's own).")
flags.DEFINE_multi_string("method_arg", [], "[method] Extra method argument as key=value "
                          "(JSON value), e.g. --method_arg=rho0=0.001. Repeatable.")


@flags.validator("target_sparsity", message="--target_sparsity must be in [0, 1).")
def _check_sparsity(value):
  return 0.0 <= value < 1.0


@flags.validator("block_size", message=f"--block_size must be one of "
                 f"{masks_lib.BLOCK_SIZES}.")
def _check_block(value):
  return value in masks_lib.BLOCK_SIZES


# Method-specific flags, passed only to methods whose constructor takes that argument.
METHOD_FLAGS = {}


def method_flag(name, default, help_text, kind="float", kwarg=None, **kwargs):
  """Defines a method-specific flag passed as `kwarg` (default: same name)."""
  define = {"float": flags.DEFINE_float, "int": flags.DEFINE_integer,
            "bool": flags.DEFINE_bool, "string": flags.DEFINE_string}[kind]
  define(name, default, help_text, **kwargs)
  METHOD_FLAGS[name] = kwarg or name


# ADMM (also takes --finetune_epochs, a schedule flag).
METHOD_FLAGS["finetune_epochs"] = "finetune_epochs"
method_flag("admm_epochs", None, "[method] ADMM: epochs of the ADMM phase (the rest of "
            "--prune_epochs fine-tunes).", "int", kwarg="admm_epochs")
method_flag("admm_fraction", None, "[method] ADMM: fraction of --prune_epochs spent in the ADMM "
            "phase when --admm_epochs is not given (default 0.6).", kwarg="admm_fraction")
method_flag("rho", None, "[method] ADMM: initial penalty rho0 (1e-4 .. 1e-3).", kwarg="rho0")
method_flag("rho_growth", None, "[method] ADMM: rho multiplier per Z-step.", kwarg="rho_growth")
method_flag("rho_max", None, "[method] ADMM: cap on rho.", kwarg="rho_max")
method_flag("admm_interval", None, "[method] ADMM: steps between Z/U updates.", "int",
            kwarg="admm_interval")
method_flag("admm_penalty", None, "[method] ADMM: 'loss' (penalty in the loss) or 'optimizer' "
            "(gradient term added by tfprune.optimizers.ADMM).", "string", kwarg="penalty")
method_flag("finetune_lr", None, "[method] ADMM: learning rate of the masked fine-tune.",
            kwarg="finetune_lr")
method_flag("finetune_schedule", None, "[method] ADMM: 'constant' or 'cosine' fine-tune LR.",
            "string", kwarg="finetune_schedule")

# SAP (PQ Index-guided adaptive pruning).
method_flag("sap_rounds", None, "[method] SAP: pruning rounds T.", "int", kwarg="rounds")
method_flag("sap_epochs_per_round", None, "[method] SAP: training epochs per round (default: "
            "--prune_epochs split over the rounds).", "int", kwarg="epochs_per_round")
method_flag("pq_p", None, "[method] PQ Index p (0 < p < q).", kwarg="p")
method_flag("pq_q", None, "[method] PQ Index q.", kwarg="q")
method_flag("sap_gamma", None, "[method] SAP: gamma, the pruning-rate multiplier.", kwarg="gamma")
method_flag("sap_beta", None, "[method] SAP: beta, cap on the fraction pruned per round.",
            kwarg="beta")
method_flag("sap_eta_r", None, "[method] SAP: eta_r, the lower-bound slack.", kwarg="eta_r")
method_flag("sap_stop_on_pqi", None, "[method] SAP: stop when PQI turns down again after rising "
            "(the collapse signal); keeps the peak round.", "bool", kwarg="stop_on_pqi")
method_flag("sap_rewind", None, "[method] SAP: rewind to the initial weights each round.", "bool",
            kwarg="rewind")
method_flag("sap_min_accuracy", None, "[method] SAP: stop (keeping the previous round) when "
            "validation accuracy falls below this.", kwarg="min_accuracy")


# Layer-wise, retrain-free methods (logsum, l0, wanda, sparsegpt); --finetune_epochs
# fine-tunes after them. sparsegpt's target: --method_arg=target='"dense_outputs"'.
method_flag("calibration_samples", None, "[method] layer-wise methods: unlabelled training "
            "inputs used as calibration data (default 10000; >= 1; clamped, with a message, "
            "to the training set size).", "int", kwarg="calibration_samples",
            lower_bound=1)
method_flag("eta", None, "[method] logsum/l0: early-termination tolerance of each layer's solve "
            "(default 1e-3).", kwarg="eta")
method_flag("eps", None, "[method] logsum: epsilon of the log-sum penalty (default 0.1).",
            kwarg="eps")
method_flag("layerwise_mode", None, "[method] layer-wise methods: 'cascade' (inputs from the "
            "pruned layers before, default) or 'parallel' (from the original network).",
            "string", kwarg="mode")
method_flag("relu_model", None, "[method] logsum/l0: fit only where the original ReLU output is "
            "positive.", "bool", kwarg="relu_model")
