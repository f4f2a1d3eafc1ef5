"""flintd end-to-end: every bad request is INVALID_ARGUMENT with a message that names
the problem, and a stream running beside it goes on unharmed."""
import grpc
import pytest

from flintd_harness import call_rpc, chat, gen, pb, read_stream, run, same_output


def _replace_placeholder(request, placeholder, bad):
    data = request.SerializeToString()
    assert data.count(placeholder) == 1 and len(bad) == len(placeholder)
    return data.replace(placeholder, bad)


PLACEHOLDER = b"PLACEHOLDER!"
BAD_UTF8 = b"ab\xff\xfe\xc3(cd\xe2\x82ef"  # same length as PLACEHOLDER, invalid UTF-8

# name -> (method, request builder taking ModelInfo, words one of which the message must contain)
BAD_REQUESTS = {
    "chat without messages": ("Chat", lambda i: pb.ChatRequest(stopping=pb.StoppingCriteria(max_tokens=4)),
                              ["messages"]),
    "negative max_tokens": ("Generate", lambda i: gen("hi", max_tokens=-1), ["max_tokens"]),
    "zero max_tokens": ("Generate", lambda i: gen("hi", max_tokens=0), ["max_tokens"]),
    "top_p above 1": ("Generate", lambda i: gen("hi", max_tokens=4, top_p=1.5), ["top_p"]),
    "top_p of 0": ("Generate", lambda i: gen("hi", max_tokens=4, top_p=0.0), ["top_p"]),
    "negative temperature": ("Chat", lambda i: chat("hi", max_tokens=4, temperature=-0.5), ["temperature"]),
    "temperature above 100": ("Generate", lambda i: gen("hi", max_tokens=4, temperature=101), ["temperature"]),
    "negative top_k": ("Generate", lambda i: gen("hi", max_tokens=4, top_k=-1), ["top_k"]),
    "min_p above 1": ("Generate", lambda i: gen("hi", max_tokens=4, min_p=1.5), ["min_p"]),
    "zero repetition_penalty": ("Generate", lambda i: gen("hi", max_tokens=4, repetition_penalty=0.0),
                                ["repetition_penalty"]),
    "presence_penalty above 2": ("Generate", lambda i: gen("hi", max_tokens=4, presence_penalty=3.0),
                                 ["presence_penalty"]),
    "frequency_penalty below -2": ("Generate", lambda i: gen("hi", max_tokens=4, frequency_penalty=-3.0),
                                   ["frequency_penalty"]),
    "prompt over the context": ("Generate", lambda i: gen("hello world " * (i.context_length + 100), max_tokens=4),
                                ["prompt", "context"]),
    "prompt plus max_tokens over the context": ("Chat", lambda i: chat("hi", max_tokens=i.max_sequence_tokens),
                                                ["max_tokens", "context", "max_sequence"]),
    "invalid UTF-8 in Generate.text": ("Generate", lambda i: _replace_placeholder(
        gen(PLACEHOLDER.decode(), max_tokens=4), PLACEHOLDER, BAD_UTF8), ["utf"]),
    "invalid UTF-8 in a chat message": ("Chat", lambda i: _replace_placeholder(
        chat(PLACEHOLDER.decode(), max_tokens=4), PLACEHOLDER, BAD_UTF8), ["utf"]),
    "invalid UTF-8 in a stop string": ("Generate", lambda i: _replace_placeholder(
        gen("hi", max_tokens=4, stop=[PLACEHOLDER.decode()]), PLACEHOLDER, BAD_UTF8), ["utf"]),
    "unknown role": ("Chat", lambda i: chat([("wizard", "hi")], max_tokens=4), ["role"]),
    "token id out of vocabulary": ("Generate", lambda i: pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[1, 2, i.vocab_size]), stopping=pb.StoppingCriteria(max_tokens=4)), ["token"]),
    "negative token id": ("Generate", lambda i: pb.GenerateRequest(
        token_ids=pb.TokenIds(ids=[-1]), stopping=pb.StoppingCriteria(max_tokens=4)), ["token"]),
    "generate without a prompt": ("Generate", lambda i: pb.GenerateRequest(stopping=pb.StoppingCriteria(max_tokens=4)),
                                  ["prompt"]),
    "too many top_logprobs": ("Generate", lambda i: gen("hi", max_tokens=4, top_logprobs=21), ["top_logprobs"]),
    "seventeen stop strings": ("Generate", lambda i: gen("hi", max_tokens=4, stop=[f"s{k}" for k in range(17)]),
                               ["stop"]),
    "empty stop string": ("Generate", lambda i: gen("hi", max_tokens=4, stop=[""]), ["stop"]),
    "priority above 1000": ("Chat", lambda i: pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="hi")],
                                                             priority=1001), ["priority"]),
    "request_id over 128 bytes": ("Generate", lambda i: gen("hi", max_tokens=4, request_id="r" * 129),
                                  ["request_id"]),
}


@pytest.fixture(scope="module")
def background_solo(stub):
    """The request that runs beside each bad one, and its output alone."""
    request = gen("Once upon a time", max_tokens=16, ignore_eos=True, request_id="background")
    return request, run(stub, request)


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_is_invalid_argument_naming_the_problem_and_another_stream_runs_on(
        server, stub, info, background_solo, name):
    method, build, words = BAD_REQUESTS[name]
    request = build(info)
    bg_request, bg_solo = background_solo

    call = call_rpc(stub, bg_request, timeout=60)
    it = iter(call)
    first = next(it)  # the background stream is running
    if isinstance(request, bytes):  # not valid protobuf for Python: send the bytes as they are
        rpc = server.channel.unary_stream(f"/flint.v1.Inference/{method}", request_serializer=None,
                                          response_deserializer=pb.GenerateResponse.FromString)
        bad = read_stream(rpc(request, timeout=30))
    else:
        bad = read_stream(getattr(stub, method)(request, timeout=30))
    rest = read_stream(it)
    rest.deltas.insert(0, first.delta)
    rest.events.insert(0, "delta")

    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {bad.code} {bad.details!r}"
    assert not bad.deltas and bad.finished is None
    assert any(w.lower() in bad.details.lower() for w in words), f"{name}: message {bad.details!r} names none of {words}"
    same_output(bg_solo, rest, "the background stream", seeded=False)


def test_unary_calls_reject_bad_input_with_invalid_argument(stub, info):
    with pytest.raises(grpc.RpcError) as e:
        stub.Detokenize(pb.DetokenizeRequest(token_ids=[info.vocab_size]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token" in e.value.details().lower()
    with pytest.raises(grpc.RpcError) as e:
        stub.Tokenize(pb.TokenizeRequest(messages=[pb.ChatMessage(role="wizard", content="hi")]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "role" in e.value.details().lower()
