"""The paper's generators. ``build(name)`` turns a preset name into a model (see presets.py)."""

from cxrnb.models.base import GenerativeModel, InputSpec
from cxrnb.models.presets import PRESETS, Preset, build

__all__ = ["GenerativeModel", "InputSpec", "PRESETS", "Preset", "build"]
