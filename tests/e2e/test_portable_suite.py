"""What scripts/gpu-check.sh needs to run this suite on the GPU machine, where the default model is too big to carry
and grpc_tools is not installed: scripts/trim-gguf.py (the default model cut to 2 layers, broken inputs refused
with a message) and flint_stubs.py's descriptor stubs (FLINT_STUBS=descriptors), with both together running part of
test_flintd.py as gpu-check runs all of it."""
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from flintd_harness import FLINT_MODEL, REPO, Flintd, assert_ok, gen, pb, run, scaled

TRIM = REPO / "scripts/trim-gguf.py"


def trim(src, dst, layers):
    return subprocess.run([sys.executable, str(TRIM), str(src), str(dst), "--layers", str(layers)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory):
    """The default model cut to 2 layers, under the default model's file name (GetModelInfo reports it)."""
    path = tmp_path_factory.mktemp("trimmed") / FLINT_MODEL.name
    r = trim(FLINT_MODEL, path, 2)
    assert r.returncode == 0, r.stderr
    assert "2 of 30 layers" in r.stdout, r.stdout
    return path


def test_a_trimmed_model_keeps_the_tokenizer_and_serves(trimmed, server, tmp_path):
    whole = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    d = Flintd(tmp_path, "--model", trimmed, "--kv-cache-memory", "16MiB")
    try:
        info = d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert (info.name, info.vocab_size, info.chat_template) == (whole.name, whole.vocab_size, whole.chat_template)
        assert info.num_parameters < whole.num_parameters // 2
        text = "The capital of France is Paris."
        ids = [list(s.stub.Tokenize(pb.TokenizeRequest(text=text), timeout=10).token_ids) for s in (server, d)]
        assert ids[0] == ids[1] and len(ids[0]) > 3
        r = run(d.stub, gen(text, max_tokens=5, ignore_eos=True), timeout=scaled(60))
        assert_ok(r)
        assert len(r.token_ids) == 5
    finally:
        d.close()
    assert trimmed.stat().st_size < FLINT_MODEL.stat().st_size // 2


# Cut in the header, the metadata, the tensor data (50 MB from the end) and the last tensor (1000 bytes from it).
@pytest.mark.parametrize("cut", [3, 20, 200, 4000, 2_000_000, -50_000_000, -1000])
def test_trim_refuses_a_truncated_file(tmp_path, cut):
    src = tmp_path / "cut.gguf"
    with open(FLINT_MODEL, "rb") as f:
        whole = f.read()
    src.write_bytes(whole[:cut])
    r = trim(src, tmp_path / "out.gguf", 2)
    assert r.returncode == 1 and r.stderr.startswith("trim-gguf: "), (r.returncode, r.stderr)
    assert "truncated" in r.stderr or "not a GGUF" in r.stderr, r.stderr
    assert not (tmp_path / "out.gguf").exists()


def test_trim_refuses_other_files_and_layer_counts(tmp_path):
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"GGML" + bytes(64))
    r = trim(not_gguf, tmp_path / "o.gguf", 1)
    assert r.returncode == 1 and "not a GGUF file" in r.stderr, r.stderr
    v9 = tmp_path / "v9.gguf"
    v9.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    r = trim(v9, tmp_path / "o.gguf", 1)
    assert r.returncode == 1 and "version 9" in r.stderr, r.stderr
    for layers in (0, 31):
        r = trim(FLINT_MODEL, tmp_path / "o.gguf", layers)
        assert r.returncode == 1 and "the model has 30 layers" in r.stderr, r.stderr
    r = trim(tmp_path / "absent.gguf", tmp_path / "o.gguf", 1)
    assert r.returncode == 1 and "absent.gguf" in r.stderr, r.stderr
    r = trim(FLINT_MODEL, tmp_path / "no-such-dir" / "o.gguf", 1)
    assert r.returncode == 1 and "no-such-dir" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_suite_runs_on_descriptor_stubs_and_a_trimmed_model(trimmed, tmp_path):
    descriptors = tmp_path / "flint.desc"
    subprocess.run([sys.executable, str(REPO / "tests/e2e/flint_stubs.py"), "--write-descriptors", str(descriptors)],
                   check=True, capture_output=True, timeout=60)
    env = dict(os.environ, FLINT_STUBS="descriptors", FLINT_PROTO_DESCRIPTORS=str(descriptors),
               FLINT_MODEL=str(trimmed), FLINT_MODEL_TRIMMED="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).parent /
                        "test_flintd.py"), "-k", "model_info or deltas_concatenate or health or tokenize"],
                       env=env, capture_output=True, text=True, timeout=scaled(300))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "1 skipped" in r.stdout, r.stdout[-2000:]
