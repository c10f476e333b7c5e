# lblab: the two commands a user needs are `sudo make run` and `sudo make test`.
SHELL := /bin/bash
VENV  := .venv
LBLAB := $(VENV)/bin/lblab
PYTEST := $(VENV)/bin/python -m pytest

.PHONY: setup run test test-vm unit integration bench clean help

help:
	@echo "sudo make run    install what is missing, run the default suite into results/"
	@echo "sudo make test   install what is missing, run unit and integration tests"
	@echo "sudo make test-vm  kernel-path tests (OVS module, netem, ip_gre) in a Debian 12 qemu guest"
	@echo "sudo make bench  performance checks -> results/bench/<run-id>/bench.csv"
	@echo "sudo make setup  the install step alone (idempotent)"
	@echo "sudo make clean  remove leftovers of crashed lblab runs (only lblab's)"

setup:
	@bash tools/setup.sh

# The default suite: every registered experiment at reduced size, then the report
# (results/suite/<id>/report.md). `make run SUITE=full` for the full one.
SUITE ?= quick
run: setup
	$(LBLAB) run --suite $(SUITE) $(RUN_ARGS)

# Unit tests first (fast, no root needed), then integration tests serially (one OVS, one
# machine). pytest exit 5 (no tests collected) counts as failure: a suite that runs nothing
# proves nothing.
test: setup
	$(LBLAB) clean
	$(PYTEST) tests/unit -q
	$(PYTEST) tests/integration -q -m "integration and not kernel" -p no:cacheprovider

# The kernel lane: a cached Debian 12 guest image (.cache/vm/<key>/, built on first use with
# debootstrap), booted with qemu (KVM where it works, else TCG), runs tests/kernel (-m kernel).
test-vm:
	@bash tools/vm/test-vm.sh

unit: setup
	$(PYTEST) tests/unit -q

integration: setup
	$(LBLAB) clean
	$(PYTEST) tests/integration -q -m "integration and not kernel"

bench: setup
	$(LBLAB) bench

clean:
	@if [ -x $(LBLAB) ]; then $(LBLAB) clean; else echo "nothing to clean (no venv)"; fi
