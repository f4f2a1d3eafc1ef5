// Random-weight models of real shapes (model/model_shapes.h), built in memory from a seed with no weight
// file: for benchmarks and for checking a backend against transformers on a model of the real size.
//
// A spec names a shape and optionally overrides its layer count and the seed:
//   "llama-3.2-1b"   "qwen3-0.6b:layers=2"   "qwen2.5-7b:layers=4,seed=7"
// Every tensor is bf16 (what the CUDA backend runs) and HF-named. Each value depends only on the seed, the
// tensor's name and its index, so a spec gives the same bits on any machine and thread count, and a
// model with fewer layers is exactly the first layers of the full one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/config.h"
#include "model/model_loader.h"
#include "model/weights.h"

namespace flint {

class ThreadPool;

inline constexpr uint64_t kDefaultRandomWeightSeed = 0x5EED;

struct RandomModelSpec {
  std::string shape;       // a model_shapes() name
  int32_t num_layers = 0;  // 0: the shape's own
  uint64_t seed = kDefaultRandomWeightSeed;

  // The shape's config with num_layers applied; throws flint::Error for an unknown shape.
  ModelConfig config() const;
  // "llama-3.2-1b:layers=2,seed=7": parses back to this spec.
  std::string to_string() const;
};

// Parses "NAME[:layers=N][,seed=S]"; throws flint::Error naming the bad part (an unknown name lists the known ones).
RandomModelSpec parse_random_model_spec(std::string_view text);

// How the values are drawn, in units of one standard deviation of a bell-shaped (Irwin-Hall, 4 terms)
// distribution: linear weights std 1/sqrt(in_features), so every projection keeps its input's scale; the
// embedding (and LM head) std 2/sqrt(hidden), so logits of a unit-RMS final state spread with std ~2 and
// are far from flat; norm weights 1 + 0.1·n; biases 0.1·n.
class RandomWeightSource : public WeightSource {
 public:
  // Fills every tensor `config` needs (HF names) on `pool` (or this thread when null).
  RandomWeightSource(const ModelConfig& config, uint64_t seed, ThreadPool* pool);
  const Tensor* find(std::string_view name) const override;
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  uint64_t total_bytes() const { return total_bytes_; }  // every tensor, each padded to 256 bytes

 private:
  struct Fill {
    float mean, stddev;
  };
  // Plans one tensor at offset total_bytes_ of the arena; the constructor fills them all once it is allocated.
  void add(std::string name, std::vector<int64_t> shape, Fill fill);

  struct Unmap {
    size_t size;
    void operator()(uint8_t* p) const;
  };
  std::vector<Tensor> tensors_;
  std::vector<Fill> fills_;       // (tensors_.size())
  std::vector<uint64_t> offsets_; // (tensors_.size()) byte offset of each tensor in arena_
  // One anonymous mapping for every tensor (256-byte aligned each), unmapped as a whole.
  std::unique_ptr<uint8_t, Unmap> arena_{nullptr, Unmap{0}};
  std::unordered_map<std::string, size_t> index_;
  uint64_t total_bytes_ = 0;
};

// The value RandomWeightSource puts at `index` of the tensor `name`, before scaling: mean 0, std 1, in
// [-2√3, 2√3]. Exposed for tests.
float random_weight_unit(uint64_t seed, std::string_view name, uint64_t index);

// A LoadedModel (no tokenizer, no chat template) from the spec; its path is "random:" + spec.to_string().
// Generating uses `num_threads` threads (0: all).
LoadedModel load_random_model(const RandomModelSpec& spec, int num_threads = 0);

}  // namespace flint
