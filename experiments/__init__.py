"""lblab experiments: runner, workloads, analysis and the `lblab` command."""
