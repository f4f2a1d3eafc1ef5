// GgufWriter (tests only): builds a GGUF file in memory with any metadata and
// tensors, well-formed or deliberately broken, and writes it to a TempFile.
//
//   flint::test::GgufWriter w;                          // version 3, alignment 32
//   w.add_string("general.architecture", "llama")
//    .add_u32("llama.block_count", 2)
//    .add_string_array("tokenizer.ggml.tokens", {"a", "b"})
//    .add_tensor_f32("output_norm.weight", {4}, {1, 2, 3, 4});  // shape row-major
//   flint::test::TempFile f = w.write_temp();
//   flint::GgufFile gguf(f.path());
//
// Layout: tensor data is placed in the order added, each at the next multiple of
// the alignment (the value of a "general.alignment" uint32 key when it is a power
// of two, else 32). For broken files: add_raw (any type id and bytes),
// add_tensor_raw (any ggml type id, GGUF-order dims, offset), override the
// header counts, or edit the bytes build() returns.
#pragma once
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "model/gguf.h"

namespace flint::test {

// A file under the temp directory holding `bytes`, removed by the destructor.
class TempFile {
 public:
  explicit TempFile(const std::vector<uint8_t>& bytes, const std::string& suffix = ".gguf") {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("flint_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + suffix))
                .string();
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + path_);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) : version_(version) {}

  // ---- metadata, written in the order added (duplicates are written as given)
  GgufWriter& add_u8(const std::string& k, uint8_t v) { return add(k, GgufType::UINT8, v); }
  GgufWriter& add_i8(const std::string& k, int8_t v) { return add(k, GgufType::INT8, v); }
  GgufWriter& add_u16(const std::string& k, uint16_t v) { return add(k, GgufType::UINT16, v); }
  GgufWriter& add_i16(const std::string& k, int16_t v) { return add(k, GgufType::INT16, v); }
  GgufWriter& add_u32(const std::string& k, uint32_t v) { return add(k, GgufType::UINT32, v); }
  GgufWriter& add_i32(const std::string& k, int32_t v) { return add(k, GgufType::INT32, v); }
  GgufWriter& add_u64(const std::string& k, uint64_t v) { return add(k, GgufType::UINT64, v); }
  GgufWriter& add_i64(const std::string& k, int64_t v) { return add(k, GgufType::INT64, v); }
  GgufWriter& add_f32(const std::string& k, float v) { return add(k, GgufType::FLOAT32, v); }
  GgufWriter& add_f64(const std::string& k, double v) { return add(k, GgufType::FLOAT64, v); }
  GgufWriter& add_bool(const std::string& k, bool v) { return add(k, GgufType::BOOL, v); }
  GgufWriter& add_string(const std::string& k, const std::string& v) { return add(k, GgufType::STRING, v); }

  // A scalar of type `type`; v is converted to it (T: arithmetic or std::string).
  template <class T>
  GgufWriter& add(const std::string& key, GgufType type, const T& v) {
    std::vector<uint8_t> bytes;
    encode(bytes, type, v);
    return add_raw(key, uint32_t(type), bytes);
  }

  // An array whose elements have type `elem`; each value is converted to it.
  template <class T>
  GgufWriter& add_array(const std::string& key, GgufType elem, const std::vector<T>& values) {
    std::vector<uint8_t> bytes;
    put<uint32_t>(bytes, uint32_t(elem));
    put<uint64_t>(bytes, values.size());
    for (const auto& v : values) encode(bytes, elem, T(v));
    return add_raw(key, uint32_t(GgufType::ARRAY), bytes);
  }
  GgufWriter& add_string_array(const std::string& k, const std::vector<std::string>& v) {
    return add_array(k, GgufType::STRING, v);
  }
  GgufWriter& add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    return add_array(k, GgufType::INT32, v);
  }
  GgufWriter& add_f32_array(const std::string& k, const std::vector<float>& v) {
    return add_array(k, GgufType::FLOAT32, v);
  }

  // A key with any value type id and value bytes, written verbatim.
  GgufWriter& add_raw(const std::string& key, uint32_t type_id, const std::vector<uint8_t>& value_bytes) {
    kvs_.push_back({key, type_id, value_bytes});
    return *this;
  }

  // ---- tensors
  // shape is row-major, outermost first (as flint::Tensor::shape); data is the
  // tensor's bytes in `t`'s layout (its size is not checked: tests may lie).
  GgufWriter& add_tensor(const std::string& name, DType t, const std::vector<int64_t>& shape,
                         const std::vector<uint8_t>& data) {
    std::vector<uint64_t> dims(shape.rbegin(), shape.rend());
    return add_tensor_raw(name, ggml_type_of(t), dims, data);
  }
  GgufWriter& add_tensor_f32(const std::string& name, const std::vector<int64_t>& shape,
                             const std::vector<float>& values) {
    std::vector<uint8_t> data(values.size() * sizeof(float));
    if (!values.empty()) std::memcpy(data.data(), values.data(), data.size());
    return add_tensor(name, DType::F32, shape, data);
  }
  // Any ggml type id; dims in GGUF order (ne0 innermost first). The offset field
  // is `offset` when given (the data is still placed where it would go), else
  // where the data lands.
  GgufWriter& add_tensor_raw(const std::string& name, uint32_t ggml_type, const std::vector<uint64_t>& dims,
                             const std::vector<uint8_t>& data, std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({name, ggml_type, dims, data, offset});
    return *this;
  }

