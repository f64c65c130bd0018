// Linear recurrence h_t = A_t h_{t-1} + x_t on the CPU: forward and adjoint sweeps.
//
// Layout (batch-first, contiguous; A may be broadcast over batch and/or time):
//   diagonal : x, h, lam (B, L, D); A row of (b, t) starts at element b*sab + t*sat
//   block    : x, h, lam (B, L, G, K); A (.., G, K, K) row-major, same stride rule
//   h0, gF, gh0 : (B, D) or (B, G, K); nullptr means zeros / not wanted
// Strides sab, sat (in elements, complex counted as one) are 0 where A is broadcast.
//
// The forward sweep writes every state. The adjoint sweep (for backward) runs the
// conjugate-transposed recurrence in the opposite direction,
//   lam_t = g_t + A_{t+1}^H lam_{t+1},   lam_last = g_last + gF,
// and in the same pass forms dL/dA_t = lam_t conj(h_{t-1})^T (summed over any
// broadcast dimension of A) and dL/dh0 = A_first^H lam_first.
//
// Speed: work is split into units (batch element x feature block) over OpenMP threads;
// the time loop in a unit keeps its running state in a small buffer in L1 and streams
// rows of a and x in, rows of h out. For outputs larger than the caches the rows are
// written with non-temporal stores, so writing h costs no read-for-ownership and the
// forward pass moves about the bytes of one elementwise op (read a and x, write h).
// Complex numbers are interleaved (re, im) pairs, as torch stores them.

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

using i64 = int64_t;

namespace {

constexpr i64 kBufBytes = 4096;               // running-state buffer per unit
constexpr i64 kStreamBytes = i64(16) << 20;   // outputs above this use streaming stores

struct Units {
  i64 per_row;  // feature blocks per batch element
  i64 blk;      // features per block
};

// About 4 units per thread; blocks no larger than the state buffer. When the A-gradient
// is summed over the batch (batch_in_unit), a unit owns its feature block for every
// batch element, so no two threads write the same gradient entry.
inline Units make_units(i64 B, i64 D, int nthreads, bool batch_in_unit, i64 align, i64 max_blk) {
  const i64 rows = batch_in_unit ? 1 : B;
  const i64 want = 4 * static_cast<i64>(std::max(nthreads, 1));
  i64 per_row = std::max<i64>((want + rows - 1) / rows, (D + max_blk - 1) / max_blk);
  per_row = std::clamp<i64>(per_row, 1, std::max<i64>(1, (D + align - 1) / align));
  i64 blk = (D + per_row - 1) / per_row;
  blk = std::min(max_blk, (blk + align - 1) / align * align);
  per_row = (D + blk - 1) / blk;
  return {per_row, blk};
}

inline int threads_for(i64 work, int nthreads) {
  return work < (i64(1) << 17) ? 1 : std::max(nthreads, 1);
}

// dst[0:n] = src[0:n]; non-temporal where aligned when `stream` (src is the L1 buffer).
template <typename T>
inline void store_row(T* __restrict dst, const T* __restrict src, i64 n, bool stream) {
#if defined(__AVX__)
  if (stream) {
    i64 j = 0;
    while (j < n && (reinterpret_cast<uintptr_t>(dst + j) & 31)) {
      dst[j] = src[j];
      ++j;
    }
    if constexpr (sizeof(T) == 4) {
      for (; j + 8 <= n; j += 8)
        _mm256_stream_ps(reinterpret_cast<float*>(dst + j),
                         _mm256_loadu_ps(reinterpret_cast<const float*>(src + j)));
    } else {
      for (; j + 4 <= n; j += 4)
        _mm256_stream_pd(reinterpret_cast<double*>(dst + j),
                         _mm256_loadu_pd(reinterpret_cast<const double*>(src + j)));
    }
    for (; j < n; ++j) dst[j] = src[j];
    return;
  }
#else
  (void)stream;
#endif
  std::memcpy(dst, src, sizeof(T) * n);
}

inline void store_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// s = A s + x (diagonal), in place on the L1 buffer s.
template <typename T, bool Complex>
inline void diag_step(T* __restrict s, const T* __restrict a, const T* __restrict x, i64 n) {
  if constexpr (Complex) {
    for (i64 j = 0; j < n; ++j) {
      const T ar = a[2 * j], ai = a[2 * j + 1], sr = s[2 * j], si = s[2 * j + 1];
      s[2 * j] = ar * sr - ai * si + x[2 * j];
      s[2 * j + 1] = ar * si + ai * sr + x[2 * j + 1];
    }
  } else {
    for (i64 j = 0; j < n; ++j) s[j] = a[j] * s[j] + x[j];
  }
}

// s = conj(A) s + x (diagonal adjoint step).
template <typename T, bool Complex>
inline void diag_step_conj(T* __restrict s, const T* __restrict a, const T* __restrict x, i64 n) {
  if constexpr (Complex) {
    for (i64 j = 0; j < n; ++j) {
      const T ar = a[2 * j], ai = a[2 * j + 1], sr = s[2 * j], si = s[2 * j + 1];
      s[2 * j] = ar * sr + ai * si + x[2 * j];
      s[2 * j + 1] = ar * si - ai * sr + x[2 * j + 1];
    }
  } else {
    for (i64 j = 0; j < n; ++j) s[j] = a[j] * s[j] + x[j];
  }
}

// ----------------------------------------------------------------------------------
// Diagonal, real or complex.

template <typename T, bool Complex>
void diag_forward(const T* a, i64 sab, i64 sat, const T* x, const T* h0, T* h, i64 B, i64 L,
                  i64 D, int reverse, int nthreads) {
  constexpr i64 C = Complex ? 2 : 1;
  const Units u = make_units(B, D, nthreads, false, 16, kBufBytes / i64(sizeof(T) * C));
  const int nt = threads_for(B * L * D, nthreads);
  const bool stream = B * L * D * C * i64(sizeof(T)) >= kStreamBytes;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * u.per_row; ++unit) {
    alignas(64) T s[kBufBytes / sizeof(T)];
    const i64 b = unit / u.per_row;
    const i64 d0 = (unit % u.per_row) * u.blk;
    const i64 n = std::min(D, d0 + u.blk) - d0;
    if (n <= 0) continue;
    if (h0)
      std::memcpy(s, h0 + (b * D + d0) * C, sizeof(T) * n * C);
    else
      std::fill(s, s + n * C, T(0));
    for (i64 i = 0; i < L; ++i) {
      const i64 t = reverse ? L - 1 - i : i;
      diag_step<T, Complex>(s, a + (b * sab + t * sat + d0) * C, x + ((b * L + t) * D + d0) * C,
                            n);
      store_row(h + ((b * L + t) * D + d0) * C, s, n * C, stream);
    }
    if (stream) store_fence();
  }
}

