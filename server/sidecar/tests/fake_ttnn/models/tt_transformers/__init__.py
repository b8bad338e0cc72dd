"""Part of the fake tt-metal tree for the sidecar tests (see ttnn/__init__.py)."""
