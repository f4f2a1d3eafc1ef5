// GgufFile: a memory-mapped GGUF (versions 2 and 3): metadata, tensor infos and
// tensor data, every count, length and offset checked against the file size.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/mapped_file.h"
#include "model/weights.h"

namespace flint {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// One metadata value. Scalars of integer types are held widened (int64 or
// uint64 as their sign says), floats as double; arrays keep their element type
// in array_type and hold vector<int64_t> / vector<uint64_t> / vector<double> /
// vector<bool> / vector<string> the same way. Strings are bytes as stored.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  GgufType array_type = GgufType::UINT8;  // element type when type == ARRAY
  std::variant<int64_t, uint64_t, double, bool, std::string,
               std::vector<int64_t>, std::vector<uint64_t>, std::vector<double>,
               std::vector<bool>, std::vector<std::string>>
      value;
};

// Names of metadata value types ("uint32", "string", ...) for messages.
std::string_view gguf_type_name(GgufType t);

// ggml's tensor type ids as GGUF stores them. Flint reads F32=0, F16=1, Q4_0=2,
// Q4_1=3, Q8_0=8, Q4_K=12, Q6_K=14, BF16=30.
std::optional<DType> dtype_from_ggml_type(uint32_t id);  // nullopt for any other id
uint32_t ggml_type_of(DType t);
std::string_view ggml_type_name(uint32_t id);  // "Q5_K"; "" for an id ggml never had

class GgufFile : public WeightSource {
 public:
  // Opens and validates `path`; throws flint::Error naming the key or tensor
  // and what is wrong when the file is corrupt or truncated, e.g.
  // "<path>: tensor blk.3.attn_q.weight: data [123, 456) past end of file (size 400)".
  // Every tensor's data lies inside the file and is a whole number of blocks
  // per row (ne0 % block_size == 0); its offset is a multiple of alignment().
  explicit GgufFile(const std::string& path);
  // Parses the GGUF bytes data[0, size) the same way, without a file: the bytes
  // must outlive this object (tensor data points into them); `label` stands for the
  // path in messages and path(). For tests and fuzz/ (ASan sees reads past `size`
  // here, which a page-padded mapping would hide).
  GgufFile(const uint8_t* data, size_t size, std::string label);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }

  const GgufValue* find_value(std::string_view key) const;
  bool has(std::string_view key) const { return find_value(key) != nullptr; }
  // Typed lookups: nullopt when absent; flint::Error when present with another type.
  std::optional<int64_t> get_int(std::string_view key) const;     // any integer type
  std::optional<double> get_float(std::string_view key) const;    // float or integer
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Arrays: empty when absent; flint::Error when present with another type.
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;
  // As above but throw flint::Error("key ...: missing from <path>") when absent.
  int64_t require_int(std::string_view key) const;
  std::string require_string(std::string_view key) const;

  const Tensor* find(std::string_view name) const override;
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  const std::string& path() const { return path_; }

 private:
  void parse();

  std::optional<MappedFile> file_;  // absent when parsing caller-owned bytes
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace flint