// Adjoint sweep; `reverse` is the direction of the original recurrence.
// ga: gradient of A with strides (gab, gat); where A is broadcast over batch or time the
// gradient is summed with +=, so the caller zero-fills it. ga, gh0, h0, gF may be null.
template <typename T, bool Complex>
void diag_adjoint(const T* a, i64 sab, i64 sat, const T* g, const T* gF, const T* h,
                  const T* h0, T* lam, T* ga, i64 gab, i64 gat, T* gh0, i64 B, i64 L, i64 D,
                  int reverse, int nthreads) {
  constexpr i64 C = Complex ? 2 : 1;
  const bool accumulate = (gab == 0 && B > 1) || (gat == 0 && L > 1);
  const bool batch_in_unit = (gab == 0) && (ga != nullptr);
  const Units u = make_units(B, D, nthreads, batch_in_unit, 16, kBufBytes / i64(sizeof(T) * C));
  const i64 rows = batch_in_unit ? 1 : B;
  const int nt = threads_for(B * L * D, nthreads);
  const bool stream = B * L * D * C * i64(sizeof(T)) >= kStreamBytes;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < rows * u.per_row; ++unit) {
    alignas(64) T s[kBufBytes / sizeof(T)];
    alignas(64) T w[kBufBytes / sizeof(T)];
    const i64 row = unit / u.per_row;
    const i64 d0 = (unit % u.per_row) * u.blk;
    const i64 n = std::min(D, d0 + u.blk) - d0;
    if (n <= 0) continue;
    const i64 b_lo = batch_in_unit ? 0 : row;
    const i64 b_hi = batch_in_unit ? B : row + 1;
    for (i64 b = b_lo; b < b_hi; ++b) {
      if (gF)
        std::memcpy(s, gF + (b * D + d0) * C, sizeof(T) * n * C);
      else
        std::fill(s, s + n * C, T(0));
      i64 tprev = -1;
      for (i64 i = 0; i < L; ++i) {
        // original forward: t = L-1 .. 0; original reverse: t = 0 .. L-1
        const i64 t = reverse ? i : L - 1 - i;
        const T* gt = g + ((b * L + t) * D + d0) * C;
        if (tprev < 0) {
          for (i64 j = 0; j < n * C; ++j) s[j] += gt[j];
        } else {
          diag_step_conj<T, Complex>(s, a + (b * sab + tprev * sat + d0) * C, gt, n);
        }
        store_row(lam + ((b * L + t) * D + d0) * C, s, n * C, stream);
        if (ga != nullptr) {
          // dL/dA_t = lam_t * conj(h_prev), h_prev = the state before step t
          const i64 tp = reverse ? t + 1 : t - 1;
          const T* hp = (tp >= 0 && tp < L) ? h + ((b * L + tp) * D + d0) * C
                                            : (h0 ? h0 + (b * D + d0) * C : nullptr);
          T* gat_ = ga + (b * gab + t * gat + d0) * C;
          if (hp == nullptr) {
            if (!accumulate) std::fill(gat_, gat_ + n * C, T(0));
          } else {
            T* __restrict dst = accumulate ? gat_ : w;
            if constexpr (Complex) {
              for (i64 j = 0; j < n; ++j) {
                const T lr = s[2 * j], li = s[2 * j + 1], qr = hp[2 * j], qi = hp[2 * j + 1];
                const T vr = lr * qr + li * qi, vi = li * qr - lr * qi;
                dst[2 * j] = (accumulate ? dst[2 * j] : T(0)) + vr;
                dst[2 * j + 1] = (accumulate ? dst[2 * j + 1] : T(0)) + vi;
              }
            } else {
              for (i64 j = 0; j < n; ++j) dst[j] = (accumulate ? dst[j] : T(0)) + s[j] * hp[j];
            }
            if (!accumulate) store_row(gat_, w, n * C, stream);
          }
        }
        tprev = t;
      }
      if (gh0 != nullptr) {  // dL/dh0 = conj(A_first) * lam_first
        const T* an = a + (b * sab + tprev * sat + d0) * C;
        T* o = gh0 + (b * D + d0) * C;
        if constexpr (Complex) {
          for (i64 j = 0; j < n; ++j) {
            const T ar = an[2 * j], ai = an[2 * j + 1], pr = s[2 * j], pi = s[2 * j + 1];
            o[2 * j] = ar * pr + ai * pi;
            o[2 * j + 1] = ar * pi - ai * pr;
          }
        } else {
          for (i64 j = 0; j < n; ++j) o[j] = an[j] * s[j];
        }
      }
    }
    if (stream) store_fence();
  }
}

