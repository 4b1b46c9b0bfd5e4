"""A real OpenAI-compatible server for the served-target tests: ``transformers serve``.

SpecPC's served path is "compress here, answer there": the answering LLM sits behind an
OpenAI-compatible HTTP API and never shares weights or a process with the draft. To test
that path for real, :func:`served_target` starts Hugging Face's ``transformers serve`` on
the smollm2-135m bundle folder (the same offline weights the other real tests use), on
127.0.0.1 only, and the tests talk to it through the ordinary LangChain and LlamaIndex
clients.

The fixture is session-scoped (one server, loaded once) and bounded: it waits at most
``SERVER_START_TIMEOUT`` seconds for the server to answer, fails with the tail of the
server's stderr when it exits or never answers (rather than hanging), and kills the whole
process group on teardown. The hub is switched off in the server's environment, so a
missing file is an error here and never a download.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from specrag import pull_bundle

SERVED_BUNDLE = "smollm2-135m"
SERVER_START_TIMEOUT = 120.0
"""Seconds to wait for the server to load the model and answer; loading takes ~10 s."""
SERVER_THREADS = "1"
"""Torch threads of the server: the test machines have 2 cores and the client needs one."""
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Readiness probes go straight to loopback, whatever proxy the environment names."""


@dataclass(frozen=True)
class ServedTarget:
    """Where the served answering model is: what a client needs and nothing more."""

    base_url: str
    """OpenAI-compatible API root, ending in ``/v1``."""
    model: str
    """The model id the server lists under ``/v1/models`` (the served folder's path)."""
    log: Path
    """The server's stderr, for failure messages."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The socket is closed before the server binds it, so another process could take it in
    between; the server then exits with "address in use" and the fixture fails saying so.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file (the part that says why it failed)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError as error:
        return f"(no log: {error})"


def _get_json(url: str, timeout: float) -> object:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def serve_command() -> list[str]:
    """The ``transformers`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("transformers")
    found = str(beside) if beside.is_file() else shutil.which("transformers")
    if found is None:
        pytest.fail("the `transformers` command is missing: pip install -e '.[served]'")
    return [found, "serve"]


def server_env() -> dict[str, str]:
    """The server's environment: offline hub, no telemetry, few threads."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": SERVER_THREADS,
        "MKL_NUM_THREADS": SERVER_THREADS,
        "TOKENIZERS_PARALLELISM": "false",
    }


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float) -> str:
    """Poll ``/v1/models`` until the server lists a model; return its id.

    Fails (never hangs) when the server exits first or the deadline passes, quoting its
    stderr so that the reason (a missing extra, a port taken, a bad folder) is in the report.
    """
    last_error = "no answer yet"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            pytest.fail(f"transformers serve exited with status {code} before answering:\n{tail(log)}")
        try:
            listing = _get_json(f"{base_url}/models", timeout=2.0)
        except (urllib.error.URLError, OSError, ValueError) as error:
            last_error = repr(error)
        else:
            models = listing.get("data", []) if isinstance(listing, dict) else []
            if models:
                return str(models[0]["id"])
            last_error = f"no model listed yet: {listing!r}"
        time.sleep(0.5)
    pytest.fail(f"transformers serve did not answer within {SERVER_START_TIMEOUT:.0f} s ({last_error}):\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group; kill it if it has not exited after 10 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def serve(folder: Path, logs: Path, timeout: float = SERVER_START_TIMEOUT) -> Iterator[ServedTarget]:
    """Run ``transformers serve`` on ``folder`` for the ``with`` block, on a free loopback port.

    fp32 on the CPU: the bundles are stored in bf16, which CPUs without native bf16 (most)
    run several times slower than fp32, and these models are small enough for either. The
    server is stopped (its whole process group) however the block ends.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = logs / "stderr.log"
    command = [
        *serve_command(),
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        "warning",
    ]
    with (logs / "stdout.log").open("wb") as stdout, log.open("wb") as stderr:
        # Output goes to files, not pipes: a pipe nobody reads fills up and stalls the server.
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=server_env(), start_new_session=True
        )
    try:
        model = wait_until_ready(process, base_url, log, timeout)
        yield ServedTarget(base_url=base_url, model=model, log=log)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def served_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTarget]:
    """``transformers serve`` on the smollm2-135m bundle, one server for the whole session."""
    with serve(pull_bundle(SERVED_BUNDLE, progress=False), tmp_path_factory.mktemp("served-target")) as target:
        yield target


@pytest.fixture(scope="session")
def start_server() -> Callable[..., contextlib.AbstractContextManager[ServedTarget]]:
    """:func:`serve` itself, for tests of how the fixture fails (``conftest`` is no module to import)."""
    return serve
