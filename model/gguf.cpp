// GgufFile: parses and validates a mapped GGUF v2/v3 file (header, metadata,
// tensor infos, tensor data ranges); every read is bounds-checked.
#include "model/gguf.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <utility>

#include "common/checked.h"
#include "common/error.h"

namespace flint {

static_assert(std::endian::native == std::endian::little, "GGUF reader assumes a little-endian host");

namespace {

// File layout (all little-endian):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count
//   kv_count x { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 dims[n_dims] (ne0 innermost), u32 ggml_type, u64 offset }
//   padding to `alignment`, then the data section; a tensor's offset is relative to it.
// A string is u64 length + bytes; an array is u32 element type, u64 count, elements.
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim, type, offset
constexpr uint32_t kMaxDims = 4;

// ggml_type ids; an empty name marks an id ggml never assigned (4, 5, 31-33, 36-38 were removed).
constexpr std::string_view kGgmlTypeNames[] = {
    "F32",     "F16",   "Q4_0",  "Q4_1",   "",      "",       "Q5_0",    "Q5_1",  "Q8_0",    "Q8_1",
    "Q2_K",    "Q3_K",  "Q4_K",  "Q5_K",   "Q6_K",  "Q8_K",   "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
    "IQ4_NL",  "IQ3_S", "IQ2_S", "IQ4_XS", "I8",    "I16",    "I32",     "I64",   "F64",     "IQ1_M",
    "BF16",    "",      "",      "",       "TQ1_0", "TQ2_0",  "",        "",      "",        "MXFP4",
};

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
      return true;
    default:
      return false;
  }
}
bool is_float(GgufType t) { return t == GgufType::FLOAT32 || t == GgufType::FLOAT64; }
bool is_known(uint32_t t) { return t <= uint32_t(GgufType::FLOAT64); }

// Bytes an element of a fixed-size type takes; strings take at least 8 (their length).
uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 4 + 8;
  }
  return 1;
}

// Where a read happens, for messages: "key tokenizer.ggml.tokens: element 7".
struct Where {
  Where(const char* w) : what(w) {}                 // NOLINT: implicit on purpose
  Where(const std::string& w) : what(w) {}          // NOLINT
  Where(std::string_view w, int64_t e) : what(w), element(e) {}
  std::string_view what;
  int64_t element = -1;  // array element index, or -1
};
std::ostream& operator<<(std::ostream& os, const Where& w) {
  os << w.what;
  if (w.element >= 0) os << ": element " << w.element;
  return os;
}

