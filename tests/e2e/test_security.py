"""flintd end-to-end: TLS and mutual TLS on gRPC and HTTP, API keys (gRPC metadata
and HTTP header, per-key limits), request size and prompt limits, and start-up
errors for bad security files. Certificates come from a throwaway CA that the
tests make with the openssl command."""
import http.client
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from flintd_harness import FLINT_MODEL, FLINTD, OK, SERVING, assert_ok, call_rpc, gen, pb, read_stream

FLINT = Path(os.environ.get("FLINT", FLINTD.parent.parent / "client" / "flint"))
KEY_ALPHA, KEY_BETA = "sk-alpha-0123456789", "sk-beta-9876543210"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, san=None):
    """A key and certificate for `name` signed by CA `ca` (server certificates carry `san`)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    ext = Path(d) / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca -> server (127.0.0.1, localhost); client_ca -> client; rogue_ca -> rogue (an untrusted client)."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "client_ca", "rogue_ca"):
        make_ca(d, ca)
    make_cert(d, "server", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_cert(d, "client", "client_ca")
    make_cert(d, "rogue", "rogue_ca")
    return d


def read(d, name):
    return (Path(d) / name).read_bytes()


def grpc_credentials(pki, client=None):
    kwargs = {"root_certificates": read(pki, "ca.pem")}
    if client:
        kwargs.update(private_key=read(pki, f"{client}.key"), certificate_chain=read(pki, f"{client}.pem"))
    return grpc.ssl_channel_credentials(**kwargs)


def https_request(url, pki, path="/v1/chat/completions", body=None, client=None, headers=None):
    """One HTTPS request trusting the test CA; returns (status, parsed JSON body)."""
    ctx = ssl.create_default_context(cafile=str(Path(pki) / "ca.pem"))
    if client:
        ctx.load_cert_chain(str(Path(pki) / f"{client}.pem"), str(Path(pki) / f"{client}.key"))
    host, port = url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
    try:
        conn.request("POST" if body is not None else "GET", path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def http_request(url, path, body, headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, body=body if isinstance(body, (bytes, str)) else json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


CHAT = {"model": FLINT_MODEL.stem, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def test_tls_serves_grpc_and_https_and_refuses_plaintext(fresh_server, pki):
    d = fresh_server("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key",
                     channel_credentials=grpc_credentials(pki))
    assert d.http_url.startswith("https://")
    assert "(TLS)" in d.log()
    result = read_stream(call_rpc(d.stub, gen("The capital of France is", max_tokens=4)))
    assert_ok(result)
    status, body = https_request(d.http_url, pki, body=CHAT)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"]

    # The same ports without TLS: the handshake is missing, nothing is served.
    plain = grpc.insecure_channel(d.address)
    with pytest.raises(grpc.RpcError) as e:
        pb_stub = type(d.stub)(plain)
        pb_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        http_request(d.http_url.replace("https://", "http://"), "/v1/chat/completions", CHAT)
    assert d.health_status() == SERVING


def test_mutual_tls_requires_a_client_certificate_the_ca_signed(fresh_server, pki):
    d = fresh_server("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key",
                     "--tls-client-ca", pki / "client_ca.pem", channel_credentials=grpc_credentials(pki, "client"))
    assert "client certificates required" in d.log()
    assert_ok(read_stream(call_rpc(d.stub, gen("Hello", max_tokens=3))))
    status, _ = https_request(d.http_url, pki, body=CHAT, client="client")
    assert status == 200

    for client in (None, "rogue"):  # no certificate; one from a CA the server does not trust
        channel = grpc.secure_channel(d.address, grpc_credentials(pki, client))
        with pytest.raises(grpc.RpcError) as e:
            type(d.stub)(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, client
        channel.close()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https_request(d.http_url, pki, body=CHAT, client=client)
    assert_ok(read_stream(call_rpc(d.stub, gen("Hello again", max_tokens=3))), "after the refused handshakes")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    from flintd_harness import Flintd

    d = tmp_path_factory.mktemp("keys")
    key_file = d / "keys"
    key_file.write_text(f"# test keys\n{KEY_ALPHA} name=alpha max_concurrent=1\n\n{KEY_BETA}   name=beta\n")
    server = Flintd(d, "--api-key-file", key_file, "--max-requests-per-key", 4)
    yield server
    server.close()


def bearer(key):
    return [("authorization", f"Bearer {key}")]


def test_api_keys_guard_every_grpc_method_but_health(keyed_server):
    d = keyed_server
    assert d.health_status() == SERVING  # probes need no key
    calls = [lambda md: read_stream(call_rpc(d.stub, gen("Hi", max_tokens=2), metadata=md)),
             lambda md: d.stub.Tokenize(pb.TokenizeRequest(text="hi"), timeout=10, metadata=md),
             lambda md: d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=md),
             lambda md: d.stub.GetServerStats(pb.GetServerStatsRequest(), timeout=10, metadata=md)]
    for metadata in (None, bearer("sk-wrong"), [("authorization", KEY_BETA)], bearer(KEY_BETA + "x")):
        for call in calls:
            try:
                result = call(metadata)
                code, details = result.code, result.details
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
            assert code == grpc.StatusCode.UNAUTHENTICATED, (metadata, code)
            assert "API key" in details
    assert_ok(read_stream(call_rpc(d.stub, gen("Hi", max_tokens=2), metadata=bearer(KEY_BETA))))
    assert d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10,
                               metadata=[("authorization", f"bearer {KEY_ALPHA}")]).vocab_size > 0
    assert "sk-alpha" not in d.log() and "sk-beta" not in d.log()  # keys never reach the log


def wait_until(predicate, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_key_at_its_limit_gets_resource_exhausted_and_429_until_a_request_ends(keyed_server):
    d = keyed_server
    long_call = call_rpc(d.stub, gen("Count to one hundred:", max_tokens=400, ignore_eos=True), timeout=120,
                         metadata=bearer(KEY_ALPHA))
    first = next(iter(long_call))  # alpha's one request is running
    assert first.WhichOneof("event") == "delta"
    second = read_stream(call_rpc(d.stub, gen("Hi", max_tokens=2), metadata=bearer(KEY_ALPHA)))
    assert second.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "alpha" in second.details and "1 requests open" in second.details
    status, body = http_request(d.http_url, "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {KEY_ALPHA}"})
    assert status == 429 and "alpha" in body["error"]["message"]
    # Another key is not held back by alpha's.
    assert_ok(read_stream(call_rpc(d.stub, gen("Hi", max_tokens=2), metadata=bearer(KEY_BETA))))
    long_call.cancel()
    ok = wait_until(lambda: read_stream(call_rpc(d.stub, gen("Hi", max_tokens=2), metadata=bearer(KEY_ALPHA))).code == OK)
    assert ok, "alpha's slot did not come back after its request was cancelled"


def test_http_api_keys(keyed_server):
    d = keyed_server
    status, body = http_request(d.http_url, "/v1/chat/completions", CHAT)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = http_request(d.http_url, "/v1/chat/completions", CHAT, {"Authorization": "Bearer nope"})
    assert status == 401
    status, body = http_request(d.http_url, "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {KEY_BETA}"})
    assert status == 200 and body["choices"][0]["message"]["content"]


def test_the_flint_client_speaks_tls_and_sends_its_key(fresh_server, pki, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(KEY_BETA + "\n")
    d = fresh_server("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key", "--api-key-file", key_file,
                     channel_credentials=grpc_credentials(pki))
    base = [str(FLINT), "--server", d.address, "--tls-ca", str(pki / "ca.pem")]
    ok = subprocess.run([*base, "--api-key", KEY_BETA, "generate", "--max-tokens", "3", "Hello"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    env = {**os.environ, "FLINT_API_KEY": KEY_BETA}
    assert subprocess.run([*base, "info"], capture_output=True, text=True, timeout=60, env=env).returncode == 0
    no_key = subprocess.run([*base, "info"], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "FLINT_API_KEY"})
    assert no_key.returncode == 1 and "UNAUTHENTICATED" in no_key.stderr
    health = subprocess.run([*base, "health"], capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stderr


def test_request_size_and_prompt_limits(fresh_server):
    d = fresh_server("--max-request-bytes", "4KiB", "--max-prompt-tokens", 16)
    big = read_stream(call_rpc(d.stub, gen("word " * 2000, max_tokens=2)))
    assert big.code == grpc.StatusCode.RESOURCE_EXHAUSTED, big.code
    status, body = http_request(d.http_url, "/v1/completions", {"model": FLINT_MODEL.stem, "prompt": "word " * 2000})
    assert status == 413 and "--max-request-bytes" in body["error"]["message"]
    long_prompt = read_stream(call_rpc(d.stub, gen("one two three four five six seven eight nine ten " * 3,
                                                   max_tokens=2)))
    assert long_prompt.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 16 tokens" in long_prompt.details
    assert_ok(read_stream(call_rpc(d.stub, gen("Short prompt", max_tokens=2))))


def start_error(tmp_path, *flags):
    """Runs flintd expecting it to refuse to start; returns its stderr."""
    out = subprocess.run([str(FLINTD), "--model", str(FLINT_MODEL), "--port", "0", "--http-port", "0",
                          *map(str, flags)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    return out.stderr


def test_bad_security_files_stop_flintd_with_a_clear_error(pki, tmp_path):
    assert "both --tls-cert and --tls-key" in start_error(tmp_path, "--tls-cert", pki / "server.pem")
    assert "cannot open" in start_error(tmp_path, "--tls-cert", tmp_path / "missing.pem", "--tls-key",
                                        pki / "server.key")
    assert "is not the private key" in start_error(tmp_path, "--tls-cert", pki / "server.pem", "--tls-key",
                                                   pki / "client.key")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "not a PEM certificate" in start_error(tmp_path, "--tls-cert", garbage, "--tls-key", pki / "server.key")
    assert "not a PEM certificate" in start_error(tmp_path, "--tls-cert", pki / "server.pem", "--tls-key",
                                                  pki / "server.key", "--tls-client-ca", garbage)
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_ALPHA}\n{KEY_BETA} max_concurrent=many\n")
    assert f"{keys}:2: max_concurrent" in start_error(tmp_path, "--api-key-file", keys)
    keys.write_text(f"{KEY_ALPHA}\n{KEY_ALPHA} name=again\n")
    assert "repeats" in start_error(tmp_path, "--api-key-file", keys)
    keys.write_text("# nothing here\n")
    assert "holds no key" in start_error(tmp_path, "--api-key-file", keys)
