"""The parts of scripts/mutate.py: test selection by coverage, private tree copies, the worker pool."""