// A cursor over the mapped bytes; every read checks the bytes left and throws
// flint::Error prefixed with the file's path and the caller's context.
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, uint64_t size) : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <class... Parts>
  [[noreturn]] void bad(const Parts&... parts) const {
    fail(path_, ": ", parts...);
  }

  template <class T>
  T read(Where where) {
    if (remaining() < sizeof(T))
      bad(where, ": truncated at offset ", pos_, " (need ", sizeof(T), " bytes, file size ", size_, ")");
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(Where where) {
    const uint64_t len = read<uint64_t>(where);
    if (len > remaining())
      bad(where, ": string length ", len, " at offset ", pos_, " runs past end of file (size ", size_, ")");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

GgufValue read_scalar(Reader& r, GgufType t, Where what) {
  GgufValue v;
  v.type = t;
  switch (t) {
    case GgufType::UINT8: v.value = uint64_t(r.read<uint8_t>(what)); break;
    case GgufType::INT8: v.value = int64_t(r.read<int8_t>(what)); break;
    case GgufType::UINT16: v.value = uint64_t(r.read<uint16_t>(what)); break;
    case GgufType::INT16: v.value = int64_t(r.read<int16_t>(what)); break;
    case GgufType::UINT32: v.value = uint64_t(r.read<uint32_t>(what)); break;
    case GgufType::INT32: v.value = int64_t(r.read<int32_t>(what)); break;
    case GgufType::UINT64: v.value = r.read<uint64_t>(what); break;
    case GgufType::INT64: v.value = r.read<int64_t>(what); break;
    case GgufType::FLOAT32: v.value = double(r.read<float>(what)); break;
    case GgufType::FLOAT64: v.value = r.read<double>(what); break;
    case GgufType::BOOL: {
      const uint8_t b = r.read<uint8_t>(what);
      if (b > 1) r.bad(what, ": invalid bool value ", int(b));
      v.value = b == 1;
      break;
    }
    case GgufType::STRING: v.value = r.read_string(what); break;
    case GgufType::ARRAY: r.bad(what, ": nested arrays are not supported");
  }
  return v;
}

template <class T>
std::vector<T> read_elements(Reader& r, GgufType elem, uint64_t count, const std::string& key) {
  const std::string what = "key " + key;
  std::vector<T> out;
  out.reserve(size_t(count));
  for (uint64_t i = 0; i < count; ++i) {
    GgufValue e = read_scalar(r, elem, Where{what, int64_t(i)});
    out.push_back(std::get<T>(std::move(e.value)));
  }
  return out;
}

GgufValue read_value(Reader& r, uint32_t type_id, const std::string& key) {
  const std::string what = "key " + key;
  if (!is_known(type_id)) r.bad(what, ": unknown value type ", type_id);
  const auto type = GgufType(type_id);
  if (type != GgufType::ARRAY) return read_scalar(r, type, what);

  const uint32_t elem_id = r.read<uint32_t>(what + ": array element type");
  if (!is_known(elem_id)) r.bad(what, ": unknown array element type ", elem_id);
  const auto elem = GgufType(elem_id);
  if (elem == GgufType::ARRAY) r.bad(what, ": nested arrays are not supported");
  const uint64_t count = r.read<uint64_t>(what + ": array length");
  if (count > r.remaining() / min_value_bytes(elem))
    r.bad(what, ": array of ", count, " ", gguf_type_name(elem), " elements cannot fit in the ",
          r.remaining(), " bytes left at offset ", r.pos());
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.array_type = elem;
  switch (elem) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      v.value = read_elements<uint64_t>(r, elem, count, key);
      break;
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      v.value = read_elements<int64_t>(r, elem, count, key);
      break;
    case GgufType::FLOAT32: case GgufType::FLOAT64: v.value = read_elements<double>(r, elem, count, key); break;
    case GgufType::BOOL: v.value = read_elements<bool>(r, elem, count, key); break;
    case GgufType::STRING: v.value = read_elements<std::string>(r, elem, count, key); break;
    case GgufType::ARRAY: break;  // rejected above
  }
  return v;
}

std::string describe(const GgufValue& v) {
  if (v.type != GgufType::ARRAY) return std::string(gguf_type_name(v.type));
  return "array of " + std::string(gguf_type_name(v.array_type));
}

}  // namespace

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "uint8";
    case GgufType::INT8: return "int8";
    case GgufType::UINT16: return "uint16";
    case GgufType::INT16: return "int16";
    case GgufType::UINT32: return "uint32";
    case GgufType::INT32: return "int32";
    case GgufType::FLOAT32: return "float32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "uint64";
    case GgufType::INT64: return "int64";
    case GgufType::FLOAT64: return "float64";
  }
  return "unknown";
}

std::optional<DType> dtype_from_ggml_type(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 8: return DType::Q8_0;
    case 12: return DType::Q4_K;
    case 14: return DType::Q6_K;
    case 30: return DType::BF16;
    default: return std::nullopt;
  }
}

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 8;
    case DType::Q4_K: return 12;
    case DType::Q6_K: return 14;
    case DType::BF16: return 30;
  }
  return 0;
}

std::string_view ggml_type_name(uint32_t id) {
  constexpr size_t n = sizeof(kGgmlTypeNames) / sizeof(kGgmlTypeNames[0]);
  return id < n ? kGgmlTypeNames[id] : std::string_view();
}

GgufFile::GgufFile(const std::string& path) : file_(std::in_place, path), path_(path) {
  data_ = file_->data();
  size_ = file_->size();
  parse();
}

GgufFile::GgufFile(const uint8_t* data, size_t size, std::string label)
    : path_(std::move(label)), data_(data), size_(size) {
  parse();
}

