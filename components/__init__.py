"""salient: salient-frame sampling for efficient video recognition.

Importing the package switches off every tool's telemetry and keeps caches out of ``$HOME``
(see :mod:`components.core.runtime`), before any of those tools is imported.
"""
from components.core import runtime as _runtime

_runtime.quiet_environment()

__version__ = "0.1.0"