// ----------------------------------------------------------------------------------
// Block-diagonal, real: G blocks of K x K. KC = K when known at compile time (the
// inner loops unroll), 0 for a run-time K.

template <typename T, int KC>
void block_forward(const T* a, i64 sab, i64 sat, const T* x, const T* h0, T* h, i64 B, i64 L,
                   i64 G, i64 Kr, int reverse, int nthreads) {
  const i64 K = KC > 0 ? KC : Kr;
  const i64 max_groups = std::max<i64>(1, kBufBytes / i64(sizeof(T) * K));
  const Units u = make_units(B, G, nthreads, false, 8, max_groups);
  const int nt = threads_for(B * L * G * K * K, nthreads);
  const bool stream = B * L * G * K * i64(sizeof(T)) >= kStreamBytes;
  // A run-time K larger than the buffer holds falls back to a heap buffer.
  const bool heap = max_groups * K * i64(sizeof(T)) > kBufBytes;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * u.per_row; ++unit) {
    alignas(64) T sbuf[kBufBytes / sizeof(T)];
    alignas(64) T nbuf[kBufBytes / sizeof(T)];
    T* s = heap ? new T[u.blk * K] : sbuf;
    T* nx = heap ? new T[u.blk * K] : nbuf;
    T* const s_alloc = s;
    T* const nx_alloc = nx;
    const i64 b = unit / u.per_row;
    const i64 g0 = (unit % u.per_row) * u.blk;
    const i64 ng = std::min(G, g0 + u.blk) - g0;
    if (ng > 0) {
      if (h0)
        std::memcpy(s, h0 + (b * G + g0) * K, sizeof(T) * ng * K);
      else
        std::fill(s, s + ng * K, T(0));
      for (i64 i = 0; i < L; ++i) {
        const i64 t = reverse ? L - 1 - i : i;
        const T* at = a + b * sab + t * sat + g0 * K * K;
        const T* xt = x + ((b * L + t) * G + g0) * K;
        for (i64 gg = 0; gg < ng; ++gg) {
          const T* A = at + gg * K * K;
          const T* sv = s + gg * K;
          for (i64 r = 0; r < K; ++r) {
            T acc = xt[gg * K + r];
            for (i64 c = 0; c < K; ++c) acc += A[r * K + c] * sv[c];
            nx[gg * K + r] = acc;
          }
        }
        std::swap(s, nx);
        store_row(h + ((b * L + t) * G + g0) * K, s, ng * K, stream);
      }
      if (stream) store_fence();
    }
    if (heap) {
      delete[] s_alloc;
      delete[] nx_alloc;
    }
  }
}

