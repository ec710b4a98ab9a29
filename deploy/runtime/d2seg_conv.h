// Convolution kernels of the d2seg edge runtime: im2col (skipped for 1x1/stride-1 convolutions)
// + a cache-blocked GEMM whose inner loops run over contiguous output columns, so the compiler
// vectorises them at -O3. Weights are packed at generation time (d2seg/export/edge/emit.py) in
// panels of kConvRows output channels, K padded to a multiple of kDepthGroup<T> (rows past M
// and k past K are zero): see packed_weight. With AVX-512 VNNI the int8 columns are also packed
// once per column block (gemm_packed_s8), with AVX2 in k pairs, and the weight panels are
// widened to int16 per K-block (gemm_widened_s8); with the Cortex-M DSP extension the GEMM tile
// and the depthwise convolution use SMLAD (depthwise_conv_dsp). Layout is NCHW, batch 1;
// nothing allocates (the DSP depthwise rows live in a 1 KiB stack buffer).
#ifndef D2SEG_CONV_H
#define D2SEG_CONV_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define D2SEG_INT8_VNNI 1
#elif defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
#define D2SEG_INT8_AVX2 1
#elif defined(__ARM_NEON)
#include "d2seg_conv_neon.h"
#define D2SEG_INT8_NEON 1  // A-class Arm (before DSP: 32-bit Cortex-A has both)
#elif defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define D2SEG_INT8_DSP 1  // Cortex-M4/M7/M33 DSP extension: SMLAD, SXTB16
#endif

#include "d2seg_quant.h"

namespace d2seg_rt {

constexpr int kConvRows = 6;     // output channels per packed weight panel (GEMM tile rows)
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;  // SIMD register width the GEMM tile is laid out for
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;  // SSE2, NEON, Xtensa/Cortex-M (scalarised where no SIMD)
#endif
constexpr int kLanes = kVectorBytes / 4;  // float / int32 lanes per register
constexpr int kConvCols = 2 * kLanes;     // output pixels per GEMM tile: two registers per row
constexpr int kDepthBlock = 256; // reduction (K) block: a K-block of one tile stays in L1
constexpr int kColBlock = 256;   // output columns per block: a K x N block stays in L2

// Consecutive k stored together per panel row: 4 for int8 (one 32-bit word per row and k-quad,
// what dot-product instructions such as vpdpbusd / SMLAD-style code read), 1 for float.
template <typename T>
constexpr int kDepthGroup = sizeof(T) == 1 ? 4 : 1;

// K rounded up to the packing's depth group: the k extent of one packed panel.
template <typename T>
inline int packed_depth(int k) {
  return (k + kDepthGroup<T> - 1) / kDepthGroup<T> * kDepthGroup<T>;
}

// W[row r of the panel][k] of a packed panel: [k / G][r][k % G] with G = kDepthGroup<T>.
template <typename T>
inline T packed_weight(const T* panel, int k, int r) {
  constexpr int g = kDepthGroup<T>;
  return panel[(k / g) * kConvRows * g + r * g + k % g];
}

struct ConvShape {
  int C, H, W;          // input channels, height, width
  int M, OH, OW;        // output channels, height, width
  int kh, kw, sh, sw;   // kernel size and stride
  int pt, pl, dh, dw;   // top/left padding and dilation (bottom/right follow from OH/OW)
  int groups;
};

inline bool conv_is_pointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 &&
         s.OH == s.H && s.OW == s.W;
}

// Output rows whose im2col columns are built at once: about kColBlock columns, so the
// scratch stays small (K x rows*OW, not K x OH*OW) and a block of it stays in cache.
inline int conv_block_rows(const ConvShape& s) {
  return std::min(s.OH, std::max(1, kColBlock / s.OW));
}

// Elements of the im2col scratch buffer (0 when the input is used in place).
inline int conv_col_elements(const ConvShape& s) {
  return conv_is_pointwise(s) ? 0 : (s.C / s.groups) * s.kh * s.kw * conv_block_rows(s) * s.OW;
}

// Version of the int8 scratch layouts (conv_s8_scratch_bytes, resize_bilinear_s8's row) that
// generated code plans its arena for; bumped whenever either changes.
constexpr int kS8ScratchLayout = 3;

// Columns of B one GEMM call packs at most: a column block, rounded up to whole tiles.
inline int conv_pack_columns(const ConvShape& s) {
  const int cols = conv_is_pointwise(s) ? s.OH * s.OW : conv_block_rows(s) * s.OW;
  return (std::min(kColBlock, cols) + kConvCols - 1) / kConvCols * kConvCols;
}

// Bytes of an int8 convolution's scratch: the im2col columns, then (with `pack`: the VNNI and
// AVX2 builds) one column block of B packed for vpdpbusd / vpmaddwd. Generated code plans host
// models with the pack (one arena for every host build) and microcontroller models without it.
inline int conv_s8_scratch_bytes(const ConvShape& s, bool pack) {
  return conv_col_elements(s) +
         (pack ? packed_depth<int8_t>((s.C / s.groups) * s.kh * s.kw) * conv_pack_columns(s) : 0);
}

