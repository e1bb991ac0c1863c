"""tfprune-train's flags, one module per group so that `--helpfull` lists them grouped.

absl attributes a flag to the module that defines it and lists flags per module, so
each group lives in its own module: `data`, `model`, `method`, `schedule`, `export`,
`output` (`GROUPS`, in the order `tfprune.bin.train.grouped_help()` prints them).
"""
from tfprune.train_flags import data
from tfprune.train_flags import model
from tfprune.train_flags import method
from tfprune.train_flags import schedule
from tfprune.train_flags import export
from tfprune.train_flags import output

GROUPS = (data, model, method, schedule, export, output)
