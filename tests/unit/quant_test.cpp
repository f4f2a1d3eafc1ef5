// Tests for kernels/cpu/quant: fp16/bf16 conversions, each block layout on
// hand-built blocks with known values, and dot_row against dequantize + dot.
#include "kernels/cpu/quant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#ifdef FLINT_QUANT_AVX2
#include <immintrin.h>
#endif

namespace flint::cpu {
namespace {

constexpr uint16_t kHalfOne = 0x3C00, kHalfTwo = 0x4000, kHalfHalf = 0x3800, kHalfQuarter = 0x3400;
constexpr uint16_t kHalfMinusOne = 0xBC00;

template <class Block>
std::vector<uint8_t> bytes_of(const std::vector<Block>& blocks) {
  std::vector<uint8_t> out(blocks.size() * sizeof(Block));
  std::memcpy(out.data(), blocks.data(), out.size());
  return out;
}

std::vector<float> dequant(DType t, const void* row, int64_t n) {
  std::vector<float> out(size_t(n), std::numeric_limits<float>::quiet_NaN());
  dequantize_row(t, row, out.data(), n);
  return out;
}

// ---- conversions

TEST(QuantConvert, F16KnownValues) {
  EXPECT_EQ(f16_to_f32(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
  EXPECT_EQ(f16_to_f32(kHalfOne), 1.0f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03FF), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);  // smallest normal
  EXPECT_EQ(f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));

  EXPECT_EQ(f32_to_f16(1.0f), kHalfOne);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), kHalfOne);      // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);    // tie -> even (up)
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);  // above tie -> up
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(1e30f), 0x7C00);
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);       // tie between 0 and 2^-24 -> 0
  EXPECT_EQ(f32_to_f16(1.5f * 0x1p-25f), 0x0001);
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);   // tie -> even
  EXPECT_EQ(f32_to_f16(0x1p-14f - 0x1p-30f), 0x0400);  // rounds up into the normals
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

TEST(QuantConvert, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << "half 0x" << std::hex << h;
  }
}

#ifdef FLINT_QUANT_AVX2
TEST(QuantConvert, F16MatchesHardwareOnRandomFloats) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i) {
    const float f = std::bit_cast<float>(uint32_t(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) << f;
  }
}
#endif

TEST(QuantConvert, Bf16KnownValuesAndRounding) {
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // overflows to inf
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7F800001u)))));  // stays nan
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), h);
    }
  }
}

// ---- hand-built blocks

TEST(QuantDequant, PlainTypes) {
  const float f[3] = {1.5f, -2.0f, 0.0f};
  EXPECT_EQ(dequant(DType::F32, f, 3), std::vector<float>({1.5f, -2.0f, 0.0f}));
  const uint16_t h[9] = {kHalfOne, 0xC000, kHalfHalf, 0x7BFF, 0x0001, 0, kHalfQuarter, kHalfMinusOne, kHalfTwo};
  EXPECT_EQ(dequant(DType::F16, h, 9),
            std::vector<float>({1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f, 0.0f, 0.25f, -1.0f, 2.0f}));
  const uint16_t b[2] = {0x3F80, 0xC040};
  EXPECT_EQ(dequant(DType::BF16, b, 2), std::vector<float>({1.0f, -3.0f}));
}

TEST(QuantDequant, Q8_0) {
  uint8_t blk[34];
  blk[0] = 0x00, blk[1] = 0x38;  // d = 0.5 (fp16 0x3800, little-endian)
  const int8_t q[32] = {-128, -127, -1, 0, 1, 2, 3, 127};  // rest 0
  std::memcpy(blk + 2, q, 32);
  const std::vector<float> y = dequant(DType::Q8_0, blk, 32);
  EXPECT_EQ(y[0], -64.0f);
  EXPECT_EQ(y[1], -63.5f);
  EXPECT_EQ(y[2], -0.5f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], 0.5f);
  EXPECT_EQ(y[7], 63.5f);
  for (int i = 8; i < 32; ++i) EXPECT_EQ(y[i], 0.0f);
}

