"""Structured pruning: channel dependency graph and physical channel removal."""
from tfprune.structured.depgraph import ChannelGraph
from tfprune.structured.depgraph import Group
from tfprune.structured.depgraph import Member
from tfprune.structured.slicing import remove_units
from tfprune.structured.slicing import shrink
