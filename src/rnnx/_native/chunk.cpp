// Intra-chunk attention of gated linear attention with a vector decay (GLA,
// arXiv 2312.06635) on the CPU: forward and backward.
//
// For each chunk m (of C steps, K key dimensions) and j <= i < C:
//
//   A[i][j] = sum_k q[i][k] * k[j][k] * e_ij[k],   e_ij[k] = prod_{j < l <= i} alpha[l][k]
//
// (alpha = exp(g) are the per-step decays; e_ij = exp(G_i - G_j) for the cumulative
// log-decay G). A is zero above the diagonal. The decay products are built by running
// products over i for each j instead of one exp per (i, j, k): every factor is <= 1, so
// nothing overflows for any decay, and there is no cancellation as in G_i - G_j.
// Products that fall below the normal range are flushed to zero (FTZ/DAZ) rather than
// taking the slow denormal path; such terms are below 1e-38 (float) of |q||k|.
//
// Backward, with dA given (only j <= i is read):
//   dq[i] = sum_{j<=i} dA[i][j] k[j] * e_ij,   dk[j] = sum_{i>=j} dA[i][j] q[i] * e_ij
// (the gradient of the log-decays follows from these: dG = q*dq - k*dk).
//
// Layout: q, k, alpha, dq, dk (M, C, K) contiguous; A, dA (M, C, C) contiguous.
// Chunks are split over OpenMP threads.

#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__SSE3__)
#include <pmmintrin.h>
#endif

using i64 = int64_t;

namespace {

// Flush denormals to zero in this thread for the lifetime of the guard.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

template <typename T>
void gla_intra_fwd(const T* __restrict q, const T* __restrict k, const T* __restrict alpha,
                   T* __restrict A, i64 M, i64 C, i64 K, int threads) {
#pragma omp parallel num_threads(threads)
  {
    FlushDenormals guard;
    std::vector<T> e(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (i64 m = 0; m < M; ++m) {
      const T* Q = q + m * C * K;
      const T* Kc = k + m * C * K;
      const T* Al = alpha + m * C * K;
      T* Am = A + m * C * C;
      std::memset(Am, 0, sizeof(T) * static_cast<size_t>(C * C));
      for (i64 j = 0; j < C; ++j) {
        const T* kj = Kc + j * K;
        T* __restrict ep = e.data();
        const T* qj = Q + j * K;
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (i64 d = 0; d < K; ++d) {
          ep[d] = T(1);
          acc += qj[d] * kj[d];
        }
        Am[j * C + j] = acc;
        for (i64 i = j + 1; i < C; ++i) {
          const T* qi = Q + i * K;
          const T* ai = Al + i * K;
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (i64 d = 0; d < K; ++d) {
            ep[d] *= ai[d];
            s += qi[d] * kj[d] * ep[d];
          }
          Am[i * C + j] = s;
        }
      }
    }
  }
}

template <typename T>
void gla_intra_bwd(const T* __restrict q, const T* __restrict k, const T* __restrict alpha,
                   const T* __restrict dA, T* __restrict dq, T* __restrict dk, i64 M, i64 C,
                   i64 K, int threads) {
#pragma omp parallel num_threads(threads)
  {
    FlushDenormals guard;
    std::vector<T> e(static_cast<size_t>(K)), acc(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (i64 m = 0; m < M; ++m) {
      const T* Q = q + m * C * K;
      const T* Kc = k + m * C * K;
      const T* Al = alpha + m * C * K;
      const T* dAm = dA + m * C * C;
      T* dQ = dq + m * C * K;
      T* dK = dk + m * C * K;
      std::memset(dQ, 0, sizeof(T) * static_cast<size_t>(C * K));
      for (i64 j = 0; j < C; ++j) {
        const T* kj = Kc + j * K;
        const T* qj = Q + j * K;
        T* __restrict ep = e.data();
        T* __restrict dkj = acc.data();
        T* __restrict dqj = dQ + j * K;
        const T t0 = dAm[j * C + j];
#pragma omp simd
        for (i64 d = 0; d < K; ++d) {
          ep[d] = T(1);
          dqj[d] += t0 * kj[d];
          dkj[d] = t0 * qj[d];
        }
        for (i64 i = j + 1; i < C; ++i) {
          const T* qi = Q + i * K;
          const T* ai = Al + i * K;
          T* __restrict dqi = dQ + i * K;
          const T t = dAm[i * C + j];
#pragma omp simd
          for (i64 d = 0; d < K; ++d) {
            ep[d] *= ai[d];
            const T w = t * ep[d];
            dqi[d] += w * kj[d];
            dkj[d] += w * qi[d];
          }
        }
        std::memcpy(dK + j * K, dkj, sizeof(T) * static_cast<size_t>(K));
      }
    }
  }
}

}  // namespace

extern "C" {

void rnnx_gla_intra_fwd_f32(const float* q, const float* k, const float* alpha, float* A, i64 M,
                            i64 C, i64 K, int threads) {
  gla_intra_fwd<float>(q, k, alpha, A, M, C, K, threads);
}
void rnnx_gla_intra_fwd_f64(const double* q, const double* k, const double* alpha, double* A,
                            i64 M, i64 C, i64 K, int threads) {
  gla_intra_fwd<double>(q, k, alpha, A, M, C, K, threads);
}
void rnnx_gla_intra_bwd_f32(const float* q, const float* k, const float* alpha, const float* dA,
                            float* dq, float* dk, i64 M, i64 C, i64 K, int threads) {
  gla_intra_bwd<float>(q, k, alpha, dA, dq, dk, M, C, K, threads);
}
void rnnx_gla_intra_bwd_f64(const double* q, const double* k, const double* alpha,
                            const double* dA, double* dq, double* dk, i64 M, i64 C, i64 K,
                            int threads) {
  gla_intra_bwd<double>(q, k, alpha, dA, dq, dk, M, C, K, threads);
}

}  // extern "C"
