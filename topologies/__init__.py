"""The network as data and the parts it is built from: scenario files -> validated dataclasses ->
network plan (pure) -> Mininet Topo; Open vSwitch, the link relay, GRE addressing. Imports
nothing of controller/, gslb/, lab/ or experiments/ (tests/unit/test_layers.py)."""
