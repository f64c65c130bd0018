// Helpers shared by rnnx's native CPU kernels (rnn.cpp, pararnn.cpp, chunk.cpp): the
// float exponential and the gate nonlinearities built on it (scalar, and AVX2 vectors of
// eight floats), comparisons that keep NaN, and a guard that flushes denormals.
//
// NaN in, NaN out. IEEE min/max functions (std::fmin/fmax) and the SSE/AVX min/max
// instructions return the other operand when one is NaN, so a clamp or a maximum written
// with them turns a NaN into a finite number; PyTorch's maximum, relu and exp return NaN.
// Everything here propagates NaN as PyTorch does: clamps put the argument second (the
// instructions return their second operand when one is NaN), and the maximum of two
// values that may both be NaN adds an "unordered" mask. Infinities follow IEEE rules,
// except that exp saturates at its clamp (exp(-inf) is 1.6e-38 instead of 0 and
// exp(+inf) is 1.7e38 instead of inf): the kernels only take exp of arguments <= 0, and
// the gates built on it (sigmoid, tanh) reach their limits exactly.
//
// The build cache key includes the text of this header, so editing it rebuilds every
// kernel (rnnx/_native/__init__.py).

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNX_AVX2 1
#endif
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace rnnx {

using i64 = int64_t;

// ---------------------------------------------------------------------------- scalar

// max(a, b) and min(a, b) that return NaN when either argument is NaN (as torch.maximum).
template <typename T>
inline T max_nan(T a, T b) {
  return (a > b || a != a) ? a : b;
}
template <typename T>
inline T min_nan(T a, T b) {
  return (a < b || a != a) ? a : b;
}
// x clamped to [lo, hi]; NaN stays NaN (both comparisons are false).
template <typename T>
inline T clamp_nan(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// exp for float: Cody-Waite range reduction and the Cephes polynomial (about 1 ulp on the
// clamped range [-87, 88]), written so that the compiler vectorises the loops that call
// it (the libm expf is a scalar call per element). 2^n is formed by adding n to
// 2^23 + 127 and shifting the low bits into the exponent, which needs no float-to-int
// conversion (undefined for NaN in C++): a NaN argument gives a NaN result.
inline float exp_approx(float x) {
  x = clamp_nan(x, -87.0f, 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float biased = n + 8388735.0f;  // 2^23 + 127: the low mantissa bits hold n + 127
  uint32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  bits <<= 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float exp_of(float x) { return exp_approx(x); }
inline double exp_of(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid_of(T x) {
  return T(1) / (T(1) + exp_of(-x));
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|) <= 1: no overflow.
inline float tanh_of(float x) {
  const float e = exp_approx(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}
inline double tanh_of(double x) { return std::tanh(x); }

// ---------------------------------------------------------------------------- AVX2
#if RNNX_AVX2

// max(a, b), NaN if either is NaN: an all-ones "unordered" lane is a NaN.
inline __m256 max_nan_ps(__m256 a, __m256 b) {
  return _mm256_or_ps(_mm256_max_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}

// exp by Cody-Waite range reduction and a degree-6 polynomial (Cephes expf), ~1 ulp on
// [-87.3, 88.0]. The clamp puts the argument second, so NaN propagates.
inline __m256 exp_ps(__m256 a) {
  __m256 x = _mm256_min_ps(_mm256_set1_ps(88.02969193f),
                           _mm256_max_ps(_mm256_set1_ps(-87.33654475f), a));
  __m256 fx = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// log of x > 0 (Cephes logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)), polynomial in m-1.
// NaN gives NaN (the bit manipulations alone would return a finite number).
inline __m256 log_ps(__m256 x0) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 x = _mm256_max_ps(_mm256_castsi256_ps(_mm256_set1_epi32(0x00800000)), x0);
  __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(0x7f)));
  __m256 m = _mm256_or_ps(
      _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000))), _mm256_set1_ps(0.5f));
  // m in [0.5, 1); x = m 2^(e+1). Move m < sqrt(1/2) up by one octave.
  e = _mm256_add_ps(e, one);
  __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  __m256 tmp = _mm256_and_ps(m, small);
  m = _mm256_sub_ps(m, one);
  e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
  m = _mm256_add_ps(m, tmp);
  __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  m = _mm256_add_ps(m, y);
  const __m256 r = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), m);
  return _mm256_or_ps(r, _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q));
}

inline __m256 abs_ps(__m256 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no overflow, abs. error ~1e-7.
inline __m256 tanh_ps(__m256 a) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = exp_ps(_mm256_mul_ps(abs_ps(a), _mm256_set1_ps(-2.0f)));
  const __m256 r = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  return _mm256_or_ps(r, _mm256_and_ps(a, _mm256_set1_ps(-0.0f)));
}
// sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|).
inline __m256 sigmoid_ps(__m256 a) {
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), abs_ps(a)));
  const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  return _mm256_blendv_ps(r, _mm256_mul_ps(e, r),
                          _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_LT_OQ));
}
// log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)); log1p(u) = log(w) - ((w - 1) - u) / w,
// w = 1 + u, which corrects the rounding of w (exact for tiny u).
inline __m256 logsigmoid_ps(__m256 a) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 u = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), abs_ps(a)));
  const __m256 w = _mm256_add_ps(one, u);
  const __m256 l1p =
      _mm256_sub_ps(log_ps(w), _mm256_div_ps(_mm256_sub_ps(_mm256_sub_ps(w, one), u), w));
  return _mm256_sub_ps(_mm256_min_ps(_mm256_setzero_ps(), a), l1p);
}

#endif  // RNNX_AVX2

// ---------------------------------------------------------------------------- threads

// Flush denormals to zero in this thread for the lifetime of the guard (products of
// decays that fall below the normal range would otherwise take the slow path).
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

}  // namespace rnnx