// col[(c*kh + ky)*kw + kx][(oy - oy0)*OW + ox] = x[c][oy*sh - pt + ky*dh][ox*sw - pl + kx*dw]
// (or pad outside the image) for output rows oy0 <= oy < oy1.
template <typename T>
inline void im2col(const T* __restrict x, int channels, const ConvShape& s, int oy0, int oy1,
                   T pad, T* __restrict col) {
  // Locals: stores through T = int8_t may alias anything, so s.* would be reloaded per pixel.
  const int in_h = s.H, in_w = s.W, out_w = s.OW, kh = s.kh, kw = s.kw;
  const int sh = s.sh, sw = s.sw, pt = s.pt, pl = s.pl, dh = s.dh, dw = s.dw;
  const int n = (oy1 - oy0) * out_w;
  for (int c = 0; c < channels; ++c) {
    for (int ky = 0; ky < kh; ++ky) {
      for (int kx = 0; kx < kw; ++kx) {
        T* row = col + static_cast<long>((c * kh + ky) * kw + kx) * n;
        // Output columns [first, last) read inside the image: ix = ox*sw + x0 in [0, W).
        const int x0 = kx * dw - pl;
        const int first = std::min(out_w, x0 < 0 ? (-x0 + sw - 1) / sw : 0);
        const int inside = x0 >= in_w ? 0 : (in_w - 1 - x0) / sw + 1;
        const int last = std::max(first, std::min(out_w, inside));
        for (int oy = oy0; oy < oy1; ++oy) {
          T* out = row + (oy - oy0) * out_w;
          const int iy = oy * sh - pt + ky * dh;
          if (iy < 0 || iy >= in_h) {
            std::fill(out, out + out_w, pad);
            continue;
          }
          const T* in = x + (static_cast<long>(c) * in_h + iy) * in_w;
          std::fill(out, out + first, pad);
          if (sw == 1) {
            std::memcpy(out + first, in + first + x0, sizeof(T) * (last - first));
          } else {
            int ox = first;
#if defined(__SSE2__)
            if constexpr (sizeof(T) == 1) {
              // Stride 2 (the encoders' downsampling convs): 16 even bytes of 32 per step,
              // masked to 16-bit lanes and packed; the 32 bytes read stay inside the row.
              const __m128i even = _mm_set1_epi16(0x00FF);
              for (; sw == 2 && ox + 16 <= last && 2 * ox + x0 + 32 <= in_w; ox += 16) {
                const T* from = in + 2 * ox + x0;
                const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
                const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + 16));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + ox),
                                 _mm_packus_epi16(_mm_and_si128(a, even), _mm_and_si128(b, even)));
              }
            }
#endif
            for (; ox < last; ++ox) out[ox] = in[ox * sw + x0];
          }
          std::fill(out + last, out + out_w, pad);
        }
      }
    }
  }
}

// acc[r][j] += sum_k W[r][k] * b[k*ldb + j] for k in [0, depth), j < Cols (a: packed panel).
// The sums live in a local array the compiler keeps in vector registers across the k loop.
template <typename T, typename Acc, int Cols>
inline void gemm_tile(const T* __restrict a, const T* __restrict b, long ldb, int depth,
                      Acc (&acc)[kConvRows][kConvCols]) {
  Acc sum[kConvRows][Cols];
  for (int r = 0; r < kConvRows; ++r)
    for (int j = 0; j < Cols; ++j) sum[r][j] = acc[r][j];
  for (int k = 0; k < depth; ++k) {
    const T* bk = b + k * ldb;
    Acc bv[Cols];
    for (int j = 0; j < Cols; ++j) bv[j] = static_cast<Acc>(bk[j]);
    for (int r = 0; r < kConvRows; ++r) {
      const Acc ar = static_cast<Acc>(packed_weight(a, k, r));
      for (int j = 0; j < Cols; ++j) sum[r][j] += ar * bv[j];
    }
  }
  for (int r = 0; r < kConvRows; ++r)
    for (int j = 0; j < Cols; ++j) acc[r][j] = sum[r][j];
}

#if defined(__GNUC__)
// GCC/Clang generic vectors (SSE/AVX/NEON, or scalar code where there is no SIMD): the
// kConvCols columns of a tile are two registers per row, kConvRows x 2 accumulators in all.
typedef float F32xN __attribute__((vector_size(kVectorBytes)));
typedef int32_t I32xN __attribute__((vector_size(kVectorBytes)));
typedef int8_t I8xN __attribute__((vector_size(kLanes)));

template <>
inline void gemm_tile<float, float, kConvCols>(const float* __restrict a,
                                               const float* __restrict b, long ldb, int depth,
                                               float (&acc)[kConvRows][kConvCols]) {
  F32xN lo[kConvRows], hi[kConvRows];
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&lo[r], &acc[r][0], sizeof(F32xN));
    std::memcpy(&hi[r], &acc[r][kLanes], sizeof(F32xN));
  }
  for (int k = 0; k < depth; ++k) {
    const float* ak = a + k * kConvRows;
    F32xN b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(F32xN));
    std::memcpy(&b1, b + k * ldb + kLanes, sizeof(F32xN));
    for (int r = 0; r < kConvRows; ++r) {
      lo[r] += ak[r] * b0;
      hi[r] += ak[r] * b1;
    }
  }
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&acc[r][0], &lo[r], sizeof(F32xN));
    std::memcpy(&acc[r][kLanes], &hi[r], sizeof(F32xN));
  }
}

typedef int16_t I16x2N __attribute__((vector_size(kVectorBytes)));  // a tile row's columns
typedef int8_t I8x2N __attribute__((vector_size(2 * kLanes)));
typedef int16_t I16xH __attribute__((vector_size(kLanes * 2)));  // half of an I16x2N

// Two k steps per int16 multiply-add: weights are in [-127, 127] (quantize_weights), so
// |w0*x0 + w1*x1| <= 2*127*128 = 32512 fits int16 exactly; the sum is then widened into the
// int32 accumulators. Twice the MACs per instruction of int32 products.

#if !defined(D2SEG_INT8_AVX2) && !defined(D2SEG_INT8_VNNI) && !defined(D2SEG_INT8_DSP) && \
    !defined(D2SEG_INT8_NEON)
template <>
inline void gemm_tile<int8_t, int32_t, kConvCols>(const int8_t* __restrict a,
                                                  const int8_t* __restrict b, long ldb,
                                                  int depth,
                                                  int32_t (&acc)[kConvRows][kConvCols]) {
  I32xN lo[kConvRows], hi[kConvRows];
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&lo[r], &acc[r][0], sizeof(I32xN));
    std::memcpy(&hi[r], &acc[r][kLanes], sizeof(I32xN));
  }
  int k = 0;
  for (; k + 1 < depth; k += 2) {
    I8x2N b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(I8x2N));
    std::memcpy(&b1, b + (k + 1) * ldb, sizeof(I8x2N));
    const I16x2N c0 = __builtin_convertvector(b0, I16x2N);
    const I16x2N c1 = __builtin_convertvector(b1, I16x2N);
    for (int r = 0; r < kConvRows; ++r) {
      const int16_t a0 = packed_weight(a, k, r), a1 = packed_weight(a, k + 1, r);
      const I16x2N p = a0 * c0 + a1 * c1;
      I16xH pl, ph;
      std::memcpy(&pl, &p, sizeof(I16xH));
      std::memcpy(&ph, reinterpret_cast<const char*>(&p) + sizeof(I16xH), sizeof(I16xH));
      lo[r] += __builtin_convertvector(pl, I32xN);
      hi[r] += __builtin_convertvector(ph, I32xN);
    }
  }
  for (; k < depth; ++k) {
    I8xN b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(I8xN));
    std::memcpy(&b1, b + k * ldb + kLanes, sizeof(I8xN));
    const I32xN w0 = __builtin_convertvector(b0, I32xN);
    const I32xN w1 = __builtin_convertvector(b1, I32xN);
    for (int r = 0; r < kConvRows; ++r) {
      const int32_t ar = packed_weight(a, k, r);
      lo[r] += ar * w0;
      hi[r] += ar * w1;
    }
  }
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&acc[r][0], &lo[r], sizeof(I32xN));
    std::memcpy(&acc[r][kLanes], &hi[r], sizeof(I32xN));
  }
}
#endif  // !D2SEG_INT8_AVX2 && !D2SEG_INT8_VNNI && !D2SEG_INT8_DSP && !D2SEG_INT8_NEON
#endif  // __GNUC__

