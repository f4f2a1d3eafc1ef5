"""End-to-end tests of flintd: the real daemon on a loopback port, the real default
model, and a Python gRPC client built from proto/flint/v1/inference.proto.

Each test is named as the behaviour it checks. The API contract is the proto's
comments; docs/api.md summarizes it. Runtime is kept small: short prompts and
8 to 24 output tokens on a CPU that makes about 50 to 90 tokens/s for one stream.
This file: batching, the stream contract, the prefix cache, cancel and deadline,
the unary RPCs, health and reflection. Bad requests and shutdown have their own files.
"""
import concurrent.futures
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from flintd_harness import (DEVICE, MAX_QUEUE, MAX_RUNNING_SEQS, SERVING, TRIMMED, assert_ok, call_rpc, chat, gen,
                            outlasting, pb, pb_grpc, prompt_tokens_of, run, same_output, sampling, scaled,
                            wait_for_idle_stats)


# ---------------------------------------------------------------- batching

PROMPTS = [  # even: Generate (a text to continue), odd: Chat (a question)
    "The capital of France is", "Write a haiku about the sea.", "List three prime numbers:",
    "Why is the sky blue?", "Once upon a time, in a small village,", "What is 2 + 2?",
    "Translate 'good morning' to Spanish:", "Name a famous painter.", "The three states of water are",
    "Give me a tip for sleeping well.", "def fibonacci(n):", "What do bees make?",
    "The quick brown fox", "Describe a cat in one sentence.", "In 1969, humans first", "Why does rain fall?",
]


def mixed_requests():
    """16 requests: Generate and Chat, greedy and seeded sampling, stop strings, logprobs."""
    requests = []
    for i, prompt in enumerate(PROMPTS):
        kw = dict(max_tokens=8 + (i * 5) % 17, request_id=f"mix-{i}")
        if i % 4 >= 2:  # seeded sampling, with a different filter on each
            kw.update(temperature=0.6 + 0.1 * (i % 5), seed=1000 + i)
            kw.update([dict(top_k=40), dict(top_p=0.9), dict(min_p=0.05), dict(repetition_penalty=1.2),
                       dict(presence_penalty=0.5, frequency_penalty=0.3)][i % 5])
        if i % 3 == 0:
            kw["stop"] = [".", "\n\n"]
        if i % 5 == 0:
            kw["top_logprobs"] = 2
        requests.append(gen(prompt, **kw) if i % 2 == 0 else chat(prompt, **kw))
    return requests


def test_sixteen_concurrent_streams_each_give_the_tokens_of_the_same_request_run_alone(stub):
    requests = mixed_requests()
    solo = [run(stub, r) for r in requests]
    for r, s in zip(requests, solo):
        assert_ok(s, r.request_id)
        assert s.token_ids, f"{r.request_id}: no tokens"

    barrier = threading.Barrier(len(requests))

    def one(request):
        barrier.wait()
        return run(stub, request)

    most_running = 0
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(one, r) for r in requests]
        while not all(f.done() for f in futures):  # how many shared a step
            stats = stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
            most_running = max(most_running, stats.num_running)
            time.sleep(0.01)
        batched = [f.result() for f in futures]
    for r, a, b in zip(requests, solo, batched):
        same_output(a, b, r.request_id, seeded=r.sampling.HasField("seed"))
    assert most_running >= len(requests) // 2, f"at most {most_running} streams ran in one step"


def test_the_same_seed_gives_the_same_tokens_and_finished_reports_the_seed(stub):
    r = gen("Tell me a story about a dragon.", max_tokens=16, temperature=1.0, seed=424242)
    a, b = run(stub, r), run(stub, r)
    same_output(a, b, "seeded")
    assert a.finished.seed == 424242
    unseeded = run(stub, gen("Tell me a story about a dragon.", max_tokens=4, temperature=1.0))
    assert_ok(unseeded)
    # A drawn seed is reported and replays the same tokens.
    replay = run(stub, gen("Tell me a story about a dragon.", max_tokens=4, temperature=1.0,
                           seed=unseeded.finished.seed))
    assert replay.token_ids == unseeded.token_ids


