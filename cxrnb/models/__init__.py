"""The paper's generators. ``build(name)`` turns a preset name into a model (see presets.py)."""

from cxrnb.models.base import GenerativeModel, InputSpec

__all__ = ["GenerativeModel", "InputSpec"]