#if defined(D2SEG_INT8_DSP)
// Cortex-M DSP: __smlad(x, y, acc) = acc + x.lo*y.lo + x.hi*y.hi on int16 halves, exact here
// (int8 products); __sxtb16 sign-extends bytes 0 and 2 of a word into those halves (bytes 1
// and 3 after a rotate by 8). A packed weight quad (w[r][k..k+3], one word) so gives (w0, w2) and
// (w1, w3); B is read as rows k and k+2 (and k+1, k+3) of two adjacent columns, one halfword
// each, joined into a word whose __sxtb16 is column j's (b[k], b[k+2]) and its rotate's
// column j+1's. Sub-tiles of 2 rows x 2 columns keep the sums, operands and pointers in the
// 13 usable core registers. Products and sums are the portable kernel's, in another order.
inline uint32_t load_u16(const int8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// __sxtb16 of bytes 1 and 3: SXTB16's own ROR #8 (GCC 12 does not fold a rotate into it).
inline int32_t sxtb16_ror8(uint32_t x) {
  int32_t y;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(y) : "r"(x));
  return y;
}

template <>
inline void gemm_tile<int8_t, int32_t, kConvCols>(const int8_t* __restrict a,
                                                  const int8_t* __restrict b, long ldb,
                                                  int depth,
                                                  int32_t (&acc)[kConvRows][kConvCols]) {
  static_assert(kConvRows % 2 == 0 && kConvCols % 2 == 0, "2 x 2 sub-tiles");
  const int quads = depth / 4;
  for (int r = 0; r < kConvRows; r += 2) {
    for (int j = 0; j < kConvCols; j += 2) {
      int32_t s00 = acc[r][j], s01 = acc[r][j + 1], s10 = acc[r + 1][j], s11 = acc[r + 1][j + 1];
      const int8_t* bk = b + j;
      const int8_t* w = a + 4 * r;
      const int8_t* const end = w + quads * kConvRows * 4;
      const long ldb2 = 2 * ldb, ldb3 = 3 * ldb, ldb4 = 4 * ldb;
      // Unrolled by 2: MCU model 208.5 -> 194.0 M instructions in QEMU (by 4: 203.8 M, spills).
#pragma GCC unroll 2
      for (; w != end; bk += ldb4, w += kConvRows * 4) {
        const uint32_t even = load_u16(bk) | load_u16(bk + ldb2) << 16;
        const uint32_t odd = load_u16(bk + ldb) | load_u16(bk + ldb3) << 16;
        const int32_t b0e = __sxtb16(even), b1e = sxtb16_ror8(even);
        const int32_t b0o = __sxtb16(odd), b1o = sxtb16_ror8(odd);
        uint32_t w0, w1;
        std::memcpy(&w0, w, sizeof(w0));
        std::memcpy(&w1, w + 4, sizeof(w1));
        const int32_t w0e = __sxtb16(w0), w0o = sxtb16_ror8(w0);
        const int32_t w1e = __sxtb16(w1), w1o = sxtb16_ror8(w1);
        s00 = __smlad(w0o, b0o, __smlad(w0e, b0e, s00));
        s01 = __smlad(w0o, b1o, __smlad(w0e, b1e, s01));
        s10 = __smlad(w1o, b0o, __smlad(w1e, b0e, s10));
        s11 = __smlad(w1o, b1o, __smlad(w1e, b1e, s11));
      }
      for (int k = 4 * quads; k < depth; ++k) {
        const int32_t x0 = b[k * ldb + j], x1 = b[k * ldb + j + 1];
        const int32_t v0 = packed_weight(a, k, r), v1 = packed_weight(a, k, r + 1);
        s00 += v0 * x0;
        s01 += v0 * x1;
        s10 += v1 * x0;
        s11 += v1 * x1;
      }
      acc[r][j] = s00;
      acc[r][j + 1] = s01;
      acc[r + 1][j] = s10;
      acc[r + 1][j + 1] = s11;
    }
  }
}

// Depthwise convolution on the DSP (dilation 1 along rows): per output row, the kh input rows
// it reads are copied with their padding into a stack buffer (rows outside the image are all
// padding), so every column takes the same loop and the sums stay in registers across all
// kh x kw taps (the generic loop loads and stores acc per tap). An input word in[i .. i + 3]
// gives (in[i], in[i + 2]) by SXTB16 and (in[i + 1], in[i + 3]) rotated, so a weight word
// (w[kx], w[kx + 2]) takes two taps per SMLAD:
// - stride 1: columns in pairs; the word at ox + kx serves column ox (taps kx, kx + 2) and,
//   rotated, column ox + 1; tap pairs (kx, kx + 2) for kx % 4 < 2, a partner past kw weighs 0;
// - stride 2: the word at 2 * ox + 4q holds taps 4q .. 4q + 3 of column ox: (w[4q], w[4q + 2])
//   and (w[4q + 1], w[4q + 3]).
// One load, two SXTB16 and two SMLAD per 4 MACs either way; products are the generic loop's.
constexpr int kDepthwiseDspRows = 8;    // kernel height the stack buffer holds
constexpr int kDepthwiseDspRow = 128;   // bytes of one padded input row in it
constexpr int kDepthwiseDspWords = 4;   // weight words per kernel row: 7 taps (s1), 8 (s2)

// Bytes of the padded row the columns read: input column i - pl at index i.
inline int depthwise_dsp_row_bytes(const ConvShape& s) {
  return s.sw == 1 ? 2 * ((s.OW + 1) / 2) + s.kw + 1 : 2 * (s.OW - 1) + 4 * ((s.kw + 3) / 4);
}

