"""flintd --random-weights: a random bf16 model of a real shape, served with the tokenizer of --tokenizer
(here the default model's, whose 49152 tokens fit smollm2-135m's vocabulary). Its name says what it is,
greedy output is the same run to run and chat works through the borrowed chat template; without
--tokenizer flintd refuses to start with exit code 2."""
import subprocess

from flintd_harness import FLINT_MODEL, FLINTD, assert_ok, chat, gen, pb, run

SPEC = "smollm2-135m:layers=2,seed=7"


def test_a_random_model_serves_text_through_the_borrowed_tokenizer(fresh_server):
    d = fresh_server("--random-weights", SPEC, "--tokenizer", str(FLINT_MODEL), "--kv-cache-memory", "64MiB")
    info = d.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.name == "random:" + SPEC
    assert info.vocab_size == 49152
    assert "generating random weights " + SPEC in d.log()
    request = gen("Once upon a time", max_tokens=8, ignore_eos=True)
    a, b = run(d.stub, request), run(d.stub, request)
    assert_ok(a, "first run")
    assert_ok(b, "second run")
    assert len(a.token_ids) == 8
    assert all(0 <= t < 49152 for t in a.token_ids)
    assert b.token_ids == a.token_ids and b.text == a.text
    c = run(d.stub, chat("hi", max_tokens=4, ignore_eos=True))
    assert_ok(c, "chat")
    assert len(c.token_ids) == 4


def test_random_weights_without_a_tokenizer_is_refused():
    out = subprocess.run([str(FLINTD), "--random-weights", SPEC], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--random-weights needs --tokenizer PATH" in out.stderr
