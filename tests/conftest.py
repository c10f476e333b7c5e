"""Shared test setup: the repository root on sys.path (so tests run from a fresh clone even
before `pip install -e .`), and helpers for scenario files."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
