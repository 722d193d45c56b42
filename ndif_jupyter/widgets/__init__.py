"""The activation browser: saved hidden states as interactive widgets, reduced in the kernel, with static pictures."""

from .browse import browse
from .widget import ActivationBrowser

__all__ = ["ActivationBrowser", "browse"]
