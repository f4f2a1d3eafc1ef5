#!/usr/bin/env python3
"""torch_baselines: what PyTorch and transformers reach on the shapes Flint serves, measured in the same run as
Flint: SDPA prefill (TFLOP/s) and decode (GB/s of KV read), and generate() decode tokens/s against the roofline.

Runs with the GPU machine's own python3 (torch 2.11 cu130, transformers 5.x); `--device cpu --quick` is a dry run
on tiny shapes that exercises every code path without a GPU.
"""
import argparse
import gc
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers

# Head and weight shapes of the models Flint serves (the real models' dims and layer counts).
MODELS = {
    "SmolLM2-135M": dict(arch="llama", hidden=576, heads=9, kv_heads=3, head_dim=64, ffn=1536, vocab=49152,
                         layers=30, tied=True),
    "Llama-3.2-1B": dict(arch="llama", hidden=2048, heads=32, kv_heads=8, head_dim=64, ffn=8192, vocab=128256,
                         layers=16, tied=True),
    "Qwen2.5-1.5B": dict(arch="qwen2", hidden=1536, heads=12, kv_heads=2, head_dim=128, ffn=8960, vocab=151936,
                         layers=28, tied=True),
    "Qwen2.5-7B": dict(arch="qwen2", hidden=3584, heads=28, kv_heads=4, head_dim=128, ffn=18944, vocab=152064,
                       layers=28, tied=False),
}
# The CPU dry run keeps each model's architecture and tying but shrinks every size.
TINY = dict(hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=512, layers=2)

DTYPE = torch.bfloat16
BF16_BYTES = 2


