"""Structured pruning: channel dependency graph and physical channel removal."""
from tfprune.structured.depgraph import ChannelGraph
from tfprune.structured.depgraph import Group
from tfprune.structured.depgraph import Member
from tfprune.structured.slicing import remove_units
from tfprune.structured.slicing import ShrinkMismatchError
from tfprune.structured.slicing import shrink
from tfprune.structured.report import format_shrink_report
from tfprune.structured.report import layer_costs
from tfprune.structured.report import shrink_report
from tfprune.structured.scope import ChannelScope
from tfprune.structured import latency
from tfprune.structured.latency import LatencyModel
from tfprune.structured.latency import measure_table
