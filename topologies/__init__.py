"""Scenario files -> validated dataclasses -> network plan (pure) -> Mininet net (glue)."""