template <typename T, int KC>
void block_adjoint(const T* a, i64 sab, i64 sat, const T* g, const T* gF, const T* h,
                   const T* h0, T* lam, T* ga, i64 gab, i64 gat, T* gh0, i64 B, i64 L, i64 G,
                   i64 Kr, int reverse, int nthreads) {
  const i64 K = KC > 0 ? KC : Kr;
  const bool accumulate = (gab == 0 && B > 1) || (gat == 0 && L > 1);
  const bool batch_in_unit = (gab == 0) && (ga != nullptr);
  const i64 max_groups = std::max<i64>(1, kBufBytes / i64(sizeof(T) * K));
  const Units u = make_units(B, G, nthreads, batch_in_unit, 8, max_groups);
  const i64 rows = batch_in_unit ? 1 : B;
  const int nt = threads_for(B * L * G * K * K, nthreads);
  const bool stream = B * L * G * K * i64(sizeof(T)) >= kStreamBytes;
  const bool heap = max_groups * K * i64(sizeof(T)) > kBufBytes;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < rows * u.per_row; ++unit) {
    alignas(64) T sbuf[kBufBytes / sizeof(T)];
    alignas(64) T nbuf[kBufBytes / sizeof(T)];
    T* s = heap ? new T[u.blk * K] : sbuf;
    T* nx = heap ? new T[u.blk * K] : nbuf;
    T* const s_alloc = s;
    T* const nx_alloc = nx;
    const i64 row = unit / u.per_row;
    const i64 g0 = (unit % u.per_row) * u.blk;
    const i64 ng = std::min(G, g0 + u.blk) - g0;
    const i64 b_lo = batch_in_unit ? 0 : row;
    const i64 b_hi = batch_in_unit ? B : row + 1;
    for (i64 b = b_lo; ng > 0 && b < b_hi; ++b) {
      if (gF)
        std::memcpy(s, gF + (b * G + g0) * K, sizeof(T) * ng * K);
      else
        std::fill(s, s + ng * K, T(0));
      i64 tprev = -1;
      for (i64 i = 0; i < L; ++i) {
        const i64 t = reverse ? i : L - 1 - i;
        const T* gt = g + ((b * L + t) * G + g0) * K;
        if (tprev < 0) {
          for (i64 j = 0; j < ng * K; ++j) s[j] += gt[j];
        } else {
          const T* an = a + b * sab + tprev * sat + g0 * K * K;
          for (i64 gg = 0; gg < ng; ++gg) {  // lam_t = g_t + A^T lam
            const T* A = an + gg * K * K;
            for (i64 c = 0; c < K; ++c) {
              T acc = gt[gg * K + c];
              for (i64 r = 0; r < K; ++r) acc += A[r * K + c] * s[gg * K + r];
              nx[gg * K + c] = acc;
            }
          }
          std::swap(s, nx);
        }
        store_row(lam + ((b * L + t) * G + g0) * K, s, ng * K, stream);
        if (ga != nullptr) {
          const i64 tp = reverse ? t + 1 : t - 1;
          const T* hp = (tp >= 0 && tp < L) ? h + ((b * L + tp) * G + g0) * K
                                            : (h0 ? h0 + (b * G + g0) * K : nullptr);
          T* gA = ga + b * gab + t * gat + g0 * K * K;
          if (hp == nullptr) {
            if (!accumulate) std::fill(gA, gA + ng * K * K, T(0));
          } else {
            for (i64 gg = 0; gg < ng; ++gg)
              for (i64 r = 0; r < K; ++r)
                for (i64 c = 0; c < K; ++c) {
                  const T v = s[gg * K + r] * hp[gg * K + c];
                  T& dst = gA[gg * K * K + r * K + c];
                  dst = accumulate ? dst + v : v;
                }
          }
        }
        tprev = t;
      }
      if (gh0 != nullptr) {
        const T* an = a + b * sab + tprev * sat + g0 * K * K;
        T* o = gh0 + (b * G + g0) * K;
        for (i64 gg = 0; gg < ng; ++gg) {
          const T* A = an + gg * K * K;
          for (i64 c = 0; c < K; ++c) {
            T acc = 0;
            for (i64 r = 0; r < K; ++r) acc += A[r * K + c] * s[gg * K + r];
            o[gg * K + c] = acc;
          }
        }
      }
    }
    if (stream) store_fence();
    if (heap) {
      delete[] s_alloc;
      delete[] nx_alloc;
    }
  }
}

