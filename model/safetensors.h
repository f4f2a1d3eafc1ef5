// SafetensorsSource: the tensors of one .safetensors file or of a sharded model
// (model.safetensors.index.json naming its shards), every shard memory-mapped and
// every header, shape and offset checked against the file size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mapped_file.h"
#include "model/weights.h"

namespace flint {

// Parses the header of the safetensors bytes data[0, size): 8-byte little-endian
// header length, JSON header, then the data section. Returns the tensors in data
// order, their `data` pointing into `data`. Dtypes F32, F16 and BF16 only.
// Throws flint::Error starting with `label` (the file's name for messages) and
// naming the tensor when the header is malformed, a dtype is unsupported, or an
// offset range is out of bounds, overlaps another, or disagrees with shape x dtype.
std::vector<Tensor> parse_safetensors(const uint8_t* data, size_t size, std::string_view label);

class SafetensorsSource : public WeightSource {
 public:
  // `path` is a .safetensors file, a *.safetensors.index.json, or a directory that
  // holds model.safetensors.index.json (preferred) or model.safetensors.
  // Throws flint::Error naming the file and tensor when anything is wrong,
  // including a shard that is missing or a tensor the index places in a shard
  // that lacks it.
  explicit SafetensorsSource(const std::string& path);

  const Tensor* find(std::string_view name) const override;
  // Shard by shard (shard file names in sorted order), each in data order.
  // Tensor data is not aligned beyond what the file gives: read it with memcpy.
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  size_t num_shards() const { return shards_.size(); }

 private:
  void open_single(const std::string& path);
  void open_index(const std::string& index_path);
  // Maps `path` and appends its tensors; returns the index of its first tensor.
  size_t add_shard(const std::string& path);

  std::vector<std::unique_ptr<MappedFile>> shards_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace flint