TEST(QuantDequant, Q4_0) {
  uint8_t blk[18];
  blk[0] = 0x00, blk[1] = 0x40;  // d = 2
  for (int j = 0; j < 16; ++j) blk[2 + j] = uint8_t(j | ((15 - j) << 4));
  const std::vector<float> y = dequant(DType::Q4_0, blk, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * float(j - 8)) << j;        // low nibble of byte j
    EXPECT_EQ(y[j + 16], 2.0f * float(7 - j)) << j;   // high nibble of byte j
  }
}

TEST(QuantDequant, Q4_1) {
  uint8_t blk[20];
  blk[0] = 0x00, blk[1] = 0x34;  // d = 0.25
  blk[2] = 0x00, blk[3] = 0xBC;  // m = -1
  for (int j = 0; j < 16; ++j) blk[4 + j] = uint8_t(j | ((15 - j) << 4));
  const std::vector<float> y = dequant(DType::Q4_1, blk, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.25f * float(j) - 1.0f) << j;
    EXPECT_EQ(y[j + 16], 0.25f * float(15 - j) - 1.0f) << j;
  }
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[16], 2.75f);
}

// Q4_K with sub-block scales {1,2,3,4,17,33,50,63} and mins {0,5,10,63,16,31,48,7},
// packed by hand: bytes 0-3 = sc[0..3] | high 2 bits of sc[4..7] << 6,
// bytes 4-7 = mn[0..3] | high 2 bits of mn[4..7] << 6, bytes 8-11 = low 4 bits of
// sc[4..7] | low 4 bits of mn[4..7] << 4.
constexpr uint8_t kQ4KScales[12] = {0x41, 0x82, 0xC3, 0xC4, 0x40, 0x45, 0xCA, 0x3F, 0x01, 0xF1, 0x02, 0x7F};
constexpr int kQ4KSc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
constexpr int kQ4KMn[8] = {0, 5, 10, 63, 16, 31, 48, 7};

TEST(QuantDequant, Q4KScaleUnpacking) {
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, mn;
    q4_k_scale_min(kQ4KScales, s, &sc, &mn);
    EXPECT_EQ(sc, kQ4KSc[s]) << s;
    EXPECT_EQ(mn, kQ4KMn[s]) << s;
  }
}

TEST(QuantDequant, Q4_K) {
  uint8_t blk[144];
  blk[0] = 0x00, blk[1] = 0x3C;  // d = 1
  blk[2] = 0x00, blk[3] = 0x38;  // dmin = 0.5
  std::memcpy(blk + 4, kQ4KScales, 12);
  uint8_t* qs = blk + 16;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) qs[32 * c + l] = uint8_t(((l + c) & 15) | (((3 * l + c) & 15) << 4));
  const std::vector<float> y = dequant(DType::Q4_K, blk, 256);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int lo = (l + c) & 15, hi = (3 * l + c) & 15;
      EXPECT_EQ(y[64 * c + l], float(kQ4KSc[2 * c] * lo) - 0.5f * float(kQ4KMn[2 * c])) << c << "," << l;
      EXPECT_EQ(y[64 * c + 32 + l], float(kQ4KSc[2 * c + 1] * hi) - 0.5f * float(kQ4KMn[2 * c + 1]))
          << c << "," << l;
    }
  }
  EXPECT_EQ(y[255], 63.0f * float((3 * 31 + 3) & 15) - 3.5f);  // sub-block 7: sc 63, mn 7
}

