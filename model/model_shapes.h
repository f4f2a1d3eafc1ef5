// The real shapes of the models Flint is built for, by name: one table that random-weight
// models (model/random_weights.h), benchmarks and the CUDA backend's sizing all read.
// The values are the models' own config.json (Hugging Face), as config_from_hf_json reads them.
#pragma once
#include <span>
#include <string>
#include <string_view>

#include "model/config.h"

namespace flint {

struct ModelShape {
  std::string_view name;     // "llama-3.2-1b": the --random-weights name
  std::string_view hf_repo;  // where the config comes from, for the docs and the HF scripts
  ModelConfig config;        // validated; rope_style Halves (HF q/k row order)
};

// Every known shape, in table order.
std::span<const ModelShape> model_shapes();
// "smollm2-135m, llama-3.2-1b, ...": for usage texts and errors.
std::string model_shape_names();
// The shape called `name`; throws flint::Error listing the known names when there is none.
const ModelShape& find_model_shape(std::string_view name);

}  // namespace flint
