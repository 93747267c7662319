"""The one thing pyproject.toml cannot say: which packages the wheel holds.

The repository keeps its top-level folders (core/, backends/, agents/, tui/, themes/); the wheel
installs them under one name, `agentdeck` (`agentdeck.core.scheduler`, ...), so agentdeck never
collides with another project's `core` or `agents`. `agentdeck` itself is a namespace package:
it has no file of its own. Every sub-package found below those folders is included, so a new one
needs no edit here.
"""

from setuptools import find_packages, setup

FOLDERS = ("core", "backends", "agents", "tui", "themes")

setup(
    packages=[f"agentdeck.{name}" for name in find_packages(include=[f"{f}*" for f in FOLDERS])],
    package_dir={f"agentdeck.{folder}": folder for folder in FOLDERS},
)
