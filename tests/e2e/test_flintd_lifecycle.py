"""flintd end-to-end: admission and shutdown. Each test starts its own flintd:
a full waiting queue, the SIGTERM drain, the drain timeout, SIGINT, a backend that fails for good."""
import concurrent.futures
import signal
import threading
import time

import grpc

from flintd_harness import OK, SERVING, assert_ok, call_rpc, gen, health_pb2, outlasting, pb, read_stream, run, scaled


def test_a_full_waiting_queue_refuses_requests_with_resource_exhausted(fresh_server):
    d = fresh_server("--max-queue", 1, "--max-running-seqs", 1)
    requests = [gen(f"Story number {k}:", max_tokens=24, ignore_eos=True) for k in range(8)]
    barrier = threading.Barrier(len(requests))

    def one(request):
        barrier.wait()
        return run(d.stub, request, timeout=scaled(60))

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(one, requests))
    codes = [r.code for r in results]
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, codes
    for r in results:
        if r.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert not r.deltas and r.finished is None and r.details
        else:
            assert_ok(r)
            assert len(r.token_ids) == 24
    assert codes.count(OK) >= 1, codes
    assert_ok(run(d.stub, gen("Hello", max_tokens=4)), "a request once the queue has room")


def test_sigterm_drains_running_streams_refuses_new_ones_and_exits_zero(fresh_server):
    drain_timeout = scaled(20)
    d = fresh_server("--drain-timeout", drain_timeout)
    max_tokens = 96
    call = call_rpc(d.stub, gen("Tell me about rivers.", max_tokens=max_tokens, ignore_eos=True),
                    timeout=scaled(60))
    it = iter(call)
    first = next(it)
    assert first.WhichOneof("event") == "delta"
    signalled = time.monotonic()
    d.terminate()

    # While the stream drains: health is NOT_SERVING, stats say draining, new streams are UNAVAILABLE.
    seen = {}

    def probe():
        end = time.monotonic() + scaled(5)
        while time.monotonic() < end:
            try:
                status = d.health_status(timeout=1)
                seen["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                if status != SERVING:
                    break
            except grpc.RpcError as e:
                seen["health"] = e.code().name
                break
            time.sleep(0.005)
        seen["draining"] = d.stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5).draining
        seen["new"] = run(d.stub, gen("Hello", max_tokens=4), timeout=10)

    prober = threading.Thread(target=probe)
    prober.start()
    rest = read_stream(it)
    prober.join()

    assert_ok(rest, "the stream running at SIGTERM")
    assert len(rest.token_ids) + len(first.delta.token_ids) == max_tokens
    assert rest.finished.reason == pb.FINISH_REASON_LENGTH
    assert seen["health"] == "NOT_SERVING", seen
    assert seen["draining"], seen
    assert seen["new"].code == grpc.StatusCode.UNAVAILABLE, (seen["new"].code, seen["new"].details)
    # Once its last stream has ended, flintd exits: it does not wait out the drain timeout.
    drained = time.monotonic()
    d.proc.wait(drain_timeout + 10)
    assert d.proc.returncode == 0, d.log_tail()
    assert time.monotonic() - drained < scaled(5), \
        f"flintd exited {time.monotonic() - drained:.1f} s after its last stream ended:\n{d.log_tail(5)}"
    assert time.monotonic() - signalled < drain_timeout


def test_a_stream_still_running_at_the_drain_timeout_ends_unavailable_and_flintd_exits_zero(fresh_server):
    d = fresh_server("--drain-timeout", 1)
    # As many tokens as a sequence holds, and a drain timeout of a quarter of the time they take (at most 1 s,
    # fractions allowed): the stream outlasts it on any device. A faster server gets a new flintd with the shorter one.
    request, drain_timeout = outlasting(d.stub, gen("Tell me about lakes.", ignore_eos=True), cap_s=1)
    if drain_timeout < 1:
        d.close()
        d = fresh_server("--drain-timeout", f"{drain_timeout:.3f}")
    call = call_rpc(d.stub, request, timeout=scaled(60))
    it = iter(call)
    next(it)
    signalled = time.monotonic()
    d.terminate()
    rest = read_stream(it)
    assert rest.code == grpc.StatusCode.UNAVAILABLE, (rest.code, rest.details)
    d.proc.wait(scaled(15))
    assert d.proc.returncode == 0, d.log_tail()
    assert time.monotonic() - signalled < scaled(10)


def test_sigint_on_an_idle_server_exits_zero_at_once(fresh_server):
    d = fresh_server()
    signalled = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    d.proc.wait(scaled(10))
    assert d.proc.returncode == 0, d.log_tail()
    assert time.monotonic() - signalled < scaled(5)


def test_a_backend_that_fails_for_good_ends_every_stream_unavailable_and_flintd_exits_one(fresh_server):
    # FLINT_TEST_FATAL_AFTER_STEPS (model/fault_injection.h): after 20 steps the backend fails every step and
    # reports itself unusable, as CudaBackend does once a kernel fault has poisoned its CUDA context.
    d = fresh_server(env={"FLINT_TEST_FATAL_AFTER_STEPS": "20"})
    assert "a fatal fault after that many steps" in d.log()
    requests = [gen(f"Tell me about mountain number {k}.", max_tokens=200, ignore_eos=True) for k in range(3)]
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(lambda request: run(d.stub, request, timeout=scaled(60)), requests))
    for r in results:
        assert r.code == grpc.StatusCode.UNAVAILABLE, (r.code, r.details)
        assert "can run no more steps" in r.details and "FLINT_TEST_FATAL_AFTER_STEPS" in r.details, r.details
        assert r.finished is None and len(r.token_ids) < 200
    # Down for good: health NOT_SERVING, then exit status 1 for a supervisor to restart it.
    d.proc.wait(scaled(15))
    assert d.proc.returncode == 1, d.log_tail()
    assert "health NOT_SERVING" in d.log() and "exit status 1" in d.log(), d.log_tail()