inline bool depthwise_dsp_fits(const ConvShape& s) {
  const bool taps = s.sw == 1 ? s.kw <= 7 : s.sw == 2 && s.kw <= 8;
  return taps && s.dw == 1 && s.kh <= kDepthwiseDspRows &&
         depthwise_dsp_row_bytes(s) <= kDepthwiseDspRow;
}

// The halfword pair (w[low], w[high]) of a weight word, taps past kw weighing 0.
inline int32_t tap_pair(const int8_t* w, int kw, int low, int high) {
  const uint16_t lo = static_cast<uint16_t>(low < kw ? w[low] : 0);
  const uint16_t hi = static_cast<uint16_t>(high < kw ? w[high] : 0);
  return static_cast<int32_t>(lo | static_cast<uint32_t>(hi) << 16);
}

inline int32_t load_word(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// acc[ox] = sum over the kh rows and Words weight words of one output row (stride 1).
template <int Words>
inline void depthwise_row_dsp_s1(const int8_t (*rows)[kDepthwiseDspRow], int kh,
                                 const int32_t (*wpair)[kDepthwiseDspWords], int out_w,
                                 int32_t* __restrict acc) {
  for (int ox = 0; ox < out_w; ox += 2) {
    int32_t s0 = 0, s1 = 0;
    for (int ky = 0; ky < kh; ++ky) {
      const int8_t* in = rows[ky] + ox;
#pragma GCC unroll 4
      for (int g = 0; g < Words; ++g) {
        const int32_t word = load_word(in + (g / 2) * 4 + g % 2);
        s0 = __smlad(wpair[ky][g], __sxtb16(word), s0);
        s1 = __smlad(wpair[ky][g], sxtb16_ror8(word), s1);
      }
    }
    acc[ox] = s0;
    if (ox + 1 < out_w) acc[ox + 1] = s1;
  }
}

// The same for stride 2, Quads words of four taps per kernel row.
template <int Quads>
inline void depthwise_row_dsp_s2(const int8_t (*rows)[kDepthwiseDspRow], int kh,
                                 const int32_t (*wpair)[kDepthwiseDspWords], int out_w,
                                 int32_t* __restrict acc) {
  for (int ox = 0; ox < out_w; ++ox) {
    int32_t sum = 0;
    for (int ky = 0; ky < kh; ++ky) {
      const int8_t* in = rows[ky] + 2 * ox;
#pragma GCC unroll 2
      for (int q = 0; q < Quads; ++q) {
        const int32_t word = load_word(in + 4 * q);
        sum = __smlad(wpair[ky][2 * q], __sxtb16(word), sum);
        sum = __smlad(wpair[ky][2 * q + 1], sxtb16_ror8(word), sum);
      }
    }
    acc[ox] = sum;
  }
}

// depthwise_conv for int8 where depthwise_dsp_fits(s): the same store(c, oy, acc) calls.
template <typename Store>
inline void depthwise_conv_dsp(const int8_t* __restrict x, const ConvShape& s,
                               const int8_t* __restrict w, int8_t pad, int32_t* __restrict acc,
                               Store store) {
  const int in_h = s.H, in_w = s.W, kh = s.kh, kw = s.kw, pl = s.pl;
  const int bytes = depthwise_dsp_row_bytes(s), left = std::min(pl, bytes);
  const int copied = std::max(0, std::min(in_w, bytes - left));  // input columns a row reads
  int8_t rows[kDepthwiseDspRows][kDepthwiseDspRow];
  // Weight word g of a kernel row holds taps (kx, kx + 2), kx = 4 * (g / 2) + g % 2, for
  // either stride.
  int32_t wpair[kDepthwiseDspRows][kDepthwiseDspWords];
  for (int c = 0; c < s.C; ++c) {
    const int8_t* xc = x + static_cast<long>(c) * in_h * in_w;
    for (int ky = 0; ky < kh; ++ky) {
      const int8_t* wr = w + (static_cast<long>(c) * kh + ky) * kw;
      for (int g = 0; g < kDepthwiseDspWords; ++g) {
        const int kx = 4 * (g / 2) + g % 2;
        wpair[ky][g] = tap_pair(wr, kw, kx, kx + 2);
      }
    }
    for (int oy = 0; oy < s.OH; ++oy) {
      for (int ky = 0; ky < kh; ++ky) {
        const int iy = oy * s.sh - s.pt + ky * s.dh;
        int8_t* row = rows[ky];
        if (iy < 0 || iy >= in_h) {
          std::memset(row, pad, bytes);
          continue;
        }
        std::memset(row, pad, left);
        std::memcpy(row + left, xc + static_cast<long>(iy) * in_w, copied);
        std::memset(row + left + copied, pad, bytes - left - copied);
      }
      const auto run = [&](auto n) {
        constexpr int kWords = decltype(n)::value;
        if (s.sw == 1)
          depthwise_row_dsp_s1<kWords>(rows, kh, wpair, s.OW, acc);
        else if constexpr (kWords <= 2)
          depthwise_row_dsp_s2<kWords>(rows, kh, wpair, s.OW, acc);
      };
      // Stride 1: words for the kx % 4 < 2 taps (1-4); stride 2: tap quads (1-2).
      switch (s.sw == 1 ? kw / 4 * 2 + std::min(kw % 4, 2) : (kw + 3) / 4) {
        case 1: run(std::integral_constant<int, 1>{}); break;
        case 2: run(std::integral_constant<int, 2>{}); break;
        case 3: run(std::integral_constant<int, 3>{}); break;
        default: run(std::integral_constant<int, 4>{}); break;
      }
      store(c, oy, static_cast<const int32_t*>(acc));
    }
  }
}
#endif  // D2SEG_INT8_DSP

#if defined(D2SEG_INT8_NEON)
template <>
inline void gemm_tile<int8_t, int32_t, kConvCols>(const int8_t* __restrict a,
                                                  const int8_t* __restrict b, long ldb,
                                                  int depth,
                                                  int32_t (&acc)[kConvRows][kConvCols]) {
  neon::gemm_tile_s8(a, b, ldb, depth, acc);  // vmlal_s16, or sdot with dotprod
}
#endif  // D2SEG_INT8_NEON


#if defined(D2SEG_INT8_AVX2)
// AVX2 without VNNI: vpmaddwd multiplies 8 pairs of int16 and adds each pair into an int32
// lane, exact here (|w0*x0 + w1*x1| <= 2*127*128). vpmaddubsw would take bytes directly but
// saturates its int16 pair sums (255*127*2 > 32767), so results would differ from the portable
// kernel's. B is packed once per column block (pack_column_pairs): per tile of kConvCols
// columns and per k pair, 32 bytes holding each column's (b[k][j], b[k+1][j]), sign-extended
// at load into one register per 8 columns. Rows past K and columns past ncols are zero.
inline void pack_column_pairs(const int8_t* __restrict b, long ldb, int K, int ncols,
                              int8_t* __restrict out) {
  static_assert(kConvCols == 16, "the AVX2 tile is 16 columns wide");
  const int depth = packed_depth<int8_t>(K);
  const auto interleave = [](const int8_t* row0, const int8_t* row1, int8_t* to) {
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row0));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(to), _mm_unpacklo_epi8(r0, r1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(to + kConvCols), _mm_unpackhi_epi8(r0, r1));
  };
  for (int j0 = 0; j0 < ncols; j0 += kConvCols) {
    const int cols = std::min(kConvCols, ncols - j0);
    const int8_t* row = b + j0;
    int k = 0;
    if (cols == kConvCols)
      for (; k + 1 < K; k += 2, row += 2 * ldb, out += 2 * kConvCols)
        interleave(row, row + ldb, out);
    // A partial tile, and past the last full pair: copied rows, zero past K and past ncols.
    for (; k < depth; k += 2, row += 2 * ldb, out += 2 * kConvCols) {
      int8_t rows[2][kConvCols] = {};
      for (int i = 0; i < 2; ++i)
        if (k + i < K) std::memcpy(rows[i], row + i * ldb, cols);
      interleave(rows[0], rows[1], out);
    }
  }
}

