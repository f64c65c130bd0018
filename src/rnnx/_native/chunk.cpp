// Intra-chunk matrices of the chunked linear-attention family on the CPU, forward and
// backward: GLA's vector-decay attention (gla_intra) and mLSTM's stabilised gate matrix
// (mlstm_intra). Matrix products stay in PyTorch (BLAS); these kernels fuse the
// elementwise work on the C x C matrices of each chunk into one pass each way.
//
// ---- gla_intra: gated linear attention with a vector decay (GLA, arXiv 2312.06635).
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

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"

using rnnx::i64;

namespace {

using rnnx::FlushDenormals;

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


// ---- mlstm_intra: the stabilised intra-chunk weights of the mLSTM (xLSTM, arXiv 2405.04517).
//
// For each chunk (C steps) with scores S[i][j] = q_i . k_j (scaled), cumulative log forget
// gates F, input-gate pre-activations I (may be -inf) and the incoming stabiliser m0:
//
//   L[i][j] = F[i] - F[j] + I[j]  (j <= i),   m[i] = max(F[i] + m0, max_j L[i][j])
//   W[i][j] = exp(L[i][j] - m[i]) S[i][j],    rs[i] = sum_j W[i][j]
//
// and arg[i] = the j of the maximum, or -1 when F[i] + m0 is the maximum (the backward
// routes the gradient of m[i] there, as autograd does through max when there is no tie).
// Backward, with g = dW + drs (row-broadcast) and D = exp(L - m):
//   dS = g D,  dL = g W,  dm_total = dm - sum_j dL,  then dm_total goes to the maximum,
//   dF[i] += sum_j dL[i][j],  dF[j] -= sum_i dL[i][j],  dI[j] += sum_i dL[i][j].
// Layout: S, W, dW, dS (M, C, C); F, I, m, rs, arg, dF, dI, drs, dm (M, C); m0, dm0 (M,).

template <typename T>
void mlstm_intra_fwd(const T* __restrict S, const T* __restrict F, const T* __restrict I,
                     const T* __restrict m0, T* __restrict W, T* __restrict rs,
                     T* __restrict m, int32_t* __restrict arg, i64 M, i64 C, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (i64 b = 0; b < M; ++b) {
    const T* Sb = S + b * C * C;
    const T* Fb = F + b * C;
    const T* Ib = I + b * C;
    T* Wb = W + b * C * C;
    FlushDenormals guard;
    for (i64 i = 0; i < C; ++i) {
      const T fi = Fb[i];
      T best = fi + m0[b];
      int32_t where = -1;
      for (i64 j = 0; j <= i; ++j) {
        const T l = fi - Fb[j] + Ib[j];
        // a NaN wins and stays (torch.maximum and amax propagate NaN)
        if (l > best || (l != l && best == best)) {
          best = l;
          where = static_cast<int32_t>(j);
        }
      }
      T sum = 0;
      T* Wi = Wb + i * C;
      const T* Si = Sb + i * C;
#pragma omp simd reduction(+ : sum)
      for (i64 j = 0; j <= i; ++j) {
        const T w = std::exp(fi - Fb[j] + Ib[j] - best) * Si[j];
        Wi[j] = w;
        sum += w;
      }
      for (i64 j = i + 1; j < C; ++j) Wi[j] = T(0);
      rs[b * C + i] = sum;
      m[b * C + i] = best;
      arg[b * C + i] = where;
    }
  }
}

template <typename T>
void mlstm_intra_bwd(const T* __restrict S, const T* __restrict F, const T* __restrict I,
                     const T* __restrict m, const int32_t* __restrict arg,
                     const T* __restrict dW, const T* __restrict drs, const T* __restrict dm,
                     T* __restrict dS, T* __restrict dF, T* __restrict dI, T* __restrict dm0,
                     i64 M, i64 C, int threads) {
#pragma omp parallel num_threads(threads)
  {
    FlushDenormals guard;
    std::vector<T> col(static_cast<size_t>(C));  // sum over rows i of dL[i][j]
#pragma omp for schedule(static)
    for (i64 b = 0; b < M; ++b) {
      const T* Sb = S + b * C * C;
      const T* Fb = F + b * C;
      const T* Ib = I + b * C;
      const T* dWb = dW + b * C * C;
      T* dSb = dS + b * C * C;
      T* dFb = dF + b * C;
      T* dIb = dI + b * C;
      T* cs = col.data();
      std::memset(cs, 0, sizeof(T) * static_cast<size_t>(C));
      T g0 = 0;
      for (i64 i = 0; i < C; ++i) {
        const T fi = Fb[i], mi = m[b * C + i], gr = drs[b * C + i];
        const T* Si = Sb + i * C;
        const T* dWi = dWb + i * C;
        T* dSi = dSb + i * C;
        T row = 0;
#pragma omp simd reduction(+ : row)
        for (i64 j = 0; j <= i; ++j) {
          const T d = std::exp(fi - Fb[j] + Ib[j] - mi);
          const T g = dWi[j] + gr;
          dSi[j] = g * d;
          const T dl = g * d * Si[j];
          cs[j] += dl;
          row += dl;
        }
        for (i64 j = i + 1; j < C; ++j) dSi[j] = T(0);
        const T dmt = dm[b * C + i] - row;
        dFb[i] = row;  // from the L[i][*] terms; the column terms are subtracted below
        const int32_t w = arg[b * C + i];
        if (w < 0) {
          dFb[i] += dmt;
          g0 += dmt;
        } else {
          dFb[i] += dmt;
          cs[w] += dmt;
        }
      }
      for (i64 j = 0; j < C; ++j) {
        dFb[j] -= cs[j];
        dIb[j] = cs[j];
      }
      dm0[b] = g0;
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

void rnnx_mlstm_intra_fwd_f32(const float* S, const float* F, const float* I, const float* m0,
                              float* W, float* rs, float* m, int32_t* arg, i64 M, i64 C,
                              int threads) {
  mlstm_intra_fwd<float>(S, F, I, m0, W, rs, m, arg, M, C, threads);
}
void rnnx_mlstm_intra_fwd_f64(const double* S, const double* F, const double* I,
                              const double* m0, double* W, double* rs, double* m, int32_t* arg,
                              i64 M, i64 C, int threads) {
  mlstm_intra_fwd<double>(S, F, I, m0, W, rs, m, arg, M, C, threads);
}
void rnnx_mlstm_intra_bwd_f32(const float* S, const float* F, const float* I, const float* m,
                              const int32_t* arg, const float* dW, const float* drs,
                              const float* dm, float* dS, float* dF, float* dI, float* dm0, i64 M,
                              i64 C, int threads) {
  mlstm_intra_bwd<float>(S, F, I, m, arg, dW, drs, dm, dS, dF, dI, dm0, M, C, threads);
}
void rnnx_mlstm_intra_bwd_f64(const double* S, const double* F, const double* I,
                              const double* m, const int32_t* arg, const double* dW,
                              const double* drs, const double* dm, double* dS, double* dF,
                              double* dI, double* dm0, i64 M, i64 C, int threads) {
  mlstm_intra_bwd<double>(S, F, I, m, arg, dW, drs, dm, dS, dF, dI, dm0, M, C, threads);
}

}  // extern "C"
