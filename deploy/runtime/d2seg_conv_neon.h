// NEON int8 GEMM tile of the d2seg edge runtime, for A-class Arm CPUs (AArch64, or AArch32 with
// NEON): d2seg_conv.h dispatches its int8 gemm_tile here under __ARM_NEON. Operands are those
// of the portable tile: `a` one packed weight panel of Rows output channels, laid out
// [k / 4][r][k % 4] (one 4-byte quad per row and k-quad, k past K zero: see packed_weight in
// d2seg_conv.h), `b` depth rows of 8 contiguous int8 columns, ldb bytes apart. Every product
// is an exact int8 x int8 in int32 and every sum an int32 addition, as in the portable kernel
// (only the order differs), so outputs are bit-identical to it.
//   - baseline NEON: weights and columns widened to int16 once per k-quad, then vmlal_lane_s16
//     (4 widening multiply-accumulates of int16 into int32 per instruction);
//   - __ARM_FEATURE_DOTPROD (Armv8.2-A dotprod, e.g. -march=armv8.2-a+dotprod): the 4 B rows of
//     a k-quad are transposed into column quads, and vdotq_lane_s32 adds a row's weight quad
//     times 4 columns' quads in one instruction (16 multiply-accumulates).
// Rows past `depth` (a last K-block not a multiple of 4) read as zero, so no scalar tail runs.
#ifndef D2SEG_CONV_NEON_H
#define D2SEG_CONV_NEON_H

#include <arm_neon.h>

#include <cstdint>
#include <utility>

