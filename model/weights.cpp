#include "model/weights.h"

#include <sstream>

#include "common/error.h"

namespace flint {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::rows() const {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
  return n;
}

int64_t Tensor::cols() const { return shape.empty() ? 1 : shape.back(); }

const Tensor& WeightSource::get(std::string_view name) const {
  const Tensor* t = find(name);
  if (t == nullptr) fail("tensor ", name, ": missing from the model file");
  return *t;
}

}  // namespace flint
