"""flintd end-to-end: the OpenAI-compatible HTTP API, driven by the official `openai`
Python package (and by http.client where a raw request says more).

The gRPC API is the reference: the same request over HTTP gives the same text,
token counts and finish reason as over gRPC Chat/Generate. Runtime is kept small:
8 to 24 output tokens per request; the few tests that need their own flags
(an API key, a tiny queue, a drain) start their own flintd.
"""
import concurrent.futures
import http.client
import json
import threading
import time
import urllib.parse
import uuid

import openai
import pytest

from flintd_harness import (HTTP_FLAGS, assert_ok, chat, gen, outlasting, pb, prompt_tokens_of, run, scaled,
                            wait_for_idle_stats)

pytestmark = pytest.mark.skipif(not HTTP_FLAGS, reason="this flintd has no HTTP API (no --http-port flag)")


def make_client(server, api_key="unused", **kw):
    """An OpenAI client for `server`'s HTTP API; no retries, so a 429 or 503 shows as itself."""
    return openai.OpenAI(base_url=server.http_url + "/v1", api_key=api_key, max_retries=0, timeout=scaled(60), **kw)


@pytest.fixture(scope="module")
def client(server):
    c = make_client(server)
    yield c
    c.close()


@pytest.fixture(scope="module")
def model(info):
    return info.name


def served_model(d, api_key=None):
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    return d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=metadata).name


