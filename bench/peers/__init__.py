"""TorchServe 0.12 and MLServer 1.7 serving our checkpoint, for side-by-side benchmarks (make bench-peers).

They run from their own virtual environment (bench/.peers-venv, made by setup.sh), never the
project's. Their handlers call the same model functions as our server, so the comparison is the
serving stack, not the model.
"""
