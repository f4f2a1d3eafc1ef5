// WeightSource: a read-only view of a model file's named tensors.
// GGUF and safetensors both produce one; the backends read weights only through it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/dtype.h"

namespace flint {

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  // Row-major, outermost first (PyTorch order): a linear weight is (out, in).
  // GGUF lists dims innermost first; its reader reverses them into this order.
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  uint64_t nbytes = 0;

  int64_t numel() const;
  int64_t rows() const;  // product of all dims but the last (1 for a vector)
  int64_t cols() const;  // the last dim
  uint64_t row_bytes() const { return nbytes / static_cast<uint64_t>(rows()); }
};

// "[4096, 576]": a shape for error messages.
std::string shape_string(const std::vector<int64_t>& shape);

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor named `name`, or nullptr.
  virtual const Tensor* find(std::string_view name) const = 0;
  // Every tensor, in file order.
  virtual const std::vector<Tensor>& tensors() const = 0;
  // The tensor named `name`; throws flint::Error naming it when absent.
  const Tensor& get(std::string_view name) const;
};

}  // namespace flint
