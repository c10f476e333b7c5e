"""Workloads that run inside Mininet hosts (servers, clients, probes)."""