// acc[r0 + r][j] += sum_k W[r0 + r][k] * B[k][j] over `depth` k (a multiple of 4) of one tile:
// w is the panel's K-block sign-extended to int16 in the packed order (gemm_widened_s8), so a
// row's (w[r][k], w[r][k+1]) is one 32-bit broadcast; pairs is the tile's packed B. Three rows
// per pass: six rows' twelve accumulators plus the operands need all sixteen ymm registers and
// GCC 12 then spills. `first`: the panel's first K-block, whose sums replace acc's (no memset).
template <int r0>
inline void gemm_rows_widened(const int16_t* __restrict w, const int8_t* __restrict pairs,
                              int depth, bool first, int32_t (&acc)[kConvRows][kConvCols]) {
  constexpr int kRows = 3;
  __m256i lo[kRows], hi[kRows];  // columns 0-7 and 8-15
  for (int r = 0; r < kRows; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  const auto widen = [](const int8_t* bytes) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
  };
  const auto step = [&](const int8_t* b, const int16_t* pair) {
    const __m256i v0 = widen(b), v1 = widen(b + kConvCols);
    for (int r = 0; r < kRows; ++r) {
      int32_t wp;
      std::memcpy(&wp, pair + 4 * r, sizeof(wp));
      const __m256i wv = _mm256_set1_epi32(wp);
      lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(v0, wv));
      hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(v1, wv));
    }
  };
  // One packed quad of each row (two pairs) per iteration, pointer steps only; unrolled by 4
  // (GCC 12 does not at -O3): the loop's own adds, compare and branch were ~8% of the int8
  // model's instructions (callgrind: 934.6 -> 824.1 M at 256²).
  const int16_t* pair = w + 4 * r0;
#pragma GCC unroll 4
  for (int k = 0; k < depth; k += 4, pair += kConvRows * 4, pairs += 4 * kConvCols) {
    step(pairs, pair);
    step(pairs + 2 * kConvCols, pair + 2);
  }
  for (int r = 0; r < kRows; ++r) {
    __m256i* out = reinterpret_cast<__m256i*>(&acc[r0 + r][0]);
    if (!first) {
      lo[r] = _mm256_add_epi32(_mm256_loadu_si256(out), lo[r]);
      hi[r] = _mm256_add_epi32(_mm256_loadu_si256(out + 1), hi[r]);
    }
    _mm256_storeu_si256(out, lo[r]);
    _mm256_storeu_si256(out + 1, hi[r]);
  }
}

// gemm_blocked for int8 on AVX2. pack: packed_depth(K) * kColBlock bytes (the host arena's
// column pack, conv_s8_scratch_bytes). Per weight panel and K-block the panel is sign-extended
// once into a stack buffer (3 KB) for every column tile of the block, whose sums stay in a
// per-block accumulator array (6 KB) until the full K is reduced.
template <typename Store>
inline void gemm_widened_s8(const int8_t* __restrict a_packed, const int8_t* __restrict b,
                            long ldb, int M, int K, int ncols, int8_t* __restrict pack,
                            Store store) {
  constexpr int kTiles = (kColBlock + kConvCols - 1) / kConvCols;
  static_assert(kConvRows == 6, "two passes of three rows");
  alignas(32) int16_t widened[kDepthBlock * kConvRows];
  alignas(32) int32_t acc[kTiles][kConvRows][kConvCols];
  const int depth_all = packed_depth<int8_t>(K);
  for (int n0 = 0; n0 < ncols; n0 += kColBlock) {
    const int n1 = std::min(ncols, n0 + kColBlock);
    const int tiles = (n1 - n0 + kConvCols - 1) / kConvCols;
    pack_column_pairs(b + n0, ldb, K, n1 - n0, pack);
    for (int m0 = 0; m0 < M; m0 += kConvRows) {
      const int8_t* panel = a_packed + static_cast<long>(m0) * depth_all;
      // K-blocks of packed (zero-padded) depth: kDepthBlock is a multiple of 4.
      for (int k0 = 0; k0 < depth_all; k0 += kDepthBlock) {
        const int depth = std::min(kDepthBlock, depth_all - k0);
        const int8_t* a = panel + k0 * kConvRows;
        for (int i = 0; i < depth * kConvRows; ++i) widened[i] = a[i];
        for (int t = 0; t < tiles; ++t) {
          const int8_t* pairs = pack + (static_cast<long>(t) * depth_all + k0) * kConvCols;
          gemm_rows_widened<0>(widened, pairs, depth, k0 == 0, acc[t]);
          gemm_rows_widened<3>(widened, pairs, depth, k0 == 0, acc[t]);
        }
      }
      for (int t = 0; t < tiles; ++t)
        store(m0, n0 + t * kConvCols, std::min(kConvCols, n1 - n0 - t * kConvCols), acc[t]);
    }
  }
}
#endif  // D2SEG_INT8_AVX2

