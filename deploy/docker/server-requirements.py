"""Print the server's requirements (the core dependencies and the `server` extra) from pyproject.toml.

The image installs them in a layer of their own, before the sources are copied, so editing the
code does not reinstall torch.
"""

import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (an older CUDA base image): pip install tomli first
    import tomli as tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]

for requirement in [*project["dependencies"], *project["optional-dependencies"]["server"]]:
    # A self-reference ("rnn-sentiment[x]") is the package itself, installed in a later layer.
    if not requirement.replace("_", "-").startswith(project["name"]):
        print(requirement)
