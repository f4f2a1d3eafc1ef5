#!/usr/bin/env python3
"""Regenerates the seed corpora under fuzz/corpus/<target>/ from tests/data fixtures
and small hand-built inputs: valid examples and near misses (truncated, a wrong
type, an offset off by one). Run from anywhere with the repository's .venv python
(the request seeds need protobuf and grpc_tools):

    .venv/bin/python fuzz/make_corpus.py

Files the fuzzers found (crash-*, regressions) live beside these under names that
do not start with "seed-"; this script only replaces seed-* files."""
import json
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
CORPUS = REPO / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def clear_seeds():
    for f in CORPUS.glob("*/seed-*"):
        f.unlink()


# ---- GGUF: header, metadata of every type, tensors, a tokenizer from a fixture.
GG_U8, GG_I8, GG_U16, GG_I16, GG_U32, GG_I32, GG_F32, GG_BOOL, GG_STR, GG_ARR, GG_U64, GG_I64, GG_F64 = range(13)
SCALAR_FMT = {GG_U8: "<B", GG_I8: "<b", GG_U16: "<H", GG_I16: "<h", GG_U32: "<I", GG_I32: "<i", GG_F32: "<f",
              GG_BOOL: "<?", GG_U64: "<Q", GG_I64: "<q", GG_F64: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == GG_STR:
        return gstr(v)
    return struct.pack(SCALAR_FMT[t], v)


def gguf(kvs, tensors=(), version=3, alignment=32):
    """kvs: [(key, type, value)] with type GG_ARR values as (elem_type, [values]);
    tensors: [(name, dims innermost first, ggml type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t)
        if t == GG_ARR:
            et, items = v
            out += struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
        else:
            out += gval(t, v)
    offset, blobs = 0, []
    for name, dims, ty, blob in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        blobs.append((offset, blob))
        offset += (len(blob) + alignment - 1) // alignment * alignment
    out += b"\0" * (-len(out) % alignment)
    base = len(out)
    for off, blob in blobs:
        out += b"\0" * (base + off - len(out)) + blob
    return out


def llama_config_kvs(arch="llama", vocab=None):
    kvs = [("general.architecture", GG_STR, arch),
           (f"{arch}.block_count", GG_U32, 1), (f"{arch}.embedding_length", GG_U32, 64),
           (f"{arch}.feed_forward_length", GG_U32, 128), (f"{arch}.attention.head_count", GG_U32, 4),
           (f"{arch}.attention.head_count_kv", GG_U32, 2), (f"{arch}.context_length", GG_U32, 256),
           (f"{arch}.attention.layer_norm_rms_epsilon", GG_F32, 1e-5), (f"{arch}.rope.freq_base", GG_F32, 10000.0)]
    if vocab is None:
        kvs.append((f"{arch}.vocab_size", GG_U32, 300))
    return kvs


def tokenizer_kvs(name, pre):
    j = json.loads((DATA / "tokenizer" / f"{name}.tokenizer.json").read_text())
    vocab = j["model"]["vocab"]
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    types = [1] * len(tokens)
    for a in j.get("added_tokens", []):
        while len(tokens) <= a["id"]:
            tokens.append(None)
            types.append(1)
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a.get("special") else 4
    tokens = [t if t is not None else f"<unused{i}>" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    eos = tokens.index("<|im_end|>") if "<|im_end|>" in tokens else len(tokens) - 1
    return [("tokenizer.ggml.model", GG_STR, "gpt2"), ("tokenizer.ggml.pre", GG_STR, pre),
            ("tokenizer.ggml.tokens", GG_ARR, (GG_STR, tokens)),
            ("tokenizer.ggml.token_type", GG_ARR, (GG_I32, types[:len(tokens)])),
            ("tokenizer.ggml.merges", GG_ARR, (GG_STR, merges)),
            ("tokenizer.ggml.bos_token_id", GG_U32, 0), ("tokenizer.ggml.eos_token_id", GG_U32, eos),
            ("tokenizer.ggml.add_bos_token", GG_BOOL, False),
            ("tokenizer.chat_template", GG_STR, "{% for message in messages %}<|im_start|>...{% endfor %}")]


def make_gguf():
    f32 = struct.pack("<8f", *range(8))
    q8_0 = struct.pack("<e", 0.5) + bytes(range(32))  # one Q8_0 block: f16 scale + 32 int8
    every_type = [("k.u8", GG_U8, 7), ("k.i8", GG_I8, -7), ("k.u16", GG_U16, 700), ("k.i16", GG_I16, -700),
                  ("k.u32", GG_U32, 70000), ("k.i32", GG_I32, -70000), ("k.f32", GG_F32, 1.5),
                  ("k.bool", GG_BOOL, True), ("k.str", GG_STR, "caf\u00e9"), ("k.u64", GG_U64, 1 << 40),
                  ("k.i64", GG_I64, -(1 << 40)), ("k.f64", GG_F64, 2.25),
                  ("k.arr.i32", GG_ARR, (GG_I32, [1, -2, 3])), ("k.arr.str", GG_ARR, (GG_STR, ["a", "", "bc"])),
                  ("k.arr.bool", GG_ARR, (GG_BOOL, [True, False])), ("k.arr.f64", GG_ARR, (GG_F64, [0.5]))]
    write("gguf", "header-only-v3", gguf([]))
    write("gguf", "header-only-v2", gguf([], version=2))
    write("gguf", "every-type", gguf(every_type))
    tensors = [("token_embd.weight", [8, 1], 0, f32), ("blk.0.attn_q.weight", [32], 8, q8_0)]
    write("gguf", "tensors", gguf([("general.alignment", GG_U32, 64)], tensors, alignment=64))
    config = gguf(llama_config_kvs(), [("output_norm.weight", [8], 0, f32)])
    write("gguf", "llama-config", config)
    full = gguf(llama_config_kvs("qwen2", vocab=True) + tokenizer_kvs("qwen2", "qwen2"))
    write("gguf", "qwen2-tokenizer", full)
    # Near misses: each breaks one rule the reader checks.
    write("gguf", "truncated-tensor-data", config[:-4])
    write("gguf", "truncated-in-metadata", config[:len(config) // 3])
    write("gguf", "version-1", b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    write("gguf", "big-endian", b"GGUF" + struct.pack(">IQQ", 3, 0, 0))
    write("gguf", "bad-alignment", gguf([("general.alignment", GG_U32, 48)]))
    write("gguf", "unsupported-dtype", gguf([], [("t", [32], 6, b"\0" * 22)]))  # Q5_0
    write("gguf", "nested-array", gguf([]) [:16] + struct.pack("<Q", 1) + gstr("k") +
          struct.pack("<IIQ", GG_ARR, GG_ARR, 0))


# ---- safetensors: 8-byte header length, JSON header, data.
def safetensors(header, data, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def make_safetensors():
    data = struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<4e", 1, 2, 3, 4) + b"\x80\x3f" * 2
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]},
              "c": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [24, 28]}}
    write("safetensors", "three-dtypes", safetensors(header, data))
    write("safetensors", "empty", safetensors({}, b""))
    write("safetensors", "scalar", safetensors({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}},
                                               struct.pack("<f", 3)))
    write("safetensors", "zero-dim", safetensors({"z": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}}, b""))
    write("safetensors", "overlap", safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
    write("safetensors", "past-end", safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 15))
    write("safetensors", "wrong-size", safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8))
    write("safetensors", "unsupported-dtype", safetensors({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    write("safetensors", "header-length-past-end", struct.pack("<Q", 1 << 40) + b"{}")
    write("safetensors", "not-json", struct.pack("<Q", 8) + b"{\"a\":[1,")
    # The start of a real file: its header and a truncated data section.
    real = (DATA / "tiny-llama" / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", real[:8])[0]
    write("safetensors", "tiny-llama-truncated", real[:8 + n + 64])


# ---- config.json
def make_config_json():
    for name in ("tiny-llama", "tiny-qwen2", "tiny-qwen3"):
        write("config_json", name, (DATA / name / "config.json").read_bytes())
    j = json.loads((DATA / "tiny-llama" / "config.json").read_text())
    j["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}
    write("config_json", "llama3-rope-scaling", json.dumps(j))
    write("config_json", "heads-not-dividing", json.dumps(dict(j, num_key_value_heads=3)))
    write("config_json", "huge-layers", json.dumps(dict(j, num_hidden_layers=1e30)))
    write("config_json", "unknown-architecture", json.dumps(dict(j, architectures=["GPT2LMHeadModel"])))


# ---- tokenizer.json / tokenizer_config.json
def make_tokenizer_json():
    for name in ("llama3", "qwen2"):
        write("tokenizer_json", f"{name}.tokenizer.json", (DATA / "tokenizer" / f"{name}.tokenizer.json").read_bytes())
        write("tokenizer_json", f"{name}.tokenizer_config.json",
              (DATA / "tokenizer" / f"{name}.tokenizer_config.json").read_bytes())
    write("tokenizer_json", "tiny-llama.tokenizer_config.json", (DATA / "tiny-llama" / "tokenizer_config.json").read_bytes())
    # A minimal byte-level BPE: the 256 byte tokens (GPT-2's byte-to-unicode map), two merges.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}
    vocab["he"] = 256
    vocab["hel"] = 257
    tok = {"version": "1.0", "added_tokens": [{"id": 258, "content": "<|end|>", "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": ["h e", "he l"]}}
    write("tokenizer_json", "minimal", json.dumps(tok, ensure_ascii=False))
    bad = dict(tok, model=dict(tok["model"], merges=["h x"]))
    write("tokenizer_json", "merge-not-in-vocab", json.dumps(bad, ensure_ascii=False))
    write("tokenizer_json", "wordpiece", json.dumps(dict(tok, model={"type": "WordPiece", "vocab": {}})))
    write("tokenizer_json", "config-null-bos", '{"bos_token": null, "eos_token": {"content": "<|end|>"}, "add_bos_token": true}')


# ---- tokenizer round trip: byte 0 tokenizer, byte 1 mode (bit 0 ids, bit 1 special).
def make_roundtrip():
    texts = [json.loads(line) for line in (DATA / "tokenizer" / "corpus.txt").read_text().split("\n") if line.strip()]
    texts = [t for t in texts if len(t.encode()) < 400]
    for i, t in enumerate(texts[::3][:24]):
        write("tokenizer_roundtrip", f"text-{i}", bytes([i % 5, 2 * (i % 2)]) + t.encode())
    write("tokenizer_roundtrip", "special-tokens", bytes([1, 2]) + "<|im_start|>user\nHi<think>x</think><|im_end|>".encode())
    write("tokenizer_roundtrip", "llama3-special", bytes([0, 2]) + "<|begin_of_text|><|eot_id|> 12345".encode())
    write("tokenizer_roundtrip", "invalid-utf8", bytes([0, 0]) + b"ab\xc3(\xe2\x82")
    for i, line in enumerate((DATA / "tokenizer" / "qwen2.ids.jsonl").read_text().splitlines()[10:16]):
        ids = json.loads(line)["ids"]
        write("tokenizer_roundtrip", f"ids-{i}", bytes([1, 1 | 2 * (i % 2)]) + struct.pack(f"<{len(ids)}I", *ids))


# ---- chat templates: FuzzedDataProvider input (strings from the front, integers
# and bools from the back, in the order chat_template_fuzz.cpp consumes them).
def fdp_string(s):
    return s.encode().replace(b"\\", b"\\\\") + b"\\x"


def make_chat_template():
    convo = [("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "<think>add</think>4"), ("user", "Why?")]
    def build(source, arch, name, messages, add_gen=True, thinking=True):
        front, back = b"", []
        if source is not None:
            back += [1, arch]
            front += fdp_string(source)
        else:
            back += [0, name]
        back += [int(add_gen), int(thinking), 0, len(messages)]
        for role, content in messages:
            back += [1, ["system", "user", "assistant"].index(role)]
            front += fdp_string(content)
        return front + bytes(reversed(back))
    archs = {"HuggingFaceTB-SmolLM2-135M-Instruct": 0, "Qwen-Qwen2.5-7B-Instruct": 1, "Qwen-Qwen3-0.6B": 2,
             "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": 1, "meta-llama-Llama-3.2-3B-Instruct": 0}
    for stem, arch in archs.items():
        src = (DATA / "templates" / f"{stem}.jinja").read_text()
        write("chat_template", f"detect-{stem}", build(src, arch, 0, convo[1:3]))
    for name in range(4):
        write("chat_template", f"by-name-{name}", build(None, 0, name, convo, add_gen=name % 2 == 0, thinking=name < 2))
    write("chat_template", "empty-conversation", build(None, 0, 0, []))
    # A role render() refuses: the 1-in-16 branch that reads the role as a string.
    write("chat_template", "unknown-role", fdp_string("tool") + fdp_string("x") + bytes(reversed([0, 0, 1, 1, 0, 1, 0])))


# ---- gRPC requests: byte 0 (bit 0: chat; the rest: served model) + protobuf bytes.
def make_request():
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="flint-stubs-")
    if protoc.main(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}",
                    str(REPO / "proto/flint/v1/inference.proto")]) != 0:
        sys.exit("protoc failed on proto/flint/v1/inference.proto")
    sys.path.insert(0, out)
    from flint.v1 import inference_pb2 as pb

    def req(name, model, chat, msg):
        write("request", name, bytes([model << 1 | int(chat)]) + msg.SerializeToString())

    g = pb.GenerateRequest(text="Hello world")
    req("generate-text", 0, False, g)
    g = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2, 3, 600]), add_special_tokens=False)
    g.sampling.temperature, g.sampling.top_k, g.sampling.top_p, g.sampling.seed = 0.7, 40, 0.9, 42
    g.stopping.max_tokens = 16
    g.stopping.stop.extend(["\n\n", "END"])
    g.stopping.stop_token_ids.extend([0, 678])
    g.logprobs.top_logprobs = 3
    g.priority, g.request_id = 5, "req-1"
    req("generate-ids-all-fields", 0, False, g)
    g = pb.GenerateRequest(text="<|im_start|>assistant\n<think>\n")
    g.reasoning.enabled, g.reasoning.budget_tokens = True, 8
    req("generate-think", 1, False, g)
    req("generate-max-tokens-too-big", 0, False, pb.GenerateRequest(text="Hi", stopping=pb.StoppingCriteria(max_tokens=1000)))
    req("generate-empty", 0, False, pb.GenerateRequest())
    c = pb.ChatRequest(messages=[pb.ChatMessage(role="system", content="Be brief."),
                                 pb.ChatMessage(role="user", content="What is 2+2?")])
    c.template_options.date = "05 Mar 2025"
    c.sampling.repetition_penalty, c.sampling.presence_penalty = 1.1, 0.5
    c.reasoning.enabled = False
    for m in range(4):
        req(f"chat-model-{m}", m, True, c)
    req("chat-bad-role", 0, True, pb.ChatRequest(messages=[pb.ChatMessage(role="tool", content="x")]))
    write("request", "chat-invalid-utf8", bytes([1]) + b"\x0a\x07\x0a\x04user\x12\xff")


# ---- OpenAI JSON bodies
def make_openai_json():
    bodies = {
        "chat-minimal": {"messages": [{"role": "user", "content": "Hello"}]},
        "chat-all-fields": {"model": "flint-fuzz", "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": None}, {"role": "user", "content": "Go on"}],
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7, "top_p": 0.9, "top_k": -1,
            "min_p": 0.05, "presence_penalty": 0.1, "frequency_penalty": 0.2, "repetition_penalty": 1.1,
            "seed": 7, "max_tokens": 32, "max_completion_tokens": 16, "stop": ["\n\n", "END"],
            "stop_token_ids": [0], "ignore_eos": False, "n": 1, "priority": 3, "logprobs": True, "top_logprobs": 2,
            "reasoning": {"enabled": True, "budget_tokens": 8}, "chat_template_kwargs": {"enable_thinking": False},
            "user": "u1"},
        "chat-other-model": {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]},
        "chat-n2": {"messages": [{"role": "user", "content": "Hi"}], "n": 2},
        "chat-image-part": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "completion-text": {"prompt": "Once upon a time", "max_tokens": 8, "logprobs": 2, "echo": False, "best_of": 1},
        "completion-ids": {"prompt": [1, 2, 3], "add_special_tokens": False, "stop": "x"},
        "completion-nested": {"prompt": [[5, 6, 7]], "suffix": ""},
        "completion-array-of-text": {"prompt": ["Hello there"], "seed": -1, "temperature": None},
        "wrong-types": {"messages": "Hello", "max_tokens": "8", "temperature": [1], "stop": 3},
    }
    for name, body in bodies.items():
        write("openai_json", name, json.dumps(body))
    write("openai_json", "not-json", '{"messages": [{"role": "user", "content": "Hi"}')
    write("openai_json", "huge-numbers", '{"prompt": "a", "max_tokens": 1e400, "seed": 18446744073709551616, "top_k": -2147483649}')


def main():
    clear_seeds()
    make_gguf()
    make_safetensors()
    make_config_json()
    make_tokenizer_json()
    make_roundtrip()
    make_chat_template()
    make_request()
    make_openai_json()
    total = sum(f.stat().st_size for f in CORPUS.glob("*/*"))
    print(f"fuzz/corpus: {sum(1 for _ in CORPUS.glob('*/*'))} files, {total} bytes")


if __name__ == "__main__":
    main()