void GgufFile::parse() {
  Reader r(path_, data_, size_);
  const uint64_t file_size = size_;

  if (file_size < 4) r.bad("not a GGUF file: only ", file_size, " bytes");
  const uint32_t magic = r.read<uint32_t>("magic");
  if (magic != kMagic) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "0x%08x", magic);
    r.bad("not a GGUF file: bad magic ", hex, " (expected \"GGUF\")");
  }
  version_ = r.read<uint32_t>("version");
  if (version_ == 1) r.bad("GGUF version 1 is not supported (re-convert the model with a current llama.cpp)");
  if (version_ == 0x02000000u || version_ == 0x03000000u) r.bad("big-endian GGUF is not supported");
  if (version_ != 2 && version_ != 3) r.bad("unsupported GGUF version ", version_, " (supported: 2, 3)");

  const uint64_t tensor_count = r.read<uint64_t>("tensor count");
  const uint64_t kv_count = r.read<uint64_t>("metadata count");
  if (kv_count > r.remaining() / kMinKvBytes)
    r.bad("metadata count ", kv_count, " cannot fit in the ", r.remaining(), " bytes after the header");
  if (tensor_count > r.remaining() / kMinTensorInfoBytes)
    r.bad("tensor count ", tensor_count, " cannot fit in the ", r.remaining(), " bytes after the header");

  // ---- metadata
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = r.read_string("metadata key #" + std::to_string(i));
    if (key.empty()) r.bad("metadata key #", i, ": empty key");
    if (metadata_.count(key) != 0) r.bad("key ", key, ": duplicate key");
    const uint32_t type = r.read<uint32_t>("key " + key + ": value type");
    GgufValue v = read_value(r, type, key);
    metadata_.emplace(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find_value("general.alignment")) {
    if (!is_integer(a->type)) r.bad("key general.alignment: expected an integer, found ", describe(*a));
    const int64_t* s = std::get_if<int64_t>(&a->value);
    if (s != nullptr && *s <= 0) r.bad("key general.alignment: ", *s, " is not a power of two");
    const uint64_t align = s != nullptr ? uint64_t(*s) : std::get<uint64_t>(a->value);
    if (!std::has_single_bit(align)) r.bad("key general.alignment: ", align, " is not a power of two");
    alignment_ = align;
  }

  // ---- tensor infos
  if (tensor_count > r.remaining() / kMinTensorInfoBytes)
    r.bad("tensor count ", tensor_count, " cannot fit in the ", r.remaining(), " bytes after the metadata");
  struct Info {
    uint64_t offset;
    uint64_t nbytes;
  };
  std::vector<Info> infos;
  tensors_.reserve(size_t(tensor_count));
  infos.reserve(size_t(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    Tensor t;
    t.name = r.read_string("tensor info #" + std::to_string(i) + ": name");
    if (t.name.empty()) r.bad("tensor info #", i, ": empty name");
    if (index_.count(t.name) != 0) r.bad("tensor ", t.name, ": duplicate name");
    const std::string what = "tensor " + t.name;

    const uint32_t n_dims = r.read<uint32_t>(what + ": n_dims");
    if (n_dims == 0 || n_dims > kMaxDims) r.bad(what, ": n_dims ", n_dims, " out of range [1, ", kMaxDims, "]");
    uint64_t dims[kMaxDims];
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      dims[d] = r.read<uint64_t>(what + ": dims");
      if (dims[d] == 0) r.bad(what, ": dim ", d, " is 0");
      const std::optional<uint64_t> prod = checked_mul(numel, dims[d]);
      if (!prod || *prod > uint64_t(std::numeric_limits<int64_t>::max()))
        r.bad(what, ": element count overflows (dim ", d, " = ", dims[d], ")");
      numel = *prod;
    }
    t.shape.assign(n_dims, 0);
    for (uint32_t d = 0; d < n_dims; ++d) t.shape[n_dims - 1 - d] = int64_t(dims[d]);

    const uint32_t type_id = r.read<uint32_t>(what + ": type");
    const std::optional<DType> dtype = dtype_from_ggml_type(type_id);
    if (!dtype) {
      const std::string_view name = ggml_type_name(type_id);
      if (name.empty()) r.bad(what, ": unknown ggml type id ", type_id);
      r.bad(what, ": unsupported dtype ", name, " (ggml type ", type_id, ")");
    }
    t.dtype = *dtype;
    const DTypeInfo info = dtype_info(t.dtype);
    if (dims[0] % uint64_t(info.block_size) != 0)
      r.bad(what, ": row of ", dims[0], " values is not a whole number of ", info.name, " blocks (",
            info.block_size, " values each)");
    const std::optional<uint64_t> nbytes = dtype_bytes(t.dtype, numel);
    if (!nbytes) r.bad(what, ": byte size of ", numel, " ", info.name, " values overflows");
    t.nbytes = *nbytes;

    const uint64_t offset = r.read<uint64_t>(what + ": offset");
    if (offset % alignment_ != 0)
      r.bad(what, ": data offset ", offset, " is not a multiple of the alignment ", alignment_);
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
    infos.push_back({offset, *nbytes});
  }

  // ---- tensor data
  const std::optional<uint64_t> data_start = checked_align_up(r.pos(), alignment_);
  if (!data_start) r.bad("data section start overflows (alignment ", alignment_, ")");
  for (size_t i = 0; i < tensors_.size(); ++i) {
    Tensor& t = tensors_[i];
    const std::optional<uint64_t> begin = checked_add(*data_start, infos[i].offset);
    const std::optional<uint64_t> end = begin ? checked_add(*begin, infos[i].nbytes) : std::nullopt;
    if (!end)
      r.bad("tensor ", t.name, ": data offset ", infos[i].offset, " + size ", infos[i].nbytes, " overflows");
    if (*end > file_size)
      r.bad("tensor ", t.name, ": data [", *begin, ", ", *end, ") past end of file (size ", file_size, ")");
    t.data = data_ + *begin;
  }
}

