"""The package version (as in pyproject.toml; a test checks they agree): recorded in saved edits
and run manifests."""

__version__ = "0.1.0"