def http_call(server, method, path, body=None, headers=None, timeout=30):
    """One raw request: (status, lower-cased headers, body bytes). `body` is JSON unless bytes."""
    url = urllib.parse.urlsplit(server.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers or {}
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def error_of(body):
    """The OpenAI error object of a response body: {"error": {"message", "type", ...}}."""
    error = json.loads(body)["error"]
    assert error["message"] and error["type"], error
    return error


def stream_chat(client, **kw):
    """A streamed chat completion read whole: (chunks, content text, finish_reason)."""
    chunks = list(client.chat.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(reasons) == 1, f"finish_reason in {len(reasons)} chunks"
    return chunks, text, reasons[0]


def stream_completion(client, **kw):
    """A streamed completion read whole: (chunks, text, finish_reason)."""
    chunks = list(client.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(reasons) == 1, f"finish_reason in {len(reasons)} chunks"
    return chunks, text, reasons[0]


def grpc_reason(result):
    return {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}[result.finished.reason]


# ---------------------------------------------------------------- models and health

def test_models_lists_the_one_served_model_by_its_name(client, model):
    models = client.models.list()
    assert [m.id for m in models.data] == [model]
    assert models.data[0].object == "model"
    assert client.models.retrieve(model).id == model


def test_health_is_200_while_serving(server):
    status, _, _ = http_call(server, "GET", "/health")
    assert status == 200


# ---------------------------------------------------------------- chat completions

def test_a_chat_completion_streamed_unstreamed_and_over_grpc_gives_the_same_text(client, model, stub):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colors."}]
    kw = dict(model=model, messages=messages, max_tokens=16, temperature=0.8, seed=11)
    whole = client.chat.completions.create(**kw)
    chunks, text, reason = stream_chat(client, **kw)
    over_grpc = run(stub, chat([(m["role"], m["content"]) for m in messages], max_tokens=16, temperature=0.8,
                               seed=11))
    assert_ok(over_grpc)

    choice = whole.choices[0]
    assert whole.object == "chat.completion" and whole.model == model and whole.id
    assert len(whole.choices) == 1 and choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content, "no text"
    assert not getattr(choice.message, "reasoning_content", None), "a model without think markers reasoned"
    assert choice.message.content == text == over_grpc.text
    assert choice.finish_reason == reason == grpc_reason(over_grpc)

    assert {c.id for c in chunks} == {chunks[0].id}, "one id for every chunk of a stream"
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == reason, "finish_reason comes in the last chunk"
    assert all(c.usage is None for c in chunks), "usage chunk without stream_options.include_usage"


def test_greedy_chat_gives_the_same_text_streamed_and_unstreamed(client, model):
    kw = dict(model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
              max_tokens=16, temperature=0, seed=3)
    whole = client.chat.completions.create(**kw)
    _, text, reason = stream_chat(client, **kw)
    assert whole.choices[0].message.content == text
    assert whole.choices[0].finish_reason == reason


def test_chat_usage_counts_the_rendered_prompt_and_every_generated_token(client, model, stub):
    prompt = "Write one sentence about the moon."
    kw = dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=24, temperature=0)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    over_grpc = run(stub, chat(prompt, max_tokens=24))
    assert_ok(over_grpc)

    u = whole.usage
    assert u.prompt_tokens == len(prompt_tokens_of(stub, chat(prompt))) == over_grpc.finished.usage.prompt_tokens
    assert u.completion_tokens == over_grpc.finished.usage.completion_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.completion_tokens_details.reasoning_tokens == 0
    assert 0 <= u.prompt_tokens_details.cached_tokens <= u.prompt_tokens

    # include_usage: one last chunk with the usage and no choices; the chunks before it have none.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    su = chunks[-1].usage
    assert (su.prompt_tokens, su.completion_tokens, su.total_tokens) == \
        (u.prompt_tokens, u.completion_tokens, u.total_tokens)
    # One content chunk per token, but for the unsent end-of-turn token and merged chunks of a slow reader.
    content_chunks = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert 0 < content_chunks <= su.completion_tokens


def test_max_tokens_ends_the_choice_with_length_after_exactly_that_many_tokens(client, model):
    kw = dict(model=model, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=8,
              temperature=0, extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 8
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 8
    # max_completion_tokens, the newer name, wins over max_tokens.
    newer = client.chat.completions.create(**{**kw, "max_tokens": 20}, max_completion_tokens=8)
    assert (newer.choices[0].finish_reason, newer.usage.completion_tokens) == ("length", 8)


def test_a_stop_string_or_list_ends_the_choice_with_stop_and_the_stop_text_is_never_sent(client, model):
    kw = dict(model=model, messages=[{"role": "user", "content": "Describe the sea in one sentence."}],
              max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    free = client.chat.completions.create(**kw).choices[0].message.content
    assert len(free) >= 12, free
    stop = free[len(free) // 2: len(free) // 2 + 4]  # from the middle, across token boundaries
    expected = free[: free.find(stop)]

    one = client.chat.completions.create(stop=stop, **kw).choices[0]
    assert (one.finish_reason, one.message.content) == ("stop", expected)
    _, text, reason = stream_chat(client, stop=["never-appears-xyz", stop], **kw)
    assert (reason, text) == ("stop", expected)


def test_extension_sampling_fields_reach_the_sampler_as_over_grpc(client, model, stub):
    extensions = dict(top_k=20, min_p=0.05, repetition_penalty=1.3, priority=5)
    whole = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "List some fruits."}], max_tokens=16,
        temperature=0.9, top_p=0.95, presence_penalty=0.4, frequency_penalty=0.2, seed=77, extra_body=extensions)
    request = chat("List some fruits.", max_tokens=16, temperature=0.9, top_p=0.95, presence_penalty=0.4,
                   frequency_penalty=0.2, seed=77, top_k=20, min_p=0.05, repetition_penalty=1.3)
    request.priority = 5
    over_grpc = run(stub, request)
    assert_ok(over_grpc)
    assert whole.choices[0].message.content == over_grpc.text
    without = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "List some fruits."}], max_tokens=16,
        temperature=0.9, top_p=0.95, presence_penalty=0.4, frequency_penalty=0.2, seed=77)
    assert without.choices[0].message.content == run(stub, chat(
        "List some fruits.", max_tokens=16, temperature=0.9, top_p=0.95, presence_penalty=0.4,
        frequency_penalty=0.2, seed=77)).text


def test_text_content_parts_and_the_developer_role_are_read_as_text_and_system(client, model, stub):
    parts = client.chat.completions.create(
        model=model, max_tokens=8, temperature=0,
        messages=[{"role": "developer", "content": "You are terse."},
                  {"role": "user", "content": [{"type": "text", "text": "Name a color."},
                                               {"type": "text", "text": "Just one."}]}])
    over_grpc = run(stub, chat([("system", "You are terse."), ("user", "Name a color.\nJust one.")], max_tokens=8))
    assert_ok(over_grpc)
    assert parts.choices[0].message.content == over_grpc.text
    assert parts.usage.prompt_tokens == over_grpc.finished.usage.prompt_tokens


def test_chat_logprobs_give_each_tokens_logprob_and_alternatives_as_over_grpc(client, model, stub):
    whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                                           extra_body={"ignore_eos": True})
    over_grpc = run(stub, chat("Say hello.", max_tokens=8, top_logprobs=2, ignore_eos=True))
    assert_ok(over_grpc)
    content = whole.choices[0].logprobs.content
    assert len(content) == len(over_grpc.logprobs) == 8
    for mine, theirs in zip(content, over_grpc.logprobs):
        assert bytes(mine.bytes) == theirs.chosen.token
        assert mine.logprob == pytest.approx(theirs.chosen.logprob, abs=1e-3)
        assert len(mine.top_logprobs) == 2
        assert mine.top_logprobs[0].logprob == pytest.approx(mine.logprob, abs=1e-4)  # greedy: the top one