template <typename T>
void block_forward_dispatch(const T* a, i64 sab, i64 sat, const T* x, const T* h0, T* h, i64 B,
                            i64 L, i64 G, i64 K, int reverse, int nthreads) {
#define RNNX_BLOCK_FWD(KK) \
  return block_forward<T, KK>(a, sab, sat, x, h0, h, B, L, G, K, reverse, nthreads)
  switch (K) {
    case 1: RNNX_BLOCK_FWD(1);
    case 2: RNNX_BLOCK_FWD(2);
    case 3: RNNX_BLOCK_FWD(3);
    case 4: RNNX_BLOCK_FWD(4);
    default: RNNX_BLOCK_FWD(0);
  }
#undef RNNX_BLOCK_FWD
}

template <typename T>
void block_adjoint_dispatch(const T* a, i64 sab, i64 sat, const T* g, const T* gF, const T* h,
                            const T* h0, T* lam, T* ga, i64 gab, i64 gat, T* gh0, i64 B, i64 L,
                            i64 G, i64 K, int reverse, int nthreads) {
#define RNNX_BLOCK_ADJ(KK)                                                                    \
  return block_adjoint<T, KK>(a, sab, sat, g, gF, h, h0, lam, ga, gab, gat, gh0, B, L, G, K, \
                              reverse, nthreads)
  switch (K) {
    case 1: RNNX_BLOCK_ADJ(1);
    case 2: RNNX_BLOCK_ADJ(2);
    case 3: RNNX_BLOCK_ADJ(3);
    case 4: RNNX_BLOCK_ADJ(4);
    default: RNNX_BLOCK_ADJ(0);
  }
#undef RNNX_BLOCK_ADJ
}

}  // namespace

// ----------------------------------------------------------------------------------
// C entry points, one per (structure, dtype). Suffixes: f32, f64, c64, c128.

#define RNNX_DIAG(SUFFIX, T, CPLX)                                                            \
  extern "C" void rnnx_scan_diag_fwd_##SUFFIX(const T* a, i64 sab, i64 sat, const T* x,       \
                                              const T* h0, T* h, i64 B, i64 L, i64 D,         \
                                              int reverse, int nthreads) {                    \
    diag_forward<T, CPLX>(a, sab, sat, x, h0, h, B, L, D, reverse, nthreads);                 \
  }                                                                                           \
  extern "C" void rnnx_scan_diag_adj_##SUFFIX(                                                \
      const T* a, i64 sab, i64 sat, const T* g, const T* gF, const T* h, const T* h0, T* lam, \
      T* ga, i64 gab, i64 gat, T* gh0, i64 B, i64 L, i64 D, int reverse, int nthreads) {      \
    diag_adjoint<T, CPLX>(a, sab, sat, g, gF, h, h0, lam, ga, gab, gat, gh0, B, L, D,         \
                          reverse, nthreads);                                                 \
  }

RNNX_DIAG(f32, float, false)
RNNX_DIAG(f64, double, false)
RNNX_DIAG(c64, float, true)
RNNX_DIAG(c128, double, true)

#define RNNX_BLOCK(SUFFIX, T)                                                                 \
  extern "C" void rnnx_scan_block_fwd_##SUFFIX(const T* a, i64 sab, i64 sat, const T* x,      \
                                               const T* h0, T* h, i64 B, i64 L, i64 G, i64 K, \
                                               int reverse, int nthreads) {                   \
    block_forward_dispatch<T>(a, sab, sat, x, h0, h, B, L, G, K, reverse, nthreads);          \
  }                                                                                           \
  extern "C" void rnnx_scan_block_adj_##SUFFIX(                                               \
      const T* a, i64 sab, i64 sat, const T* g, const T* gF, const T* h, const T* h0, T* lam, \
      T* ga, i64 gab, i64 gat, T* gh0, i64 B, i64 L, i64 G, i64 K, int reverse,              \
      int nthreads) {                                                                         \
    block_adjoint_dispatch<T>(a, sab, sat, g, gF, h, h0, lam, ga, gab, gat, gh0, B, L, G, K,  \
                              reverse, nthreads);                                             \
  }

RNNX_BLOCK(f32, float)
RNNX_BLOCK(f64, double)
