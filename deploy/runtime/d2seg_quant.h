// Fixed-point arithmetic of the int8 kernels (TensorFlow Lite's int8 quantisation spec):
// real = scale * (q - zero_point); a real multiplier M is stored as a Q31 int32 and a
// power-of-two shift, applied with a rounding doubling high multiply. No float at run time,
// except quantize_f32/dequantize_f32 at the graph's edges.
#ifndef D2SEG_QUANT_H
#define D2SEG_QUANT_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

// Per-element helpers are forced inline: called out of line they keep the row loops of
// requantize_row / add_s8 / requantize_s8 scalar; inlined, the loops vectorise.
#if defined(__GNUC__)
#define D2SEG_ELEMENTWISE inline __attribute__((always_inline))
#else
#define D2SEG_ELEMENTWISE inline
#endif

namespace d2seg_rt {

D2SEG_ELEMENTWISE int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min())
    return std::numeric_limits<int32_t>::max();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
}

D2SEG_ELEMENTWISE int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// round(x * multiplier * 2^(shift - 31)).
D2SEG_ELEMENTWISE int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier,
                                                            int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(
      saturating_rounding_doubling_high_mul(x * (1 << left), multiplier), right);
}

// out[j] = clamp(round((acc[j] + bias) * M) + zero, act_min, act_max) for j < n: one output
// channel's requantisation. Restrict pointers and scalar parameters (int8 stores may alias
// anything) let the compiler vectorise it.
#if defined(__AVX2__)
// multiply_by_quantized_multiplier on 8 lanes, bit-identical to it for multiplier > INT32_MIN
// (the one input it saturates; Q31 multipliers are positive). Its rounding doubling high
// multiply is floor((x*m + 2^30) / 2^31) for either sign of x*m (the negative nudge 1 - 2^30
// then truncation towards zero is the same), taken from bits 31..62 of vpmuldq's 64-bit
// products; GCC does not vectorise the scalar int64 form (~5 instructions per element).
D2SEG_ELEMENTWISE __m256i multiply_by_quantized_multiplier_x8(__m256i x, __m256i multiplier,
                                                               __m128i left, __m128i right,
                                                               __m256i mask, __m256i half) {
  x = _mm256_sll_epi32(x, left);
  const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, multiplier), nudge);
  const __m256i odd =
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), multiplier), nudge);
  const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1),
                                          0xAA);
  // rounding_divide_by_pot: threshold is half + 1 for negative values (their compare is -1).
  const __m256i negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), high);
  const __m256i threshold = _mm256_sub_epi32(half, negative);
  const __m256i round_up = _mm256_cmpgt_epi32(_mm256_and_si256(high, mask), threshold);
  return _mm256_sub_epi32(_mm256_sra_epi32(high, right), round_up);
}
#endif

inline void requantize_row(const int32_t* __restrict acc, int n, int32_t bias,
                           int32_t multiplier, int32_t shift, int32_t zero, int32_t act_min,
                           int32_t act_max, int8_t* __restrict out) {
  int j = 0;
#if defined(__AVX2__)
  if (multiplier != std::numeric_limits<int32_t>::min()) {
    const int right = shift > 0 ? 0 : -shift;
    const __m128i left_v = _mm_cvtsi32_si128(shift > 0 ? shift : 0);
    const __m128i right_v = _mm_cvtsi32_si128(right);
    const int32_t mask = static_cast<int32_t>((int64_t{1} << right) - 1);
    const __m256i mask_v = _mm256_set1_epi32(mask), half_v = _mm256_set1_epi32(mask >> 1);
    const __m256i mult_v = _mm256_set1_epi32(multiplier), bias_v = _mm256_set1_epi32(bias);
    const __m256i zero_v = _mm256_set1_epi32(zero);
    const __m256i lo = _mm256_set1_epi32(act_min), hi = _mm256_set1_epi32(act_max);
    const auto lanes = [&](const int32_t* from) {
      const __m256i x =
          _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)), bias_v);
      const __m256i v = _mm256_add_epi32(
          multiply_by_quantized_multiplier_x8(x, mult_v, left_v, right_v, mask_v, half_v), zero_v);
      return _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    };
    for (; j + 16 <= n; j += 16) {
      // Clamped to [act_min, act_max] within int8: the saturating packs are exact.
      const __m256i words = _mm256_permute4x64_epi64(
          _mm256_packs_epi32(lanes(acc + j), lanes(acc + j + 8)), 0xD8);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j),
                       _mm_packs_epi16(_mm256_castsi256_si128(words),
                                       _mm256_extracti128_si256(words, 1)));
    }
  }
#endif
  for (; j < n; ++j) {
    const int32_t v = multiply_by_quantized_multiplier(acc[j] + bias, multiplier, shift) + zero;
    out[j] = static_cast<int8_t>(std::min(std::max(v, act_min), act_max));
  }
}

inline int8_t saturate_s8(int32_t v) {
  return static_cast<int8_t>(std::min(std::max(v, int32_t{-128}), int32_t{127}));
}

// Graph-edge conversions (the only float arithmetic of an int8 model).
inline void quantize_f32(const float* __restrict x, int n, float scale, int32_t zero,
                         int8_t* __restrict y) {
  for (int i = 0; i < n; ++i)
    y[i] = saturate_s8(static_cast<int32_t>(std::nearbyint(x[i] / scale)) + zero);
}

