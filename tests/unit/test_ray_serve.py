"""SpecPC behind Ray Serve: one local replica on loopback, real HTTP, bounded.

Ray starts a local cluster (one node, this machine), Serve binds 127.0.0.1 on a free port,
and the replica loads the tiny draft from a folder in its own process. Every wait is
bounded: starting the app may take at most ``START_TIMEOUT`` seconds, each request
``REQUEST_TIMEOUT``; the fixture shuts Serve and Ray down whatever happens.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import ray
from ray import serve

from specrag import SpecPC, load_model
from specrag.integrations.ray_serve import specpc_app

START_TIMEOUT = 240.0
REQUEST_TIMEOUT = 120.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REQUESTS = [
    {"documents": ["The viaduct has fourteen arches.", "It opened in 1889 after two years."], "question": "Arches?"},
    {"documents": ["Ada wrote the parser. Bob wrote the tests."], "question": "Who wrote the tests?"},
    {"documents": ["北京是中国的首都。 The café is in Zürich."], "question": "Capital?", "max_tokens": 5},
    {"documents": ["Rain fell all week on the farms of the north."], "question": "Weather?", "keep_ratio": 0.9},
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(draft_dir: str) -> Iterator[tuple[str, Any]]:
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        # Serve gives its HTTP proxy 5 s to import and start; a loaded 2-core machine needs more.
        env.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "120")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 * 2**20,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",  # the cluster's own traffic stays on loopback too
        )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = specpc_app(
            draft_dir, embedder=None, keep_ratio=0.4, settings={"window": 8}, max_batch_size=4, batch_wait_timeout_s=0.5
        )
        with ThreadPoolExecutor(1) as pool:  # serve.run waits for the replica; bound that wait
            handle = pool.submit(serve.run, app, name="specpc", route_prefix="/compress").result(START_TIMEOUT)
        yield f"http://127.0.0.1:{port}/compress", handle
    finally:
        serve.shutdown()
        ray.shutdown()


def test_concurrent_requests_share_batches_and_equal_local_compression(served: tuple[str, Any], draft_dir: str) -> None:
    url, _ = served
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        replies = list(pool.map(lambda body: post(url, body), REQUESTS))
    local = SpecPC(load_model(draft_dir), embedder=None, keep_ratio=0.4, window=8, progress=False)
    for body, (status, reply) in zip(REQUESTS, replies, strict=True):
        assert status == 200, reply
        budget = {k: body[k] for k in ("keep_ratio", "max_tokens") if k in body}
        expected = local.compress(body["documents"], body["question"], **budget)
        assert reply["texts"] == expected.texts and reply["budget"] == expected.budget
    assert max(reply["batched_with"] for _, reply in replies) > 1  # concurrent requests were batched


def test_a_bad_request_gets_one_line_and_spares_its_batch(served: tuple[str, Any]) -> None:
    url, handle = served
    bad = [
        ({"documents": "not a list", "question": "q"}, "documents"),
        ({"documents": ["x"], "question": "   "}, "question must not be empty"),
        ({"documents": ["x"], "question": "q", "keep_ratio": 2}, "keep_ratio"),
        ({"documents": ["x"], "question": "q", "keep_ratio": 0.5, "max_tokens": 3}, "not both"),
        ([1, 2], "JSON object"),
    ]
    with ThreadPoolExecutor(len(bad) + 1) as pool:
        good = pool.submit(post, url, REQUESTS[0])
        replies = list(pool.map(lambda case: post(url, case[0]), bad))
    assert good.result()[0] == 200
    for (_, needle), (status, reply) in zip(bad, replies, strict=True):
        assert status == 422 and needle in reply["error"] and "\n" not in reply["error"], reply
    assert handle.compress.remote(REQUESTS[1]).result(timeout_s=REQUEST_TIMEOUT)["texts"]
    with pytest.raises(Exception, match="question must not be empty"):
        handle.compress.remote({"documents": ["x"], "question": ""}).result(timeout_s=REQUEST_TIMEOUT)


def test_serve_run_arguments_are_typed_or_refused_in_one_line() -> None:
    from specrag.integrations.ray_serve import builder_options

    assert builder_options({"keep_ratio": "0.25", "num_replicas": "2", "embedder": "none", "draft": "x"}) == {
        "keep_ratio": 0.25,
        "num_replicas": 2,
        "embedder": None,
        "draft": "x",
    }
    with pytest.raises(ValueError, match="max_tokens='many' is not an integer"):
        builder_options({"max_tokens": "many"})
    with pytest.raises(ValueError, match="unknown argument 'keep'"):
        builder_options({"keep": "0.1"})