class Clock:
    """Per-call times in µs: CUDA events on the GPU (the card's time), perf_counter on the CPU dry run."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def between(self, a, b):
        if self.cuda:
            return a.elapsed_time(b) * 1e3
        return (b - a) * 1e6

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time_calls(self, fn, warmup, reps):
        """Runs fn(i) `warmup` times untimed, then `reps` times each between its own marks; sorted µs."""
        for i in range(warmup):
            fn(i)
        self.sync()
        marks = []
        for r in range(reps):
            a = self.mark()
            fn(warmup + r)
            marks.append((a, self.mark()))
        self.sync()
        return sorted(self.between(a, b) for a, b in marks)


def l2_bytes(device):
    if device.type != "cuda":
        return 32 << 20
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))


def copies_to_beat_l2(device, nbytes):
    """Input copies to rotate through so that together they span at least 3 x L2 (L2 then serves none)."""
    return max(1, math.ceil(3 * l2_bytes(device) / max(nbytes, 1)))


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- Copy ceiling. Bytes counted: every byte read once and written once (2 x buffer per copy).
def measure_copy(device, clock, quick):
    n = (256 << 20 if quick else 1 << 30) if device.type == "cuda" else 8 << 20  # bf16 elements
    src = torch.randn(n, dtype=DTYPE, device=device)
    dst = torch.empty_like(src)
    us = clock.time_calls(lambda i: dst.copy_(src), 2, 5 if quick else 20)
    ok = bool(torch.equal(dst, src))
    gbps = 2 * n * BF16_BYTES / statistics.median(us) / 1e3
    del src, dst
    free_memory()
    return dict(buffer_bytes=n * BF16_BYTES, gbps=gbps, us_median=statistics.median(us), ok=ok)


# ---- SDPA prefill: causal, batch 1, GQA heads. FLOPs: QK^T and PV are 2·L²·heads·hd each, halved for causal.
def measure_prefill(device, clock, quick, models, lengths):
    rows = []
    for name, m in models.items():
        for L in lengths:
            q = torch.randn(1, m["heads"], L, m["head_dim"], dtype=DTYPE, device=device)
            k = torch.randn(1, m["kv_heads"], L, m["head_dim"], dtype=DTYPE, device=device)
            v = torch.randn_like(k)
            flops = 4 * L * L * m["heads"] * m["head_dim"] / 2
            row = dict(model=name, L=L, heads=m["heads"], kv_heads=m["kv_heads"], head_dim=m["head_dim"], flops=flops)
            try:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                row["finite"] = bool(torch.isfinite(out).all())
                us = clock.time_calls(
                    lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                    2 if quick else 5, 5 if quick else 20)
                row.update(us_median=statistics.median(us), us_min=us[0], tflops=flops / statistics.median(us) / 1e6)
            except (RuntimeError, torch.OutOfMemoryError) as e:
                row["error"] = str(e).splitlines()[0][:160]
            rows.append(row)
            del q, k, v
            free_memory()
    return rows


# ---- SDPA decode: one query token per sequence over a KV cache of `ctx` tokens.
# Bytes counted: K and V read once (2·B·kv_heads·ctx·hd·2) plus q read and the output written (2·B·heads·hd·2).
def measure_decode(device, clock, quick, models, batches, contexts, copy_gbps, max_kv_bytes):
    rows = []
    for name, m in models.items():
        for B in batches:
            for ctx in contexts:
                kv_bytes = 2 * B * m["kv_heads"] * ctx * m["head_dim"] * BF16_BYTES
                qo_bytes = 2 * B * m["heads"] * m["head_dim"] * BF16_BYTES
                row = dict(model=name, batch=B, ctx=ctx, kv_bytes=kv_bytes, bytes=kv_bytes + qo_bytes)
                if kv_bytes > max_kv_bytes:
                    row["skipped"] = f"KV {kv_bytes / 1e9:.1f} GB over {max_kv_bytes / 1e9:.0f} GB"
                    rows.append(row)
                    continue
                copies = copies_to_beat_l2(device, kv_bytes + qo_bytes)
                row["copies"] = copies
                sets = []
                try:
                    for _ in range(copies):
                        sets.append((torch.randn(B, m["heads"], 1, m["head_dim"], dtype=DTYPE, device=device),
                                     torch.randn(B, m["kv_heads"], ctx, m["head_dim"], dtype=DTYPE, device=device),
                                     torch.randn(B, m["kv_heads"], ctx, m["head_dim"], dtype=DTYPE, device=device)))

                    def call(i):
                        q, k, v = sets[i % copies]
                        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

                    row["finite"] = bool(torch.isfinite(call(0)).all())
                    us = clock.time_calls(call, 2 if quick else 3, 5 if quick else 20)
                    med = statistics.median(us)
                    gbps = row["bytes"] / med / 1e3
                    row.update(us_median=med, us_min=us[0], gbps=gbps, pct_copy=100 * gbps / copy_gbps)
                except torch.OutOfMemoryError:  # e.g. a backend that expands GQA heads: a limit, not a failure
                    row["skipped"] = "out of memory"
                except RuntimeError as e:
                    row["error"] = str(e).splitlines()[0][:160]
                rows.append(row)
                del sets
                free_memory()
    return rows


# ---- generate(): random-initialised models of the real shapes, greedy, a fixed number of new tokens.
def build_model(m, device):
    common = dict(hidden_size=m["hidden"], intermediate_size=m["ffn"], num_hidden_layers=m["layers"],
                  num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"], vocab_size=m["vocab"],
                  tie_word_embeddings=m["tied"], max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)
    if m["arch"] == "llama":
        cfg = transformers.LlamaConfig(head_dim=m["head_dim"], **common)
    else:
        assert m["hidden"] // m["heads"] == m["head_dim"], "Qwen2 derives head_dim from hidden / heads"
        cfg = transformers.Qwen2Config(**common)
    with torch.device(device):
        try:
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=DTYPE)
        except TypeError:  # a transformers that still spells it torch_dtype
            model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=DTYPE)
    model = model.to(device=device, dtype=DTYPE).eval()
    return model


def weight_bytes(model, tied):
    """Bytes of all weights one decode step reads: every parameter once, less an untied input embedding table
    (of which a step reads only its tokens' rows)."""
    skip = set() if tied else {id(model.get_input_embeddings().weight)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


class StepMarks(transformers.LogitsProcessor):
    """A logits processor that marks the time of every generated token: the gaps are the decode steps."""

    def __init__(self, clock):
        self.clock, self.marks = clock, []

    def __call__(self, input_ids, scores):
        self.marks.append(self.clock.mark())
        return scores


def measure_generate(device, clock, quick, models, batches, new_tokens, prompt_len, copy_gbps, seed):
    rows = []
    for name, m in models.items():
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        model = build_model(m, device)
        build_s = time.perf_counter() - t0
        w_bytes = weight_bytes(model, m["tied"])
        kv_per_token = m["layers"] * m["kv_heads"] * m["head_dim"] * 2 * BF16_BYTES  # K and V, bf16, all layers
        for B in batches:
            row = dict(model=name, batch=B, layers=m["layers"], new_tokens=new_tokens, prompt=prompt_len,
                       weight_bytes=w_bytes, kv_bytes_per_token=kv_per_token, build_s=build_s,
                       attn=getattr(model.config, "_attn_implementation", None))
            # Roofline: each step reads all weights once plus every sequence's KV so far; mean context over the run.
            mean_ctx = prompt_len + (new_tokens - 1) / 2
            step_bytes = w_bytes + B * mean_ctx * kv_per_token
            row["roofline_tok_s"] = B / (step_bytes / (copy_gbps * 1e9))
            ids = torch.randint(3, m["vocab"], (B, prompt_len), device=device)
            mask = torch.ones_like(ids)
            base = dict(attention_mask=mask, do_sample=False, pad_token_id=0)
            attempts = [("static", dict(cache_implementation="static", disable_compile=True)),
                        ("dynamic", dict(disable_compile=True)), ("dynamic", {})]
            errors = []
            for cache, extra in attempts:
                try:
                    # Warm-up: a short run builds the cache and loads the kernels.
                    model.generate(ids, max_new_tokens=4, min_new_tokens=4, **base, **extra)
                    marks = StepMarks(clock)
                    clock.sync()
                    start = clock.mark()
                    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                         logits_processor=transformers.LogitsProcessorList([marks]), **base, **extra)
                    end = clock.mark()
                    clock.sync()
                    steps = [clock.between(a, b) for a, b in zip(marks.marks, marks.marks[1:])]
                    if out.shape[1] != prompt_len + new_tokens or len(steps) < 1:
                        raise RuntimeError(f"generated {out.shape[1] - prompt_len} tokens, wanted {new_tokens}")
                    step_us = statistics.median(steps)
                    total_us = clock.between(start, end)
                    row.update(cache=cache, compiled=False, step_us_median=step_us,
                               decode_tok_s=B / step_us * 1e6, end_to_end_tok_s=B * new_tokens / total_us * 1e6)
                    row["pct_roofline"] = 100 * row["decode_tok_s"] / row["roofline_tok_s"]
                    break
                except Exception as e:  # noqa: BLE001 - any failure here means: try the next cache setting
                    errors.append(f"{cache}{'' if extra.get('disable_compile') else ' (compile default)'}: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
                    free_memory()
            if errors:
                row["errors"] = errors
            if "decode_tok_s" not in row:
                row["error"] = "every cache setting failed"
            rows.append(row)
            del ids, mask
            free_memory()
        del model
        free_memory()
    return rows


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and tokens")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a dry run on tiny shapes, for checking the script without a GPU")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--skip-generate", action="store_true", help="only the copy and SDPA measurements")
    ap.add_argument("--skip-sdpa", action="store_true", help="only the copy and generate() measurements")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_baselines: no CUDA device (use --device cpu for a dry run)")
    clock = Clock(device)
    tiny = device.type == "cpu"
    models = {k: ({**v, **TINY} if tiny else v) for k, v in MODELS.items()}
    info = dict(torch=torch.__version__, transformers=transformers.__version__, device=args.device, quick=args.quick,
                seed=args.seed)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, sms=p.multi_processor_count, mem_bytes=p.total_memory, l2_bytes=l2_bytes(device))
    print(f"== torch_baselines  torch {info['torch']}  transformers {info['transformers']}  "
          f"{info.get('name', 'cpu dry run')}{'  (quick)' if args.quick else ''}", flush=True)
    t_start = time.perf_counter()

    copy = measure_copy(device, clock, args.quick)
    copy_gbps = copy["gbps"]
    print(f"== copy ceiling (torch D2D copy_, {copy['buffer_bytes'] / 2**30:.2f} GiB, read + written): "
          f"{copy_gbps:.0f} GB/s{'' if copy['ok'] else '  FAIL: copy wrong'}", flush=True)

    lengths = [] if args.skip_sdpa else [64, 128] if tiny else [512, 2048, 8192]
    prefill = measure_prefill(device, clock, args.quick, models, lengths)
    print("== SDPA prefill: causal, batch 1, enable_gqa, bf16; FLOPs = 4·L²·heads·hd / 2")
    print(f"{'model':13} {'L':>6} {'heads':>9} {'us':>9} {'TFLOP/s':>8}")
    for r in prefill:
        print(f"{r['model']:13} {r['L']:6d} {r['heads']:4d}/{r['kv_heads']:<4d} {fmt(r.get('us_median'), '9.1f')} "
              f"{fmt(r.get('tflops'), '8.1f')} {r.get('error', '')}")
    sys.stdout.flush()

    # The heads bench/attention_bench.cu measures Flint's decode on (bench/attention_vs_torch.py pairs them up).
    dec_models = {k: models[k] for k in ("Llama-3.2-1B", "Qwen2.5-1.5B", "Qwen2.5-7B")}
    batches = [] if args.skip_sdpa else [1, 4] if tiny else [1, 16, 64, 256]
    contexts = [64, 256] if tiny else [512, 4096, 32768]
    max_kv = 40e9
    if device.type == "cuda":
        max_kv = min(max_kv, torch.cuda.mem_get_info(device)[0] * 0.45)
    decode = measure_decode(device, clock, args.quick, dec_models, batches, contexts, copy_gbps, max_kv)
    print("== SDPA decode: 1 query token, enable_gqa, bf16; bytes = K + V + q + out, once each")
    print(f"{'model':13} {'batch':>5} {'ctx':>6} {'KV MB':>9} {'us':>9} {'GB/s':>7} {'%copy':>5}")
    for r in decode:
        note = r.get("skipped") or r.get("error") or ""
        print(f"{r['model']:13} {r['batch']:5d} {r['ctx']:6d} {r['kv_bytes'] / 1e6:9.1f} "
              f"{fmt(r.get('us_median'), '9.1f')} {fmt(r.get('gbps'), '7.0f')} {fmt(r.get('pct_copy'), '5.0f')} {note}")
    sys.stdout.flush()

    gen = []
    if not args.skip_generate:
        new_tokens = 8 if tiny else (32 if args.quick else 64)
        # engine_bench's batches (bench/engine_vs_hf.py pairs them up); --quick keeps the three small ones.
        gen_batches = [1, 2] if tiny else ([1, 8, 32] if args.quick else [1, 8, 32, 128, 256])
        gen = measure_generate(device, clock, args.quick, models, gen_batches, new_tokens, 32 if not tiny else 8,
                               copy_gbps, args.seed)
    elapsed = time.perf_counter() - t_start

    ok = copy["ok"] and all("error" not in r and r.get("finite", True) for r in prefill)
    ok = ok and all("error" not in r and r.get("finite", True) for r in decode)
    ok = ok and all("error" not in r for r in gen)
    print("\n## summary torch_baselines")
    print(f"{info.get('name', 'cpu dry run')}: torch copy {copy_gbps:.0f} GB/s; best SDPA prefill "
          f"{max((r.get('tflops', 0) for r in prefill), default=0):.0f} TFLOP/s; best SDPA decode "
          f"{max((r.get('pct_copy', 0) for r in decode), default=0):.0f}% of copy; {elapsed:.0f} s")
    if gen:
        print(f"transformers generate(), greedy, prompt {gen[0]['prompt']}, {gen[0]['new_tokens']} new tokens, eager "
              "(no torch.compile); roofline = (weights + KV read) / copy ceiling")
        print(f"{'model':13} {'batch':>5} {'cache':>7} {'step_ms':>8} {'tok/s':>8} {'roof':>8} {'%roof':>6} "
              f"{'e2e tok/s':>9}")
        for r in gen:
            print(f"{r['model']:13} {r['batch']:5d} {r.get('cache', '-'):>7} {fmt(r['step_us_median'] / 1e3 if 'step_us_median' in r else None, '8.2f')} "
                  f"{fmt(r.get('decode_tok_s'), '8.0f')} {r['roofline_tok_s']:8.0f} {fmt(r.get('pct_roofline'), '6.1f')} "
                  f"{fmt(r.get('end_to_end_tok_s'), '9.0f')} {r.get('error', '')}")
            for e in r.get("errors", []):
                print(f"    fell back from {e}")
    print(f"torch_baselines: {'PASS' if ok else 'FAIL'}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, copy=copy, prefill=prefill, decode=decode, generate=gen, elapsed_s=elapsed,
                           passed=ok), f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