  // ---- header overrides, for absurd-count tests
  GgufWriter& override_tensor_count(uint64_t n) { tensor_count_ = n; return *this; }
  GgufWriter& override_kv_count(uint64_t n) { kv_count_ = n; return *this; }

  // The whole file.
  std::vector<uint8_t> build() const {
    const uint64_t align = alignment();
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
    put<uint32_t>(out, version_);
    put<uint64_t>(out, tensor_count_.value_or(tensors_.size()));
    put<uint64_t>(out, kv_count_.value_or(kvs_.size()));
    for (const Kv& kv : kvs_) {
      put_string(out, kv.key);
      put<uint32_t>(out, kv.type);
      out.insert(out.end(), kv.value.begin(), kv.value.end());
    }
    std::vector<uint64_t> offsets;
    uint64_t data_size = 0;
    for (const TensorSpec& t : tensors_) {
      data_size = (data_size + align - 1) / align * align;
      offsets.push_back(data_size);
      data_size += t.data.size();
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorSpec& t = tensors_[i];
      put_string(out, t.name);
      put<uint32_t>(out, uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) put<uint64_t>(out, d);
      put<uint32_t>(out, t.ggml_type);
      put<uint64_t>(out, t.offset.value_or(offsets[i]));
    }
    if (!tensors_.empty()) {
      out.resize((out.size() + align - 1) / align * align, 0);
      const size_t data_start = out.size();
      out.resize(data_start + data_size, 0);
      for (size_t i = 0; i < tensors_.size(); ++i)
        if (!tensors_[i].data.empty())
          std::memcpy(out.data() + data_start + offsets[i], tensors_[i].data.data(), tensors_[i].data.size());
    }
    return out;
  }

  TempFile write_temp() const { return TempFile(build()); }

  // The layout alignment: a valid "general.alignment" uint32 key, else 32.
  uint64_t alignment() const {
    for (const Kv& kv : kvs_) {
      if (kv.key != "general.alignment" || kv.type != uint32_t(GgufType::UINT32) || kv.value.size() != 4) continue;
      uint32_t a;
      std::memcpy(&a, kv.value.data(), 4);
      if (a != 0 && (a & (a - 1)) == 0) return a;
    }
    return 32;
  }

  // Little-endian encoders, public for tests that hand-build value bytes.
  template <class T>
  static void put(std::vector<uint8_t>& out, T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
  }
  static void put_string(std::vector<uint8_t>& out, const std::string& s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
  }

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> value;
  };
  struct TensorSpec {
    std::string name;
    uint32_t ggml_type;
    std::vector<uint64_t> dims;
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset;
  };

  // One value of type `type` (not ARRAY), converted from v.
  template <class T>
  static void encode(std::vector<uint8_t>& out, GgufType type, const T& v) {
    if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, const char*>) {
      if (type != GgufType::STRING) throw std::invalid_argument("GgufWriter: string value for a non-string type");
      put_string(out, std::string(v));
    } else {
      switch (type) {
        case GgufType::UINT8: put<uint8_t>(out, uint8_t(v)); break;
        case GgufType::INT8: put<int8_t>(out, int8_t(v)); break;
        case GgufType::UINT16: put<uint16_t>(out, uint16_t(v)); break;
        case GgufType::INT16: put<int16_t>(out, int16_t(v)); break;
        case GgufType::UINT32: put<uint32_t>(out, uint32_t(v)); break;
        case GgufType::INT32: put<int32_t>(out, int32_t(v)); break;
        case GgufType::UINT64: put<uint64_t>(out, uint64_t(v)); break;
        case GgufType::INT64: put<int64_t>(out, int64_t(v)); break;
        case GgufType::FLOAT32: put<float>(out, float(v)); break;
        case GgufType::FLOAT64: put<double>(out, double(v)); break;
        case GgufType::BOOL: put<uint8_t>(out, v ? 1 : 0); break;
        case GgufType::STRING:
        case GgufType::ARRAY: throw std::invalid_argument("GgufWriter: numeric value for a string/array type");
      }
    }
  }

  uint32_t version_;
  std::optional<uint64_t> tensor_count_, kv_count_;
  std::vector<Kv> kvs_;
  std::vector<TensorSpec> tensors_;
};

}  // namespace flint::test
