"""Leaves the command modules that import the model (torch) out of the SDK's wheel.

The `rnn-sentiment` command finds them missing and says which distribution to install instead.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

# cli/ modules that import rnn_sentiment.model: `train` and `eval` (remote eval scores with model code).
SERVER_SIDE_MODULES = {("rnn_sentiment.cli", name) for name in ("train_command", "eval_command", "remote_eval")}


class BuildClientOnly(build_py):
    def find_package_modules(self, package, package_dir):  # type: ignore[no-untyped-def]
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in SERVER_SIDE_MODULES]


setup(cmdclass={"build_py": BuildClientOnly})
