"""RADICAL Rhapsody (``rhapsody-py``): detected, not yet driven.

Selecting ``backend="rhapsody"`` answers 422 with this explanation instead of pretending:
the adapter to Rhapsody's session API is not written yet (see docs/tasks.md).
"""

from __future__ import annotations


def available() -> bool:
    try:
        import rhapsody  # noqa: F401
    except ImportError:
        return False
    return True


def unavailable_reason() -> str:
    if not available():
        return "the rhapsody backend needs rhapsody-py (pip install rhapsody-py), which is not installed on this edge"
    return "rhapsody-py is installed, but this Isthmus release has no adapter for it yet; use local or dask"
