#!/usr/bin/env python3
"""hf-random-model: a random-initialised transformers model of a real shape, saved as safetensors.

  /work/pyenv/bin/python scripts/hf-random-model.py SHAPE --out DIR [--layers N] [--seed S] [--dtype bf16|f32]
  scripts/hf-random-model.py --list

SHAPE is one of the names of model/model_shapes.cpp (the same real configs, as the HF config.json of the
repo named there): LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM with that config, optionally
with fewer layers. Weights are drawn with torch from the seed (each parameter from its own generator seeded
by the seed and the parameter's name, so fewer layers give the same first layers) with the distribution
Flint's --random-weights uses (transformers' own initialisation is skipped), so logits are far from flat: linear weights N(0, 1/in_features), embedding
and lm_head N(0, (2/sqrt(hidden))^2), norm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1). (The values are
not Flint's --random-weights bits: that generator is a C++ hash, this is torch.) The directory gets
config.json and model.safetensors in the chosen dtype; it has no tokenizer, so feed Flint token ids
(flint-run -m DIR --prompt-ids ...). scripts/compare-hf-logits.py uses this to check Flint against
transformers.
"""
import argparse
import os
import shutil
import sys
import zlib

# The shape table of model/model_shapes.cpp as HF config arguments (compare-hf-logits.py checks that the two
# describe the same model). "arch" picks the transformers class.
LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
SHAPES = {
    "smollm2-135m": dict(arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    "llama-3.2-1b": dict(arch="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0, factor=32.0)),
    "llama-3.1-8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0, factor=8.0)),
    "qwen2.5-1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False),
    "qwen2.5-7b": dict(arch="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False),
    "qwen3-0.6b": dict(arch="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False),
}
DTYPES = {"bf16": "bfloat16", "f32": "float32"}


def model_classes(arch):
    from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                              Qwen3ForCausalLM)
    return {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
            "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[arch]


def make_config(shape, layers=0, overrides=None):
    """The transformers config of `shape`, with `layers` layers (0: the shape's own) and `overrides` (config
    arguments, e.g. a smaller vocab_size) applied."""
    if shape not in SHAPES:
        raise SystemExit(f"hf-random-model: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    kwargs = dict(SHAPES[shape])
    full = kwargs["num_hidden_layers"]
    if layers:
        if not 1 <= layers <= full:
            raise SystemExit(f"hf-random-model: {shape}: --layers {layers} must be in [1, {full}]")
        kwargs["num_hidden_layers"] = layers
    kwargs.update(overrides or {})
    config_cls, model_cls = model_classes(kwargs.pop("arch"))
    return config_cls(**kwargs), model_cls


def init_weights(model, seed):
    """Overwrites every parameter with the distribution in the module docstring, reproducibly."""
    import torch
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied embeddings appear once
            gen = torch.Generator().manual_seed((seed * 1000003 + zlib.crc32(name.encode())) % (1 << 63))
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "embed_tokens" in name or "lm_head" in name:
                p.copy_(noise * (2.0 / hidden ** 0.5))
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 2:
                p.copy_(noise / p.shape[1] ** 0.5)
            else:
                raise SystemExit(f"hf-random-model: no rule for parameter {name} {tuple(p.shape)}")


def build(shape, out_dir, layers=0, seed=0, dtype="bf16", overrides=None):
    """Writes the model to out_dir (replacing it); returns it, its parameters in the stored dtype."""
    import torch
    import transformers
    from transformers.initialization import no_init_weights
    transformers.utils.logging.disable_progress_bar()
    config, model_cls = make_config(shape, layers, overrides)
    torch_dtype = getattr(torch, DTYPES[dtype])
    with no_init_weights():  # transformers' own init is skipped: init_weights below sets every parameter
        model = model_cls(config).to(torch.float32).eval()
    model.tie_weights()
    if config.tie_word_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        raise SystemExit("hf-random-model: lm_head is not tied to embed_tokens")
    init_weights(model, seed)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    # Parameters only: model.to() would also round computed buffers (the rotary inv_freq), which are not
    # stored, and a caller that runs this model would then not compute what a fresh load computes.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(torch_dtype)
    model.config.dtype = torch_dtype
    # One file whatever the size (Flint reads shards too, but one file is simpler to carry around).
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="100GB")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", nargs="?", help="one of: " + ", ".join(SHAPES))
    ap.add_argument("--out", help="directory to write (replaced)")
    ap.add_argument("--layers", type=int, default=0, help="layers (default: the shape's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="stored dtype (default bf16)")
    ap.add_argument("--list", action="store_true", help="print the shape names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(SHAPES))
        return 0
    if not args.shape or not args.out:
        ap.error("SHAPE and --out are required")
    build(args.shape, args.out, args.layers, args.seed, args.dtype)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"hf-random-model: wrote {args.out} ({args.shape}, {args.layers or 'all'} layers, seed {args.seed}, "
          f"{args.dtype}, {size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
