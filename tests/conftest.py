import sys
from pathlib import Path

# tests/support.py is imported as `tests.support`; the repo root must be importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