def test_a_repeated_long_system_prompt_reports_cached_prompt_tokens(client, model, info):
    system = (f"Session {uuid.uuid4().hex}. You are a careful assistant for a bakery. " +
              "Answer briefly, politely and only about bread, cakes, opening hours and prices. " * 8)
    usages = [client.chat.completions.create(
        model=model, max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": q}]).usage
        for q in ("When do you open?", "Do you sell rye bread?")]
    assert usages[0].prompt_tokens_details.cached_tokens == 0
    cached = usages[1].prompt_tokens_details.cached_tokens
    assert 4 * info.kv_block_size <= cached <= usages[1].prompt_tokens, usages[1]


# ---------------------------------------------------------------- completions

def test_a_completion_of_a_prompt_string_or_its_token_ids_gives_the_grpc_generate_text(client, model, stub):
    prompt = "The capital of France is"
    over_grpc = run(stub, gen(prompt, max_tokens=12))
    assert_ok(over_grpc)
    ids = prompt_tokens_of(stub, gen(prompt))
    kw = dict(model=model, max_tokens=12, temperature=0)

    whole = client.completions.create(prompt=prompt, **kw)
    assert whole.object == "text_completion" and whole.model == model
    assert whole.choices[0].text == over_grpc.text
    assert whole.choices[0].finish_reason == grpc_reason(over_grpc)
    assert whole.usage.prompt_tokens == len(ids)
    assert whole.usage.completion_tokens == over_grpc.finished.usage.completion_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    by_ids = client.completions.create(prompt=ids, **kw)
    assert by_ids.choices[0].text == over_grpc.text
    assert by_ids.usage.prompt_tokens == len(ids)

    chunks, text, reason = stream_completion(client, prompt=prompt, stream_options={"include_usage": True}, **kw)
    assert (text, reason) == (over_grpc.text, grpc_reason(over_grpc))
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    _, text, _ = stream_completion(client, prompt=ids, **kw)
    assert text == over_grpc.text


def test_a_completion_stops_at_a_stop_string_and_at_max_tokens(client, model):
    kw = dict(model=model, prompt="Count: one, two, three,", temperature=0, extra_body={"ignore_eos": True})
    free = client.completions.create(max_tokens=12, **kw).choices[0]
    assert free.finish_reason == "length"
    stop = free.text[len(free.text) // 2:][:3]
    stopped = client.completions.create(max_tokens=12, stop=[stop], **kw).choices[0]
    assert (stopped.finish_reason, stopped.text) == ("stop", free.text[: free.text.find(stop)])


def test_a_streamed_completion_is_server_sent_events_ending_with_done(server, model):
    status, headers, body = http_call(server, "POST", "/v1/completions", {
        "model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True})
    assert status == 200, body
    assert headers["content-type"].startswith("text/event-stream")
    events = [line[len(b"data: "):] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"


# ---------------------------------------------------------------- reasoning

def reasoning_of(choice):
    return getattr(choice, "reasoning_content", None) or ""


def grpc_channels(result):
    """(reasoning text, content text) of a gRPC stream."""
    return ("".join(d.text for d in result.deltas if d.channel == pb.CHANNEL_REASONING),
            "".join(d.text for d in result.deltas if d.channel == pb.CHANNEL_CONTENT))


def test_reasoning_comes_in_reasoning_content_and_a_budget_ends_it(fresh_server):
    # SmolLM2 does not think, but the deepseek-r1 template ends the prompt in an open
    # <think> block: the output is reasoning until </think>, which the server writes
    # itself at the budget (its tokens count as reasoning tokens).
    d = fresh_server("--chat-template", "deepseek-r1")
    model = served_model(d)
    marker_tokens = len(d.stub.Tokenize(pb.TokenizeRequest(text="</think>"), timeout=10).token_ids)
    question = "What is 2 + 2?"
    with make_client(d) as c:
        for budget in (None, 4, 0):
            extra = {} if budget is None else {"reasoning": {"budget_tokens": budget}}
            kw = dict(model=model, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0,
                      extra_body={"ignore_eos": True, **extra})
            whole = c.chat.completions.create(**kw)
            chunks = list(c.chat.completions.create(stream=True, **kw))
            request = chat(question, max_tokens=12, ignore_eos=True)
            if budget is not None:
                request.reasoning.budget_tokens = budget
            over_grpc = run(d.stub, request)
            assert_ok(over_grpc)
            reasoning, content = grpc_channels(over_grpc)
            what = f"budget {budget}"
            message = whole.choices[0].message
            assert (reasoning_of(message), message.content or "") == (reasoning, content), what
            deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
            assert "".join(reasoning_of(d) for d in deltas) == reasoning, what
            assert "".join(d.content or "" for d in deltas) == content, what
            reasoning_tokens = whole.usage.completion_tokens_details.reasoning_tokens
            assert reasoning_tokens == over_grpc.finished.usage.reasoning_tokens, what
            if budget is None:
                assert reasoning, what
            else:
                assert reasoning_tokens == budget + marker_tokens, what
                assert bool(reasoning) == (budget > 0) and content, what

        # Completions: a prompt that ends in <think> opens the block too; thinking off is a budget of 0.
        prompt = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
        off = c.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0,
                                   extra_body={"reasoning": {"enabled": False}})
        zero = c.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0,
                                    extra_body={"reasoning": {"budget_tokens": 0}})
        assert (reasoning_of(off.choices[0]), off.choices[0].text) == ("", zero.choices[0].text)
        assert off.usage.completion_tokens_details.reasoning_tokens == marker_tokens
        whole = c.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0).choices[0]
        chunks, text, _ = stream_completion(c, model=model, prompt=prompt, max_tokens=12, temperature=0)
        assert reasoning_of(whole) and "".join(reasoning_of(ch.choices[0]) for ch in chunks if ch.choices) == \
            reasoning_of(whole)
        assert text == whole.text


# ---------------------------------------------------------------- errors

BAD_REQUESTS = {  # name -> (route, request fields, words one of which the message must name)
    "negative temperature": ("chat", dict(temperature=-1), ["temperature"]),
    "top_p above 1": ("completions", dict(top_p=1.5), ["top_p"]),
    "zero max_tokens": ("chat", dict(max_tokens=0), ["max_tokens"]),
    "top_k below -1": ("chat", dict(extra_body={"top_k": -2}), ["top_k"]),
    "no messages": ("chat", dict(messages=[]), ["messages"]),
    "n of 2": ("completions", dict(n=2), ["n"]),
    "max_tokens over the context": ("chat", dict(max_tokens=1_000_000), ["max_tokens", "context"]),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_parameter_is_a_400_whose_message_names_it(client, model, name):
    route, fields, words = BAD_REQUESTS[name]
    kw = dict(model=model, max_tokens=4)
    if route == "chat":
        kw["messages"] = [{"role": "user", "content": "hi"}]
        kw.update(fields)
        create = client.chat.completions.create
    else:
        kw["prompt"] = "hi"
        kw.update(fields)
        create = client.completions.create
    with pytest.raises(openai.BadRequestError) as e:
        create(**kw)
    assert e.value.status_code == 400
    message = e.value.body["message"] if isinstance(e.value.body, dict) else str(e.value)
    assert any(w in message for w in words), message


def test_a_body_that_is_not_json_is_a_400_with_an_openai_error(server):
    status, _, body = http_call(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    error_of(body)


def test_an_unknown_model_is_a_404_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)
    assert "no-such-model" in str(e.value)


def test_an_unknown_route_is_a_404_with_an_openai_error(server):
    status, _, body = http_call(server, "GET", "/v1/no-such-route")
    assert status == 404
    error_of(body)


def test_with_an_api_key_v1_routes_need_it_as_a_bearer_token(fresh_server):
    d = fresh_server("--api-key", "secret")
    with make_client(d, api_key="wrong") as wrong, pytest.raises(openai.AuthenticationError) as e:
        wrong.models.list()
    assert e.value.status_code == 401
    model = served_model(d, api_key="secret")  # gRPC needs the key too
    status, _, body = http_call(d, "POST", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 4})
    assert status == 401
    error_of(body)

    with make_client(d, api_key="secret") as right:
        assert [m.id for m in right.models.list().data] == [model]
        answer = right.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4)
        assert answer.choices[0].message.content
    assert http_call(d, "GET", "/health")[0] == 200  # health needs no key


def test_the_api_key_can_come_from_flint_api_key_in_the_environment(fresh_server, monkeypatch):
    monkeypatch.setenv("FLINT_API_KEY", "from-env")
    d = fresh_server()
    assert http_call(d, "GET", "/v1/models")[0] == 401
    assert http_call(d, "GET", "/v1/models", headers={"Authorization": "Bearer from-env"})[0] == 200


def test_a_full_waiting_queue_is_a_429_rate_limit_error(fresh_server):
    d = fresh_server("--max-queue", 1, "--max-running-seqs", 1, "--http-threads", 8)
    model = served_model(d)
    barrier = threading.Barrier(8)

    def one(k):
        with make_client(d) as c:
            barrier.wait()
            try:
                return c.completions.create(model=model, prompt=f"Story number {k}:", max_tokens=12,
                                            extra_body={"ignore_eos": True})
            except openai.RateLimitError as e:
                return e

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if not isinstance(r, openai.RateLimitError)]
    assert refused and served, results
    assert all(r.status_code == 429 for r in refused)
    assert all(r.usage.completion_tokens == 12 for r in served)


