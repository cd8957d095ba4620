"""The package version, in a leaf module so every layer can read it.

``dspy_bridge/__init__.py`` is the top of the house (it re-exports the public names of every
layer), so a module below it that wants the version — the cassette cache key, cassette metadata,
the format-version error — imports it from here, never from ``dspy_bridge``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