TEST(QuantDequant, Q6_K) {
  uint8_t blk[210] = {};
  uint8_t* ql = blk;
  uint8_t* qh = blk + 128;
  int8_t* scales = reinterpret_cast<int8_t*>(blk + 192);
  blk[208] = 0x00, blk[209] = 0x38;  // d = 0.5
  for (int s = 0; s < 16; ++s) scales[s] = int8_t(s - 8);
  for (int i = 0; i < 128; ++i) ql[i] = uint8_t(i * 7 + 3);
  for (int i = 0; i < 64; ++i) qh[i] = uint8_t(i * 13 + 5);
  const std::vector<float> y = dequant(DType::Q6_K, blk, 256);
  // Value v: half h, quarter k (32 values), lane l. Its low 4 bits are nibble k/2
  // of ql[64h + 32(k%2) + l]; its high 2 bits are bits 2k..2k+1 of qh[32h + l];
  // its scale is scales[8h + 2k + l/16].
  for (int v = 0; v < 256; ++v) {
    const int h = v / 128, k = (v % 128) / 32, l = v % 32;
    const int lo = (ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
    const int hi = (qh[32 * h + l] >> (2 * k)) & 3;
    const int q = (lo | (hi << 4)) - 32;
    EXPECT_EQ(y[v], 0.5f * float(scales[8 * h + 2 * k + l / 16]) * float(q)) << v;
  }
  // Spot checks by hand: v=0: ql[0]=3, qh[0]=5 (bits 0-1 = 1) -> q = 3|16 - 32 = -13,
  // scale -8 -> 0.5*-8*-13 = 52. v=200 (h 1, k 2, l 8): ql[72] = 507&255 = 251
  // high nibble 15; qh[40] = 525&255 = 13, bits 4-5 = 0 -> q = 15 - 32 = -17;
  // scale index 8+4+0 = 12 -> 4; 0.5*4*-17 = -34.
  EXPECT_EQ(y[0], 52.0f);
  EXPECT_EQ(y[200], -34.0f);
}

// ---- dot_row on random blocks

// Random row bytes of type t with n values: random payload, sane fp16 scales.
std::vector<uint8_t> random_row(DType t, int64_t n, std::mt19937& rng) {
  const DTypeInfo info = dtype_info(t);
  std::vector<uint8_t> row(size_t(n / info.block_size * info.block_bytes));
  for (uint8_t& b : row) b = uint8_t(rng());
  std::uniform_real_distribution<float> scale(0.001f, 0.1f), weight(-2.0f, 2.0f);
  auto set_half = [&](size_t off, float v) {
    const uint16_t h = t == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
    std::memcpy(row.data() + off, &h, 2);
  };
  const size_t bb = size_t(info.block_bytes);
  switch (t) {
    case DType::F32:
      for (int64_t i = 0; i < n; ++i) {
        const float v = weight(rng);
        std::memcpy(row.data() + 4 * i, &v, 4);
      }
      break;
    case DType::F16: case DType::BF16:
      for (int64_t i = 0; i < n; ++i) set_half(2 * size_t(i), weight(rng));
      break;
    case DType::Q8_0: case DType::Q4_0:
      for (size_t b = 0; b < row.size(); b += bb) set_half(b, scale(rng));
      break;
    case DType::Q4_1: case DType::Q4_K:  // d, then m / dmin
      for (size_t b = 0; b < row.size(); b += bb) set_half(b, scale(rng)), set_half(b + 2, scale(rng) - 0.05f);
      break;
    case DType::Q6_K:
      for (size_t b = 0; b < row.size(); b += bb) set_half(b + 208, scale(rng) * 0.1f);
      break;
  }
  return row;
}

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

// Every weight is one correctly rounded operation on exact products, so the
// reference computed in double and rounded once must match bit for bit.
std::vector<float> reference_dequant(DType t, const std::vector<uint8_t>& row, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  const uint8_t* p = row.data();
  auto h = [](const uint8_t* q) {
    uint16_t v;
    std::memcpy(&v, q, 2);
    return double(f16_to_f32(v));
  };
  const int bs = dtype_info(t).block_size, bb = dtype_info(t).block_bytes;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* blk = p + (i / bs) * bb;
    const int j = int(i % bs);
    double v = 0;
    switch (t) {
      case DType::Q8_0: v = h(blk) * double(int8_t(blk[2 + j])); break;
      case DType::Q4_0: v = h(blk) * double(((blk[2 + j % 16] >> (4 * (j / 16))) & 15) - 8); break;
      case DType::Q4_1: v = h(blk) * double((blk[4 + j % 16] >> (4 * (j / 16))) & 15) + h(blk + 2); break;
      case DType::Q4_K: {
        const int s = j / 32, c = j / 64, l = j % 32;
        uint8_t sc, mn;
        q4_k_scale_min(blk + 4, s, &sc, &mn);
        const int q = (blk[16 + 32 * c + l] >> (4 * (s % 2))) & 15;
        v = double(float(h(blk) * sc)) * q - double(float(h(blk + 2) * mn));
        break;
      }
      case DType::Q6_K: {
        const int hh = j / 128, k = (j % 128) / 32, l = j % 32;
        const int lo = (blk[64 * hh + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
        const int hi = (blk[128 + 32 * hh + l] >> (2 * k)) & 3;
        const double ds = double(float(h(blk + 208) * double(int8_t(blk[192 + 8 * hh + 2 * k + l / 16]))));
        v = ds * double((lo | (hi << 4)) - 32);
        break;
      }
      default: break;
    }
    y[size_t(i)] = float(v);
  }
  return y;
}

TEST(QuantDequant, RandomBlocksMatchTheFormulasBitForBit) {
  std::mt19937 rng(77);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K}) {
    const int64_t n = 8LL * dtype_info(t).block_size;
    const std::vector<uint8_t> row = random_row(t, n, rng);
    const std::vector<float> got = dequant(t, row.data(), n);
    const std::vector<float> want = reference_dequant(t, row, n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(got[size_t(i)]), std::bit_cast<uint32_t>(want[size_t(i)]))
          << dtype_info(t).name << " value " << i << ": " << got[size_t(i)] << " vs " << want[size_t(i)];
  }
}