def test_while_draining_health_is_503_and_new_requests_are_503_while_running_streams_finish(fresh_server):
    d = fresh_server("--drain-timeout", scaled(20))
    model = served_model(d)
    with make_client(d) as c:
        stream = c.completions.create(model=model, prompt="Tell me about rivers.", max_tokens=24, stream=True,
                                      extra_body={"ignore_eos": True})
        it = iter(stream)
        first = next(it)
        d.terminate()
        end = time.monotonic() + scaled(5)
        while http_call(d, "GET", "/health")[0] == 200 and time.monotonic() < end:
            time.sleep(0.01)
        assert http_call(d, "GET", "/health")[0] == 503
        with pytest.raises(openai.APIStatusError) as e:
            c.completions.create(model=model, prompt="Hello", max_tokens=4)
        assert e.value.status_code == 503
        rest = list(it)
    text = first.choices[0].text + "".join(ch.choices[0].text for ch in rest if ch.choices)
    assert rest[-1].choices[0].finish_reason == "length", text
    d.proc.wait(scaled(20))
    assert d.proc.returncode == 0, d.log_tail()


def test_a_stream_cut_short_by_the_drain_timeout_ends_with_an_error_event_the_client_raises(fresh_server):
    d = fresh_server("--drain-timeout", 1)
    # As many tokens as a sequence holds, and a drain timeout of a quarter of the time they take (at most 1 s): the
    # stream outlasts it on any device (outlasting(), as the gRPC drain test).
    request, drain_timeout = outlasting(d.stub, gen("Tell me about lakes.", ignore_eos=True), cap_s=1)
    if drain_timeout < 1:
        d.close()
        d = fresh_server("--drain-timeout", f"{drain_timeout:.3f}")
    model = served_model(d)
    with make_client(d) as c:
        stream = c.completions.create(model=model, prompt="Tell me about lakes.", stream=True,
                                      max_tokens=request.stopping.max_tokens, extra_body={"ignore_eos": True})
        it = iter(stream)
        next(it)
        d.terminate()
        with pytest.raises(openai.APIError) as e:
            for _ in it:
                pass
    assert not isinstance(e.value, openai.APIConnectionError), "the stream ended without an error event"
    assert e.value.body["type"] == "service_unavailable", e.value.body
    d.proc.wait(scaled(15))
    assert d.proc.returncode == 0, d.log_tail()


