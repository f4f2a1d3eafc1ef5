// A HF config.json's text -> config_from_hf_json (sizes, rope scaling, the
// architecture), as the safetensors model loader reads it from a model directory.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "fuzz/fuzz_common.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flint::ModelConfig config;
  try {
    config = flint::config_from_hf_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const flint::Error&) {
    return 0;
  }
  // Every config handed out is one validate() accepts (the backends size buffers from it).
  try {
    config.validate();
  } catch (const flint::Error& e) {
    flint::fuzz::invariant_failed("config_from_hf_json returned a config validate() refuses", e.what());
  }
  (void)config.describe();
  return 0;
}
