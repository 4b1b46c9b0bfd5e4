"""Shared test configuration.

Under CI (``CI`` set) Hypothesis runs derandomized, so a green build stays green and a
failure reproduces; locally it explores new examples on every run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