# ---------------------------------------------------------------- disconnects

def test_a_client_that_closes_a_stream_mid_way_frees_its_sequence(server, stub, info, model):
    with make_client(server) as c:
        stream = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me about deserts."}],
                                           max_tokens=1000, stream=True, extra_body={"ignore_eos": True})
        next(iter(stream))
        end = time.monotonic() + scaled(5)  # stats are published after each step
        while stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5).num_running != 1:
            assert time.monotonic() < end, "the stream never ran"
            time.sleep(0.02)
        stream.close()
    stats = wait_for_idle_stats(stub)
    assert (stats.num_running, stats.num_waiting) == (0, 0), stats
    assert stats.num_free_kv_blocks == info.num_kv_blocks, stats


def test_a_client_that_leaves_before_its_json_answer_frees_its_sequence(server, stub, info, model):
    """A request that does not stream is watched too: its client hanging up cancels it."""
    url = urllib.parse.urlparse(server.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = json.dumps({"model": model, "prompt": "Tell me about deserts.", "max_tokens": 1000, "ignore_eos": True})
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    end = time.monotonic() + scaled(5)
    while stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5).num_running != 1:
        assert time.monotonic() < end, "the request never ran"
        time.sleep(0.02)
    conn.close()  # before the answer: 1000 tokens take seconds here
    stats = wait_for_idle_stats(stub, timeout=scaled(5))
    assert (stats.num_running, stats.num_waiting, stats.num_active_streams) == (0, 0, 0), stats
    assert stats.num_free_kv_blocks == info.num_kv_blocks, stats