struct Reference {
  double dot;      // sum w_i x_i in double over the dequantized row
  double abs_sum;  // sum |w_i x_i|: the error scale of an fp32 accumulation
};

Reference reference_dot(DType t, const std::vector<uint8_t>& row, const std::vector<float>& x) {
  const std::vector<float> w = dequant(DType(t), row.data(), int64_t(x.size()));
  Reference r{0, 0};
  for (size_t i = 0; i < x.size(); ++i) {
    r.dot += double(w[i]) * double(x[i]);
    r.abs_sum += std::fabs(double(w[i]) * double(x[i]));
  }
  return r;
}

// fp32 accumulation of up to ~12k terms in 8+ lanes: allow 1e-5 of sum|w x|
// (about 170 ulps of the largest partial sum; the observed error is far smaller).
constexpr double kDotRelTol = 1e-5;

const DType kAllTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0,
                           DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};

std::vector<int64_t> test_sizes(DType t) {
  const int bs = dtype_info(t).block_size;
  if (bs == 1) return {1, 7, 8, 31, 33, 111, 500, 4096};
  return {int64_t(bs), 3LL * bs, 18LL * bs, 48LL * bs};
}

TEST(QuantDot, MatchesDequantizeThenDot) {
  std::mt19937 rng(42);
  for (DType t : kAllTypes) {
    for (int64_t n : test_sizes(t)) {
      const std::vector<uint8_t> row = random_row(t, n, rng);
      const std::vector<float> x = random_x(n, rng);
      const Reference ref = reference_dot(t, row, x);
      const float got = dot_row(t, row.data(), x.data(), n);
      EXPECT_NEAR(got, ref.dot, kDotRelTol * ref.abs_sum) << dtype_info(t).name << " n=" << n;
      const float scalar = detail::dot_row_scalar(t, row.data(), x.data(), n);
      EXPECT_NEAR(scalar, ref.dot, kDotRelTol * ref.abs_sum) << dtype_info(t).name << " n=" << n << " scalar";
    }
  }
}

