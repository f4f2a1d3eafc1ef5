"""Fixtures for the flintd end-to-end tests: one shared flintd per test module
(`server`, `stub`, `info`) and `fresh_server` for tests that need their own flags."""
import pytest

from flintd_harness import KV_CACHE_MEMORY, MAX_QUEUE, MAX_RUNNING_SEQS, Flintd, pb


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = Flintd(tmp_path_factory.mktemp("flintd"), "--max-running-seqs", MAX_RUNNING_SEQS,
               "--max-queue", MAX_QUEUE, "--kv-cache-memory", KV_CACHE_MEMORY)
    yield d
    d.close()


@pytest.fixture(scope="module")
def stub(server):
    return server.stub


@pytest.fixture(scope="module")
def info(stub):
    return stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


@pytest.fixture
def fresh_server(tmp_path_factory):
    """Starts a separate flintd with the given flags; closes it at the end of the test."""
    started = []

    def start(*flags, **kwargs):
        d = Flintd(tmp_path_factory.mktemp("flintd-extra"), *flags, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()