#if defined(D2SEG_INT8_VNNI)
// [low | high] as one 512-bit register. Masked inserts with a defined source: the unmasked
// _mm512_inserti64x4 / cast / zext intrinsics trip GCC 12's -Wmaybe-uninitialized.
inline __m512i join(__m256i low, __m256i high) {
  const __mmask8 all = static_cast<__mmask8>(0xFF);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i base = _mm512_mask_inserti64x4(zero, all, zero, low, 0);
  return _mm512_mask_inserti64x4(base, all, base, high, 1);
}

// AVX-512 VNNI: vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the four
// products to an int32 lane, 64 MACs per instruction. B is packed once per column block (not
// once per weight panel): per tile of kConvCols columns and per k-quad, two 64-byte registers
// whose lane j holds column j's four bytes b[k..k+3][j] + 128 (unsigned). Rows past K and
// columns past ncols are packed as 0 + 128 and meet zero weights or are never stored.
inline void pack_columns_u8(const int8_t* __restrict b, long ldb, int K, int ncols,
                            uint8_t* __restrict out) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  // After the byte/word unpacks lane i of the first register is column
  // {0-3, 16-19, 4-7, 20-23}[i], of the second {8-11, 24-27, 12-15, 28-31}[i].
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i second =
      _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int j0 = 0; j0 < ncols; j0 += kConvCols) {
    const int cols = std::min(kConvCols, ncols - j0);
    const __mmask32 valid = cols == kConvCols ? ~__mmask32{0} : (__mmask32{1} << cols) - 1;
    for (int k = 0; k < K; k += 4) {
      __m256i rows[4];
      for (int i = 0; i < 4; ++i)
        rows[i] = k + i < K ? _mm256_maskz_loadu_epi8(valid, b + (k + i) * ldb + j0)
                            : _mm256_setzero_si256();
      const __m256i t0 = _mm256_unpacklo_epi8(rows[0], rows[1]);
      const __m256i t1 = _mm256_unpackhi_epi8(rows[0], rows[1]);
      const __m256i t2 = _mm256_unpacklo_epi8(rows[2], rows[3]);
      const __m256i t3 = _mm256_unpackhi_epi8(rows[2], rows[3]);
      const __m512i v0 = join(_mm256_unpacklo_epi16(t0, t2), _mm256_unpackhi_epi16(t0, t2));
      const __m512i v1 = join(_mm256_unpacklo_epi16(t1, t3), _mm256_unpackhi_epi16(t1, t3));
      _mm512_storeu_si512(out, _mm512_xor_si512(_mm512_permutex2var_epi32(v0, first, v1), flip));
      _mm512_storeu_si512(out + 64,
                          _mm512_xor_si512(_mm512_permutex2var_epi32(v0, second, v1), flip));
      out += 2 * 64;
    }
  }
}

// A (M x K, packed panels) times columns [0, ncols) of B: gemm_blocked for int8 on VNNI.
// pack: packed_depth(K) * kColBlock bytes. The +128 of the unsigned columns is removed with
// 128 * sum_k W[r][k], summed once per panel.
template <typename Store>
inline void gemm_packed_s8(const int8_t* __restrict a_packed, const int8_t* __restrict b,
                           long ldb, int M, int K, int ncols, uint8_t* __restrict pack,
                           Store store) {
  static_assert(kConvCols == 32, "the VNNI tile is 32 columns wide");
  static_assert(kConvRows <= 8, "weight sums are one 8-lane register");
  constexpr __mmask32 kPanelQuad = (1u << (4 * kConvRows)) - 1;
  const int quads = packed_depth<int8_t>(K) / 4;
  const __m256i ones = _mm256_set1_epi8(1);
  for (int n0 = 0; n0 < ncols; n0 += kColBlock) {
    const int n1 = std::min(ncols, n0 + kColBlock);
    pack_columns_u8(b + n0, ldb, K, n1 - n0, pack);
    for (int m0 = 0; m0 < M; m0 += kConvRows) {
      const int8_t* panel = a_packed + static_cast<long>(m0) * quads * 4;
      __m256i weight_sums = _mm256_setzero_si256();
      for (int q = 0; q < quads; ++q) {
        const __m256i quad = _mm256_maskz_loadu_epi8(kPanelQuad, panel + q * kConvRows * 4);
        weight_sums = _mm256_dpbusd_epi32(weight_sums, ones, quad);
      }
      int32_t sums[8];
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), weight_sums);
      for (int j0 = n0; j0 < n1; j0 += kConvCols) {
        const uint8_t* tile = pack + static_cast<long>(j0 - n0) / kConvCols * quads * 2 * 64;
        __m512i lo[kConvRows], hi[kConvRows];
        for (int r = 0; r < kConvRows; ++r) lo[r] = hi[r] = _mm512_setzero_si512();
        for (int q = 0; q < quads; ++q) {
          const __m512i v0 = _mm512_loadu_si512(tile + q * 2 * 64);
          const __m512i v1 = _mm512_loadu_si512(tile + q * 2 * 64 + 64);
          const int8_t* quad = panel + q * kConvRows * 4;
          for (int r = 0; r < kConvRows; ++r) {
            int32_t wq;
            std::memcpy(&wq, quad + 4 * r, sizeof(wq));
            const __m512i w = _mm512_set1_epi32(wq);
            lo[r] = _mm512_dpbusd_epi32(lo[r], v0, w);
            hi[r] = _mm512_dpbusd_epi32(hi[r], v1, w);
          }
        }
        int32_t acc[kConvRows][kConvCols];
        for (int r = 0; r < kConvRows; ++r) {
          const __m512i shift = _mm512_set1_epi32(128 * sums[r]);
          _mm512_storeu_si512(&acc[r][0], _mm512_sub_epi32(lo[r], shift));
          _mm512_storeu_si512(&acc[r][16], _mm512_sub_epi32(hi[r], shift));
        }
        store(m0, j0, std::min(kConvCols, n1 - j0), acc);
      }
    }
  }
}
#endif  // D2SEG_INT8_VNNI