inline void dequantize_f32(const int8_t* __restrict x, int n, float scale, int32_t zero,
                           float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = scale * static_cast<float>(static_cast<int32_t>(x[i]) - zero);
}

// The mask of a one-logit binary model from its int8 logit: class 1 where the logit is > 0,
// i.e. q > zero (scale > 0), so no dequantisation runs. y holds the class index (0 or 1).
inline void binary_mask_s8(const int8_t* __restrict x, int n, int32_t zero, float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = static_cast<int32_t>(x[i]) > zero ? 1.0f : 0.0f;
}

// y = requantised x from (input_zero, scale_in) to (output_zero, scale_out), where
// multiplier/shift encode scale_in / scale_out. Used by Concat when the scales differ.
inline void requantize_s8(const int8_t* __restrict x, int n, int32_t input_zero,
                          int32_t multiplier, int32_t shift, int32_t output_zero,
                          int8_t* __restrict y) {
  for (int i = 0; i < n; ++i)
    y[i] = saturate_s8(multiply_by_quantized_multiplier(x[i] - input_zero, multiplier, shift) +
                       output_zero);
}

struct AddQuant {
  int32_t a_zero, b_zero, output_zero;
  int32_t a_multiplier, a_shift, b_multiplier, b_shift;  // scale_x / (2 max scale), < 1
  int32_t output_multiplier, output_shift;  // 2 max scale / (2^left_shift scale_out)
  int32_t left_shift;                       // headroom bits (20)
  int32_t act_min, act_max;
};

// y = a + b on int8 tensors with their own scales (TFLite's quantised Add).
inline void add_s8(const int8_t* __restrict a, const int8_t* __restrict b, int n,
                   const AddQuant& q, int8_t* __restrict y) {
  for (int i = 0; i < n; ++i) {
    const int32_t sa = multiply_by_quantized_multiplier((a[i] - q.a_zero) * (1 << q.left_shift),
                                                        q.a_multiplier, q.a_shift);
    const int32_t sb = multiply_by_quantized_multiplier((b[i] - q.b_zero) * (1 << q.left_shift),
                                                        q.b_multiplier, q.b_shift);
    const int32_t v = multiply_by_quantized_multiplier(sa + sb, q.output_multiplier,
                                                       q.output_shift) + q.output_zero;
    y[i] = static_cast<int8_t>(std::min(std::max(v, q.act_min), q.act_max));
  }
}

// Any elementwise function of an int8 tensor (HardSwish, HardSigmoid, Sigmoid, SiLU, Clip) as a
// 256-entry table computed at generation time: y = table[x + 128], from the input's to the
// output's (scale, zero point). Exact for the quantised input, no arithmetic at run time.
inline void lookup_s8(const int8_t* __restrict x, int n, const int8_t* __restrict table,
                      int8_t* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = table[static_cast<int32_t>(x[i]) + 128];
}

// Mean over each channel's `pixels` int8 values: (sum - pixels * input_zero) times
// multiplier/shift (scale_in / (pixels * scale_out)) plus output_zero.
inline void global_avg_pool_s8(const int8_t* __restrict x, int C, int pixels, int32_t input_zero,
                               int32_t multiplier, int32_t shift, int32_t output_zero,
                               int8_t* __restrict y) {
  for (int c = 0; c < C; ++c) {
    const int8_t* xc = x + static_cast<long>(c) * pixels;
    int32_t sum = 0;
    for (int p = 0; p < pixels; ++p) sum += xc[p];
    sum -= pixels * input_zero;
    y[c] = saturate_s8(multiply_by_quantized_multiplier(sum, multiplier, shift) + output_zero);
  }
}

struct MulQuant {
  int32_t a_zero, b_zero, output_zero;
  int32_t multiplier, shift;  // scale_a * scale_b / scale_out
};

// y = a * b on int8 tensors (TFLite's quantised Mul). `period` elements of a share one b
// (1: same shapes; H*W: b is a per-channel gate, squeeze-excite).
inline void mul_s8(const int8_t* __restrict a, const int8_t* __restrict b, int n, int period,
                   const MulQuant& q, int8_t* __restrict y) {
  if (period == 1) {
    for (int i = 0; i < n; ++i)
      y[i] = saturate_s8(multiply_by_quantized_multiplier((a[i] - q.a_zero) * (b[i] - q.b_zero),
                                                          q.multiplier, q.shift) +
                         q.output_zero);
    return;
  }
  for (int start = 0, k = 0; start < n; start += period, ++k) {
    const int end = std::min(n, start + period);
    const int32_t gate = b[k] - q.b_zero;
    for (int i = start; i < end; ++i)
      y[i] = saturate_s8(multiply_by_quantized_multiplier((a[i] - q.a_zero) * gate, q.multiplier,
                                                          q.shift) +
                         q.output_zero);
  }
}

// ReLU on an int8 tensor keeps its scale: q >= zero_point.
inline void relu_s8(const int8_t* __restrict x, int n, int32_t zero, int8_t* __restrict y) {
  const int8_t z = static_cast<int8_t>(zero);
  for (int i = 0; i < n; ++i) y[i] = std::max(x[i], z);
}

}  // namespace d2seg_rt

#endif  // D2SEG_QUANT_H