namespace d2seg_rt {
namespace neon {

constexpr int kCols = 8;  // columns of a tile: two int32x4 accumulators per row

// The 4 B rows of a k-quad (8 columns each, from b), zero for rows i >= rows.
struct Quad {
  int8x8_t row[4];
};

inline Quad load_quad(const int8_t* __restrict b, long ldb, int rows) {
  Quad q;
  for (int i = 0; i < 4; ++i) q.row[i] = i < rows ? vld1_s8(b + i * ldb) : vdup_n_s8(0);
  return q;
}

#if defined(__ARM_FEATURE_DOTPROD)
// Column quads of a k-quad: cols[0] holds columns 0-3, cols[1] columns 4-7, each column as its
// 4 consecutive k bytes (b[k][j], b[k+1][j], b[k+2][j], b[k+3][j]), what vdot multiplies by a
// row's weight quad.
struct ColumnQuads {
  int8x16_t cols[2];
};

inline ColumnQuads transpose(const Quad& q) {
  const int8x8x2_t r01 = vzip_s8(q.row[0], q.row[1]);  // (b[k][j], b[k+1][j]) per column j
  const int8x8x2_t r23 = vzip_s8(q.row[2], q.row[3]);  // (b[k+2][j], b[k+3][j])
  ColumnQuads t;
  for (int h = 0; h < 2; ++h) {
    const int16x4x2_t quads =
        vzip_s16(vreinterpret_s16_s8(r01.val[h]), vreinterpret_s16_s8(r23.val[h]));
    t.cols[h] = vcombine_s8(vreinterpret_s8_s16(quads.val[0]), vreinterpret_s8_s16(quads.val[1]));
  }
  return t;
}

// Row R of the tile += its weight quad (lane R % 2 of the pair of rows R & ~1, R | 1) times the
// column quads.
template <int R, int Rows>
inline void dot_row(int32x4_t (&lo)[Rows], int32x4_t (&hi)[Rows], const ColumnQuads& t,
                    const int8x8_t (&pairs)[Rows / 2]) {
  lo[R] = vdotq_lane_s32(lo[R], t.cols[0], pairs[R / 2], R % 2);
  hi[R] = vdotq_lane_s32(hi[R], t.cols[1], pairs[R / 2], R % 2);
}

template <int Rows, int... R>
inline void quad_step(int32x4_t (&lo)[Rows], int32x4_t (&hi)[Rows], const Quad& q,
                      const int8_t* __restrict weights, std::integer_sequence<int, R...>) {
  const ColumnQuads t = transpose(q);
  int8x8_t pairs[Rows / 2];
  for (int p = 0; p < Rows / 2; ++p) pairs[p] = vld1_s8(weights + 8 * p);
  (dot_row<R>(lo, hi, t, pairs), ...);
}
#else
// Row R of the tile += sum over the quad's 4 k of w[R][k] * b[k][0..7]: the row's 4 weights
// are lanes of one int16x4 (half of the widened pair of rows R & ~1, R | 1).
template <int R, int Rows>
inline void mlal_row(int32x4_t (&lo)[Rows], int32x4_t (&hi)[Rows], const int16x8_t (&b16)[4],
                     const int16x8_t (&pairs)[Rows / 2]) {
  const int16x4_t w = R % 2 ? vget_high_s16(pairs[R / 2]) : vget_low_s16(pairs[R / 2]);
  lo[R] = vmlal_lane_s16(lo[R], vget_low_s16(b16[0]), w, 0);
  hi[R] = vmlal_lane_s16(hi[R], vget_high_s16(b16[0]), w, 0);
  lo[R] = vmlal_lane_s16(lo[R], vget_low_s16(b16[1]), w, 1);
  hi[R] = vmlal_lane_s16(hi[R], vget_high_s16(b16[1]), w, 1);
  lo[R] = vmlal_lane_s16(lo[R], vget_low_s16(b16[2]), w, 2);
  hi[R] = vmlal_lane_s16(hi[R], vget_high_s16(b16[2]), w, 2);
  lo[R] = vmlal_lane_s16(lo[R], vget_low_s16(b16[3]), w, 3);
  hi[R] = vmlal_lane_s16(hi[R], vget_high_s16(b16[3]), w, 3);
}

template <int Rows, int... R>
inline void quad_step(int32x4_t (&lo)[Rows], int32x4_t (&hi)[Rows], const Quad& q,
                      const int8_t* __restrict weights, std::integer_sequence<int, R...>) {
  int16x8_t b16[4], pairs[Rows / 2];
  for (int i = 0; i < 4; ++i) b16[i] = vmovl_s8(q.row[i]);
  for (int p = 0; p < Rows / 2; ++p) pairs[p] = vmovl_s8(vld1_s8(weights + 8 * p));
  (mlal_row<R>(lo, hi, b16, pairs), ...);
}
#endif  // __ARM_FEATURE_DOTPROD

// acc[r][j] += sum_k W[r][k] * b[k*ldb + j] for k in [0, depth), j < 8 (a: packed panel).
template <int Rows, int Cols>
inline void gemm_tile_s8(const int8_t* __restrict a, const int8_t* __restrict b, long ldb,
                         int depth, int32_t (&acc)[Rows][Cols]) {
  static_assert(Cols == kCols, "the NEON int8 tile is 8 columns wide (two int32x4 per row)");
  static_assert(Rows % 2 == 0, "weight quads are loaded in pairs of rows");
  int32x4_t lo[Rows], hi[Rows];
  for (int r = 0; r < Rows; ++r) {
    lo[r] = vld1q_s32(&acc[r][0]);
    hi[r] = vld1q_s32(&acc[r][4]);
  }
  constexpr auto rows = std::make_integer_sequence<int, Rows>{};
  int k = 0;
  for (; k + 4 <= depth; k += 4, a += Rows * 4)
    quad_step<Rows>(lo, hi, load_quad(b + k * ldb, ldb, 4), a, rows);
  if (k < depth) quad_step<Rows>(lo, hi, load_quad(b + k * ldb, ldb, depth - k), a, rows);
  for (int r = 0; r < Rows; ++r) {
    vst1q_s32(&acc[r][0], lo[r]);
    vst1q_s32(&acc[r][4], hi[r]);
  }
}

}  // namespace neon
}  // namespace d2seg_rt

#endif  // D2SEG_CONV_NEON_H