// A (M x K, packed panels) times columns [0, ncols) of B (K rows of stride ldb), blocked over
// K. Each finished tile is handed to store(row0, col0, cols, acc) with the full-K sums.
template <typename T, typename Acc, typename Store>
inline void gemm_blocked(const T* __restrict a_packed, const T* __restrict b, long ldb, int M,
                         int K, int ncols, Store store) {
  for (int n0 = 0; n0 < ncols; n0 += kColBlock) {
    const int n1 = std::min(ncols, n0 + kColBlock);
    for (int m0 = 0; m0 < M; m0 += kConvRows) {
      const T* panel = a_packed + static_cast<long>(m0) * packed_depth<T>(K);
      for (int j0 = n0; j0 < n1; j0 += kConvCols) {
        const int cols = std::min(kConvCols, n1 - j0);
        Acc acc[kConvRows][kConvCols] = {};
        for (int k0 = 0; k0 < K; k0 += kDepthBlock) {
          const int depth = std::min(kDepthBlock, K - k0);
          const T* a = panel + k0 * kConvRows;
          const T* bb = b + k0 * ldb + j0;
          if (cols == kConvCols) {
            gemm_tile<T, Acc, kConvCols>(a, bb, ldb, depth, acc);
          } else {
            for (int k = 0; k < depth; ++k)
              for (int r = 0; r < kConvRows; ++r)
                for (int j = 0; j < cols; ++j)
                  acc[r][j] += static_cast<Acc>(packed_weight(a, k, r)) *
                               static_cast<Acc>(bb[k * ldb + j]);
          }
        }
        store(m0, j0, cols, acc);
      }
    }
  }
}

// Runs the convolution GEMM of each group over blocks of output rows: B is the input itself
// (pointwise) or the block's im2col columns. store(group, row0, col0, cols, acc) gets absolute
// output pixel indices.
template <typename T, typename Acc, typename Store>
inline void conv_gemm(const T* __restrict x, const ConvShape& s, const T* __restrict w_packed,
                      T pad, T* __restrict col, Store store) {
  const int cg = s.C / s.groups, mg = s.M / s.groups;
  const int k = cg * s.kh * s.kw, n = s.OH * s.OW;
  const int panel_rows = (mg + kConvRows - 1) / kConvRows * kConvRows;
  const bool pointwise = conv_is_pointwise(s);
  const int block_rows = pointwise ? s.OH : conv_block_rows(s);
  for (int g = 0; g < s.groups; ++g) {
    const T* xg = x + static_cast<long>(g) * cg * s.H * s.W;
    const T* wg = w_packed + static_cast<long>(g) * panel_rows * packed_depth<T>(k);
    for (int oy0 = 0; oy0 < s.OH; oy0 += block_rows) {
      const int oy1 = std::min(s.OH, oy0 + block_rows);
      const int first = oy0 * s.OW, cols = (oy1 - oy0) * s.OW;
      if (!pointwise) im2col<T>(xg, cg, s, oy0, oy1, pad, col);
      const T* b = pointwise ? xg : col;
      const long ldb = pointwise ? n : cols;
      const auto store_block = [&](int m0, int j0, int width,
                                   const Acc(&acc)[kConvRows][kConvCols]) {
        store(g, m0, first + j0, width, acc);
      };
#if defined(D2SEG_INT8_VNNI)
      if constexpr (std::is_same_v<T, int8_t>) {
        // The column panels follow the im2col columns in the scratch (conv_s8_scratch_bytes).
        uint8_t* pack = reinterpret_cast<uint8_t*>(col + conv_col_elements(s));
        gemm_packed_s8(wg, b, ldb, mg, k, cols, pack, store_block);
      } else
#endif
#if defined(D2SEG_INT8_AVX2)
      if constexpr (std::is_same_v<T, int8_t>) {
        // The column pairs follow the im2col columns in the scratch (conv_s8_scratch_bytes).
        gemm_widened_s8(wg, b, ldb, mg, k, cols, col + conv_col_elements(s), store_block);
      } else
#endif
      gemm_blocked<T, Acc>(wg, b, ldb, mg, k, cols, store_block);
    }
  }
}

// y = clamp(conv(x, w) + bias [+ residual], act_min, act_max) (ReLU: [0, FLT_MAX], ReLU6:
// [0, 6], none: [-FLT_MAX, FLT_MAX]); col: conv_col_elements(s) floats of scratch.
inline void conv2d_f32(const float* __restrict x, const ConvShape& s,
                       const float* __restrict w_packed, const float* __restrict bias,
                       const float* __restrict residual, float act_min, float act_max,
                       float* __restrict y, float* __restrict col) {
  const int mg = s.M / s.groups;
  const long n = static_cast<long>(s.OH) * s.OW;
  conv_gemm<float, float>(
      x, s, w_packed, 0.0f, col,
      [&](int g, int m0, int j0, int cols, const float(&acc)[kConvRows][kConvCols]) {
        for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
          const int m = g * mg + m0 + r;
          float* out = y + m * n + j0;
          const float* res = residual ? residual + m * n + j0 : nullptr;
          const float bv = bias[m];
          for (int j = 0; j < cols; ++j) {
            float v = acc[r][j] + bv;
            if (res) v += res[j];
            out[j] = std::min(std::max(v, act_min), act_max);
          }
        }
      });
}

// Per-output-channel requantisation of an int8 convolution (TFLite int8 spec).
struct ConvQuant {
  int32_t input_zero;           // input zero point (also the im2col padding value)
  int32_t output_zero;          // output zero point
  int32_t act_min, act_max;     // output clamp (act_min = output_zero with a fused ReLU)
  const int32_t* multiplier;    // per output channel, Q31
  const int32_t* shift;         // per output channel, power-of-two exponent
};

// int8 convolution: int32 accumulation of int8 x int8, bias (zero-point correction folded in
// at generation time) and fixed-point requantisation; no float. col: conv_s8_scratch_bytes(s).
inline void conv2d_s8(const int8_t* __restrict x, const ConvShape& s,
                      const int8_t* __restrict w_packed, const int32_t* __restrict bias,
                      const ConvQuant& q, int8_t* __restrict y, int8_t* __restrict col) {
  const int mg = s.M / s.groups;
  const long n = static_cast<long>(s.OH) * s.OW;
  conv_gemm<int8_t, int32_t>(
      x, s, w_packed, static_cast<int8_t>(q.input_zero), col,
      [&](int g, int m0, int j0, int cols, const int32_t(&acc)[kConvRows][kConvCols]) {
        for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
          const int m = g * mg + m0 + r;
          requantize_row(acc[r], cols, bias[m], q.multiplier[m], q.shift[m], q.output_zero,
                         q.act_min, q.act_max, y + m * n + j0);
        }
      });
}

