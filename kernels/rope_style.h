// RopeStyle: which pairs of a head's values RoPE rotates together. Shared by the CPU ops, the CUDA RoPE + KV
// write kernel and ModelConfig.
#pragma once
#include <cstdint>

namespace flint {

// Halves: (x[i], x[i + hd/2]) by angle pos · inv_freq[i] (HF checkpoints, GPT-NeoX).
// Interleaved: (x[2i], x[2i + 1]) by the same angle (GGUF llama, whose q/k rows are permuted).
enum class RopeStyle : uint8_t { Interleaved, Halves };

}  // namespace flint