# ---------------------------------------------------------------- the stream contract

CONTRACT_REQUESTS = {
    "generate-greedy": lambda: gen("The capital of France is", max_tokens=24, request_id="contract-gen"),
    "chat-seeded": lambda: chat("Name three colors.", max_tokens=24, temperature=0.7, seed=5,
                                request_id="contract-chat"),
    "chat-to-end-of-turn": lambda: chat("Say hi.", max_tokens=64, request_id="contract-eot"),
}


@pytest.mark.parametrize("name", CONTRACT_REQUESTS)
def test_deltas_concatenate_to_the_text_of_their_tokens_and_one_finished_with_usage_comes_last(stub, name):
    if name == "chat-to-end-of-turn" and TRIMMED:
        pytest.skip("a trimmed model does not end its turn (FLINT_MODEL_TRIMMED=1)")
    request = CONTRACT_REQUESTS[name]()
    r = run(stub, request)
    assert_ok(r, name)
    assert r.events.count("finished") == 1 and r.events[-1] == "finished", r.events
    assert r.deltas, "no Delta before Finished"
    assert all(d.channel == pb.CHANNEL_CONTENT for d in r.deltas), "a model without think markers used reasoning"
    assert all(d.token_ids or d.text for d in r.deltas), "an empty Delta"
    assert not any(d.logprobs for d in r.deltas), "logprobs were not asked for"

    ids = r.token_ids
    detok = stub.Detokenize(pb.DetokenizeRequest(token_ids=ids, skip_special_tokens=True), timeout=10).text
    assert r.text == detok

    f = r.finished
    max_tokens = request.stopping.max_tokens
    assert f.request_id == request.request_id
    assert f.usage.prompt_tokens == len(prompt_tokens_of(stub, request))
    assert f.usage.reasoning_tokens == 0
    assert f.usage.cached_prompt_tokens <= f.usage.prompt_tokens
    if f.reason == pb.FINISH_REASON_LENGTH:
        assert len(ids) == max_tokens and f.usage.completion_tokens == max_tokens
    else:
        assert f.reason == pb.FINISH_REASON_STOP
        assert f.matched_stop == ""
        # An end-of-generation token ends it: counted in usage, not sent.
        assert f.usage.completion_tokens == len(ids) + 1, (f.usage, len(ids))
        assert len(ids) < max_tokens
    if name == "chat-to-end-of-turn":
        assert f.reason == pb.FINISH_REASON_STOP, "a chat answer to 'Say hi.' ends its turn within 64 tokens"
    t = f.timings
    assert 0 <= t.queued_ms <= t.time_to_first_token_ms <= t.total_ms, t
    assert t.time_to_first_token_ms > 0
    if request.sampling.HasField("seed"):
        assert f.seed == request.sampling.seed


def test_logprobs_come_one_per_token_with_the_asked_number_of_alternatives(stub):
    r = run(stub, gen("The capital of France is", max_tokens=12, top_logprobs=3, ignore_eos=True))
    assert_ok(r)
    ids, lps = r.token_ids, r.logprobs
    assert len(lps) == len(ids) == 12
    for d in r.deltas:
        assert len(d.logprobs) == len(d.token_ids)
    for tid, lp in zip(ids, lps):
        assert lp.chosen.token_id == tid
        assert lp.chosen.logprob <= 0
        assert len(lp.top) == 3
        tops = [t.logprob for t in lp.top]
        assert tops == sorted(tops, reverse=True)
        assert all(t.logprob <= 0 for t in lp.top)
        # Greedy: the chosen token is the most likely one.
        assert lp.chosen.logprob == pytest.approx(tops[0], abs=1e-4)
    assert b"".join(lp.chosen.token for lp in lps).decode("utf-8", "replace") == r.text