// Depthwise convolution (groups == C == M), computed directly: one output row of one channel
// at a time, accumulated in acc (OW elements of scratch) over the kh x kw taps, each tap a
// contiguous (stride 1) or strided run of an input row, so the inner loop vectorises and no
// im2col buffer is needed. w: C x kh x kw (ONNX layout, unpacked). Taps outside the image read
// `pad` (0 for float; the input zero point for int8, whose bias folds in -zero * sum(w)).
// store(c, oy, acc) receives each finished row.
template <typename T, typename Acc, typename Store>
inline void depthwise_conv(const T* __restrict x, const ConvShape& s, const T* __restrict w,
                           T pad, Acc* __restrict acc, Store store) {
  const int in_h = s.H, in_w = s.W, out_w = s.OW, kh = s.kh, kw = s.kw;
  const int sh = s.sh, sw = s.sw, pt = s.pt, pl = s.pl, dh = s.dh, dw = s.dw;
  const Acc pad_value = static_cast<Acc>(pad);
  for (int c = 0; c < s.C; ++c) {
    const T* xc = x + static_cast<long>(c) * in_h * in_w;
    const T* wc = w + static_cast<long>(c) * kh * kw;
    for (int oy = 0; oy < s.OH; ++oy) {
      for (int ox = 0; ox < out_w; ++ox) acc[ox] = 0;
      for (int ky = 0; ky < kh; ++ky) {
        const int iy = oy * sh - pt + ky * dh;
        const bool row_inside = iy >= 0 && iy < in_h;
        const T* row = xc + static_cast<long>(row_inside ? iy : 0) * in_w;
        for (int kx = 0; kx < kw; ++kx) {
          const Acc wv = static_cast<Acc>(wc[ky * kw + kx]);
          const int x0 = kx * dw - pl;
          int first = 0, last = 0;  // output columns [first, last) read inside the row
          if (row_inside) {
            first = std::min(out_w, x0 < 0 ? (-x0 + sw - 1) / sw : 0);
            const int inside = x0 >= in_w ? 0 : (in_w - 1 - x0) / sw + 1;
            last = std::max(first, std::min(out_w, inside));
          }
          if (pad_value != 0) {
            const Acc padded = wv * pad_value;
            for (int ox = 0; ox < first; ++ox) acc[ox] += padded;
            for (int ox = last; ox < out_w; ++ox) acc[ox] += padded;
          }
          if (sw == 1) {
            const T* in = row + x0;
            for (int ox = first; ox < last; ++ox) acc[ox] += wv * static_cast<Acc>(in[ox]);
          } else {
            for (int ox = first; ox < last; ++ox)
              acc[ox] += wv * static_cast<Acc>(row[ox * sw + x0]);
          }
        }
      }
      store(c, oy, static_cast<const Acc*>(acc));
    }
  }
}

// Float depthwise convolution: y = clamp(dw(x, w) + bias, act_min, act_max); acc: OW floats.
inline void depthwise_conv2d_f32(const float* __restrict x, const ConvShape& s,
                                 const float* __restrict w, const float* __restrict bias,
                                 float act_min, float act_max, float* __restrict y,
                                 float* __restrict acc) {
  const int out_w = s.OW;
  depthwise_conv<float, float>(x, s, w, 0.0f, acc, [&](int c, int oy, const float* row) {
    float* out = y + (static_cast<long>(c) * s.OH + oy) * out_w;
    const float b = bias[c];
    for (int ox = 0; ox < out_w; ++ox) out[ox] = std::min(std::max(row[ox] + b, act_min), act_max);
  });
}

// int8 depthwise convolution with per-channel requantisation; acc: OW int32 of scratch.
inline void depthwise_conv2d_s8(const int8_t* __restrict x, const ConvShape& s,
                                const int8_t* __restrict w, const int32_t* __restrict bias,
                                const ConvQuant& q, int8_t* __restrict y,
                                int32_t* __restrict acc) {
  const auto store = [&](int c, int oy, const int32_t* row) {
    requantize_row(row, s.OW, bias[c], q.multiplier[c], q.shift[c], q.output_zero, q.act_min,
                   q.act_max, y + (static_cast<long>(c) * s.OH + oy) * s.OW);
  };
  const int8_t pad = static_cast<int8_t>(q.input_zero);
#if defined(D2SEG_INT8_DSP)
  if (depthwise_dsp_fits(s)) return depthwise_conv_dsp(x, s, w, pad, acc, store);
#endif
  depthwise_conv<int8_t, int32_t>(x, s, w, pad, acc, store);
}

// ConvTranspose (group 1): y[m][iy*sh - pt + ky*dh][ix*sw - pl + kx*dw] += x[c][iy][ix] *
// w[c][m][ky][kx], then + bias. w keeps ONNX's C x M x kh x kw layout.
inline void conv_transpose2d_f32(const float* __restrict x, const ConvShape& s,
                                 const float* __restrict w, const float* __restrict bias,
                                 float* __restrict y) {
  const long plane = static_cast<long>(s.OH) * s.OW;
  for (int m = 0; m < s.M; ++m) std::fill(y + m * plane, y + (m + 1) * plane, bias[m]);
  for (int c = 0; c < s.C; ++c) {
    for (int m = 0; m < s.M; ++m) {
      const float* wk = w + (static_cast<long>(c) * s.M + m) * s.kh * s.kw;
      float* ym = y + m * plane;
      for (int iy = 0; iy < s.H; ++iy) {
        const float* xr = x + (static_cast<long>(c) * s.H + iy) * s.W;
        for (int ky = 0; ky < s.kh; ++ky) {
          const int oy = iy * s.sh - s.pt + ky * s.dh;
          if (oy < 0 || oy >= s.OH) continue;
          for (int kx = 0; kx < s.kw; ++kx) {
            const float wv = wk[ky * s.kw + kx];
            for (int ix = 0; ix < s.W; ++ix) {
              const int ox = ix * s.sw - s.pl + kx * s.dw;
              if (ox >= 0 && ox < s.OW) ym[oy * s.OW + ox] += xr[ix] * wv;
            }
          }
        }
      }
    }
  }
}

}  // namespace d2seg_rt

#endif  // D2SEG_CONV_H