TEST(QuantDot, SimdPathAgreesWithScalarFallback) {
  if (!detail::dot_row_is_simd()) GTEST_SKIP() << "built without AVX2+FMA+F16C";
  std::mt19937 rng(1234);
  for (DType t : kAllTypes) {
    for (int64_t n : test_sizes(t)) {
      for (int rep = 0; rep < 5; ++rep) {
        const std::vector<uint8_t> row = random_row(t, n, rng);
        const std::vector<float> x = random_x(n, rng);
        const Reference ref = reference_dot(t, row, x);
        const float simd = dot_row(t, row.data(), x.data(), n);
        const float scalar = detail::dot_row_scalar(t, row.data(), x.data(), n);
        EXPECT_NEAR(simd, scalar, kDotRelTol * ref.abs_sum) << dtype_info(t).name << " n=" << n;
      }
    }
  }
}

TEST(QuantDot, KnownValueOnHandBuiltQ4_1Block) {
  uint8_t blk[20];
  blk[0] = 0x00, blk[1] = 0x34;  // d = 0.25
  blk[2] = 0x00, blk[3] = 0xBC;  // m = -1
  for (int j = 0; j < 16; ++j) blk[4 + j] = uint8_t(j | ((15 - j) << 4));
  std::vector<float> x(32, 0.0f);
  x[1] = 1.0f;   // w = 0.25*1 - 1 = -0.75
  x[16] = 2.0f;  // w = 0.25*15 - 1 = 2.75
  x[31] = -4.0f; // w = 0.25*0 - 1 = -1
  EXPECT_EQ(dot_row(DType::Q4_1, blk, x.data(), 32), -0.75f + 5.5f + 4.0f);
  EXPECT_EQ(detail::dot_row_scalar(DType::Q4_1, blk, x.data(), 32), -0.75f + 5.5f + 4.0f);
}

TEST(QuantDot, IsDeterministicAcrossCallsAndThreads) {
  std::mt19937 rng(99);
  for (DType t : kAllTypes) {
    const int64_t n = dtype_info(t).block_size == 1 ? 999 : 9LL * dtype_info(t).block_size;
    const std::vector<uint8_t> row = random_row(t, n, rng);
    const std::vector<float> x = random_x(n, rng);
    const uint32_t first = std::bit_cast<uint32_t>(dot_row(t, row.data(), x.data(), n));
    uint32_t in_thread[2] = {0, 0};
    std::thread a([&] { in_thread[0] = std::bit_cast<uint32_t>(dot_row(t, row.data(), x.data(), n)); });
    std::thread b([&] { in_thread[1] = std::bit_cast<uint32_t>(dot_row(t, row.data(), x.data(), n)); });
    a.join();
    b.join();
    EXPECT_EQ(first, std::bit_cast<uint32_t>(dot_row(t, row.data(), x.data(), n))) << dtype_info(t).name;
    EXPECT_EQ(first, in_thread[0]) << dtype_info(t).name;
    EXPECT_EQ(first, in_thread[1]) << dtype_info(t).name;
  }
}

TEST(QuantDot, ReadsUnalignedActivations) {
  std::mt19937 rng(5);
  const int64_t n = 64;
  const std::vector<uint8_t> row = random_row(DType::Q4_1, n, rng);
  std::vector<float> buf = random_x(n + 1, rng);
  const std::vector<float> x(buf.begin() + 1, buf.end());
  EXPECT_EQ(std::bit_cast<uint32_t>(dot_row(DType::Q4_1, row.data(), buf.data() + 1, n)),
            std::bit_cast<uint32_t>(dot_row(DType::Q4_1, row.data(), x.data(), n)));
}

}  // namespace
}  // namespace flint::cpu