// ---- lookups

const GgufValue* GgufFile::find_value(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void wrong_type(std::string_view key, const char* expected, const GgufValue& v) {
  fail("key ", key, ": expected ", expected, ", found ", describe(v));
}

int64_t to_int64(std::string_view key, uint64_t u) {
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail("key ", key, ": value ", u, " does not fit in int64");
  return int64_t(u);
}
}  // namespace

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return std::nullopt;
  if (!is_integer(v->type)) wrong_type(key, "an integer", *v);
  if (const auto* s = std::get_if<int64_t>(&v->value)) return *s;
  return to_int64(key, std::get<uint64_t>(v->value));
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return std::nullopt;
  if (is_float(v->type)) return std::get<double>(v->value);
  if (!is_integer(v->type)) wrong_type(key, "a number", *v);
  if (const auto* s = std::get_if<int64_t>(&v->value)) return double(*s);
  return double(std::get<uint64_t>(v->value));
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::BOOL) wrong_type(key, "a bool", *v);
  return std::get<bool>(v->value);
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::STRING) wrong_type(key, "a string", *v);
  return std::get<std::string>(v->value);
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return {};
  if (v->type != GgufType::ARRAY || v->array_type != GgufType::STRING) wrong_type(key, "an array of string", *v);
  return std::get<std::vector<std::string>>(v->value);
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return {};
  if (v->type != GgufType::ARRAY || !is_integer(v->array_type)) wrong_type(key, "an array of integers", *v);
  if (const auto* s = std::get_if<std::vector<int64_t>>(&v->value)) return *s;
  const auto& u = std::get<std::vector<uint64_t>>(v->value);
  std::vector<int64_t> out;
  out.reserve(u.size());
  for (uint64_t e : u) out.push_back(to_int64(key, e));
  return out;
}

std::vector<double> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue* v = find_value(key);
  if (v == nullptr) return {};
  if (v->type != GgufType::ARRAY || !(is_float(v->array_type) || is_integer(v->array_type)))
    wrong_type(key, "an array of numbers", *v);
  if (const auto* d = std::get_if<std::vector<double>>(&v->value)) return *d;
  std::vector<double> out;
  if (const auto* s = std::get_if<std::vector<int64_t>>(&v->value)) {
    out.assign(s->begin(), s->end());
  } else {
    const auto& u = std::get<std::vector<uint64_t>>(v->value);
    out.assign(u.begin(), u.end());
  }
  return out;
}

int64_t GgufFile::require_int(std::string_view key) const {
  std::optional<int64_t> v = get_int(key);
  if (!v) fail("key ", key, ": missing from ", path());
  return *v;
}

std::string GgufFile::require_string(std::string_view key) const {
  std::optional<std::string> v = get_string(key);
  if (!v) fail("key ", key, ": missing from ", path());
  return *std::move(v);
}

const Tensor* GgufFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace flint