def test_a_stop_string_ends_the_output_before_it_and_is_never_sent(stub):
    prompt = "Write one sentence about the moon."
    free = run(stub, chat(prompt, max_tokens=24, ignore_eos=True))
    assert_ok(free)
    text = free.text
    assert len(text) >= 12, text
    # A stop string from the middle of the known greedy answer, spanning token boundaries.
    stop = text[len(text) // 2: len(text) // 2 + 5]
    expected = text[: text.find(stop)]
    r = run(stub, chat(prompt, max_tokens=24, ignore_eos=True, stop=["never-appears-xyz", stop]))
    assert_ok(r)
    assert r.finished.reason == pb.FINISH_REASON_STOP
    assert r.finished.matched_stop == stop
    assert r.text == expected
    assert r.token_ids == free.token_ids[: len(r.token_ids)]
    assert r.finished.usage.completion_tokens == len(r.token_ids)


def test_stop_token_ids_end_the_output_and_the_token_is_not_sent(stub):
    prompt = "Count: one, two, three, four, five,"
    free = run(stub, gen(prompt, max_tokens=12, ignore_eos=True))
    assert_ok(free)
    k = len(free.token_ids) // 2
    stop_id = free.token_ids[k]
    first = free.token_ids.index(stop_id)
    r = run(stub, pb.GenerateRequest(text=prompt, sampling=sampling(),
                                     stopping=pb.StoppingCriteria(max_tokens=12, ignore_eos=True,
                                                                  stop_token_ids=[stop_id])))
    assert_ok(r)
    assert r.finished.reason == pb.FINISH_REASON_STOP
    assert r.token_ids == free.token_ids[:first]
    assert r.finished.usage.completion_tokens == first + 1


# ---------------------------------------------------------------- prefix cache

def test_a_second_request_with_the_same_long_system_prompt_reuses_cached_prompt_tokens(stub, info):
    nonce = uuid.uuid4().hex
    system = (f"Session {nonce}. You are a careful assistant for a bakery. " +
              "Answer briefly, politely and only about bread, cakes, opening hours and prices. " * 8)
    first = run(stub, chat([("system", system), ("user", "When do you open?")], max_tokens=4))
    second = run(stub, chat([("system", system), ("user", "Do you sell rye bread?")], max_tokens=4))
    assert_ok(first)
    assert_ok(second)
    system_tokens = len(prompt_tokens_of(stub, chat([("system", system)])))
    assert system_tokens > 4 * info.kv_block_size
    assert first.finished.usage.cached_prompt_tokens == 0
    cached = second.finished.usage.cached_prompt_tokens
    assert cached > 0
    assert cached <= second.finished.usage.prompt_tokens
    assert cached >= system_tokens - 2 * info.kv_block_size, (cached, system_tokens)


# ---------------------------------------------------------------- cancel and deadline

def start_and_cancel_after_first_delta(stub, request):
    call = call_rpc(stub, request, timeout=scaled(60))
    it = iter(call)
    first = next(it)
    assert first.WhichOneof("event") == "delta"
    call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    return e.value.code()


def assert_serving(server, stub):
    assert server.health_status() == SERVING
    r = run(stub, gen("Hello", max_tokens=4), timeout=scaled(30))
    assert_ok(r, "a request after")


def test_a_cancelled_stream_ends_cancelled_and_the_server_serves_on(server, stub):
    code = start_and_cancel_after_first_delta(stub, gen("Tell me about the ocean.", max_tokens=500, ignore_eos=True))
    assert code == grpc.StatusCode.CANCELLED
    assert_serving(server, stub)


def test_a_call_past_its_deadline_ends_deadline_exceeded_and_the_server_serves_on(server, stub):
    # As many tokens as a sequence holds, and a deadline of a quarter of the time they take (at most 0.3 s): the
    # call outlives it on any device. One that expires before the first token proves the point too.
    request, deadline = outlasting(stub, gen("Tell me about the mountains.", ignore_eos=True), cap_s=0.3)
    r = run(stub, request, timeout=deadline)
    assert r.code == grpc.StatusCode.DEADLINE_EXCEEDED, (r.code, r.details)
    assert r.finished is None
    assert_serving(server, stub)


def full_context_prompt(stub, info, max_tokens):
    """Token ids of real text, as many as fit in max_sequence_tokens with max_tokens after them."""
    n = info.max_sequence_tokens - max_tokens
    text = "The history of bread begins with wild grains ground between stones. " * (n // 8 + 8)
    ids = list(stub.Tokenize(pb.TokenizeRequest(text=text), timeout=30).token_ids)
    assert len(ids) >= n
    return ids[:n]


def test_cancelled_and_expired_requests_give_their_kv_blocks_back(fresh_server):
    # A small KV cache bounds max_sequence_tokens, so a request that fills it is
    # admitted only when every block (prefix-cached ones reclaimed) is free.
    d = fresh_server("--kv-cache-memory", "16MiB")
    info = d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    if info.num_kv_blocks * info.kv_block_size >= info.context_length:
        # Fewer KV bytes per token (a trimmed model, a bf16 cache on the GPU) fit the whole context in 16 MiB:
        # shrink the cache to about half the context.
        kib = 16 * 1024 * info.context_length // (2 * info.num_kv_blocks * info.kv_block_size)
        d.close()
        d = fresh_server("--kv-cache-memory", f"{kib}KiB")
        info = d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.max_sequence_tokens == info.num_kv_blocks * info.kv_block_size, info
    long_prompt = "Describe the water cycle in detail. " * (info.max_sequence_tokens // 12)
    max_tokens = info.max_sequence_tokens // 4
    for _ in range(3):
        code = start_and_cancel_after_first_delta(d.stub, gen(long_prompt, max_tokens=max_tokens, ignore_eos=True))
        assert code == grpc.StatusCode.CANCELLED
    # The rest of the sequence to generate, and a deadline (at most 0.3 s) it outlasts on any device.
    expiring, deadline = outlasting(d.stub, gen(long_prompt, ignore_eos=True), cap_s=0.3)
    for _ in range(2):
        r = run(d.stub, expiring, timeout=deadline)
        assert r.code == grpc.StatusCode.DEADLINE_EXCEEDED, (r.code, r.details)
    stats = wait_for_idle_stats(d.stub)
    assert (stats.num_running, stats.num_waiting, stats.num_active_streams) == (0, 0, 0), stats
    assert stats.num_free_kv_blocks == stats.num_kv_blocks == info.num_kv_blocks, stats

    ids = full_context_prompt(d.stub, info, max_tokens=4)
    r = run(d.stub, pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids), sampling=sampling(),
                                       stopping=pb.StoppingCriteria(max_tokens=4, ignore_eos=True)), timeout=120)
    assert_ok(r, "a request that needs the whole KV cache")
    assert r.finished.usage.prompt_tokens == len(ids)
    assert len(r.token_ids) == 4


def test_a_client_that_disconnects_mid_stream_frees_its_sequence(server, stub, info):
    channel = grpc.insecure_channel(server.address)
    call = call_rpc(pb_grpc.InferenceStub(channel), gen("Tell me about deserts.", max_tokens=1000, ignore_eos=True),
                    timeout=scaled(60))
    next(iter(call))
    channel.close()  # no cancel: the connection just goes away
    stats = wait_for_idle_stats(stub)
    assert (stats.num_running, stats.num_active_streams) == (0, 0), stats
    assert stats.num_free_kv_blocks == info.num_kv_blocks, stats


def test_server_stats_count_waiting_running_and_streams(stub, info):
    stats = wait_for_idle_stats(stub)
    assert stats.num_kv_blocks == info.num_kv_blocks
    assert 0 <= stats.num_free_kv_blocks <= stats.num_kv_blocks
    assert not stats.draining
    call = call_rpc(stub, gen("Tell me about forests.", max_tokens=1000, ignore_eos=True), timeout=scaled(60))
    it = iter(call)
    next(it)
    # Stats are published after each step: wait for the step after the first token.
    end = time.monotonic() + scaled(5)
    while True:
        busy = stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
        if busy.num_running == 1 or time.monotonic() > end:
            break
        time.sleep(0.02)
    call.cancel()
    wait_for_idle_stats(stub)
    assert busy.num_running == 1 and busy.num_active_streams == 1, busy
    assert busy.num_free_kv_blocks < busy.num_kv_blocks
    assert busy.num_steps > stats.num_steps


# ---------------------------------------------------------------- bad requests

# ---------------------------------------------------------------- unary RPCs

def test_tokenize_and_detokenize_round_trip(stub, info):
    text = "Hello, world! Ünïcödé ✓ 12345 — the end."
    t = stub.Tokenize(pb.TokenizeRequest(text=text), timeout=10)
    assert t.text == text
    assert len(t.token_ids) == len(t.tokens) > 5
    assert all(0 <= i < info.vocab_size for i in t.token_ids)
    assert stub.Detokenize(pb.DetokenizeRequest(token_ids=t.token_ids), timeout=10).text == text

    # Special tokens written in the text become their ids; skip_special_tokens leaves them out.
    s = stub.Tokenize(pb.TokenizeRequest(text="<|im_start|>user\nhi<|im_end|>"), timeout=10)
    assert s.tokens[0] == "<|im_start|>" and s.tokens[-1] == "<|im_end|>"
    assert stub.Detokenize(pb.DetokenizeRequest(token_ids=s.token_ids), timeout=10).text == \
        "<|im_start|>user\nhi<|im_end|>"
    assert stub.Detokenize(pb.DetokenizeRequest(token_ids=s.token_ids, skip_special_tokens=True),
                           timeout=10).text == "user\nhi"

    # Messages render with the chat template, as Chat would.
    m = stub.Tokenize(pb.TokenizeRequest(messages=[pb.ChatMessage(role="user", content="hi")]), timeout=10)
    assert "<|im_start|>user\nhi<|im_end|>" in m.text
    assert m.text.rstrip().endswith("<|im_start|>assistant")


def test_model_info_describes_the_default_model_and_the_serving_limits(info):
    assert info.name == "SmolLM2-135M-Instruct.Q4_1"
    assert info.architecture == "llama"
    assert info.vocab_size == 49152
    assert info.context_length == 8192
    assert 0 < info.max_sequence_tokens <= info.context_length
    assert info.chat_template == "chatml"
    assert info.think_start == "" and info.think_end == ""
    assert info.eos_token_ids and all(0 <= i < info.vocab_size for i in info.eos_token_ids)
    assert "Q4_1" in info.weight_type
    assert (0 if TRIMMED else 100_000_000) < info.num_parameters < 200_000_000
    assert info.device == DEVICE
    assert info.max_running_seqs == MAX_RUNNING_SEQS
    assert info.max_queue == MAX_QUEUE
    assert info.max_batched_tokens > 0
    assert info.kv_block_size > 0 and info.num_kv_blocks > 0
    assert info.max_sequence_tokens <= info.num_kv_blocks * info.kv_block_size
    assert info.server_version


# ---------------------------------------------------------------- health and reflection

def test_health_is_serving(server):
    assert server.health_status() == SERVING


def test_reflection_lists_the_services_and_serves_their_descriptors(server):
    # grpcio-reflection is in tests/e2e/requirements.txt; the GPU machine runs the suite without it.
    pytest.importorskip("grpc_reflection")
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)

    def ask(**kw):
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)]), timeout=10))
        assert len(responses) == 1
        return responses[0]

    names = {s.name for s in ask(list_services="").list_services_response.service}
    assert {"flint.v1.Inference", "grpc.health.v1.Health"} <= names, names

    files = ask(file_containing_symbol="flint.v1.Inference").file_descriptor_response.file_descriptor_proto
    protos = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
    mine = next(p for p in protos if p.package == "flint.v1")
    service = next(s for s in mine.service if s.name == "Inference")
    methods = {m.name: m for m in service.method}
    assert {"Generate", "Chat", "Tokenize", "Detokenize", "GetModelInfo", "GetServerStats"} <= set(methods)
    assert methods["Generate"].server_streaming and methods["Chat"].server_streaming
    assert not methods["Tokenize"].server_streaming

    # A generic client builds every message type from reflection alone.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(server.channel))
    generate = pool.FindMethodByName("flint.v1.Inference.Generate")
    assert generate.input_type.full_name == "flint.v1.GenerateRequest"
    assert "sampling" in pool.FindMessageTypeByName("flint.v1.GenerateRequest").fields_by_name


# ---------------------------------------------------------------- admission and shutdown

