// Mamba's selective scan on the CPU, fused: forward and a recomputing backward.
//
//   a_t[d,n] = exp(dt_t[d] A[d,n])          (or 2 exp(dt_t[d] A[d,n]) - 1: negative eigenvalues)
//   h_t[d,n] = a_t[d,n] h_{t-1}[d,n] + dt_t[d] u_t[d] B_t[g(d),n]
//   y_t[d]   = sum_n C_t[g(d),n] h_t[d,n]
//
// (Gu & Dao 2023, arXiv 2312.00752; negative eigenvalues: Grazzi et al. 2024, arXiv
// 2411.12537.) The state (D, N) per sequence never leaves the cache: a unit of work is one
// sequence and a block of channels, its state and its block of A live in a small buffer, and
// each step reads one row of dt, u (D values) and of B, C (N values) and writes one row of y.
// Nothing of size (time x D x N) is written. Softplus, the D skip and the z gate stay in
// PyTorch (elementwise on (time, D), cheap next to the D x N work here).
//
// Backward. With checkpoints of the state every K steps (written by the forward when a
// gradient is needed: time/K x D x N numbers), the backward walks the chunks from last to
// first: it recomputes the K states and transitions of a chunk into a buffer from the
// chunk's checkpoint, then runs the adjoint recurrence backwards through it,
//   lam_t = C_t gy_t + a_{t+1} lam_{t+1},          (lam_T = gradient of the final state)
//   gdt_t[d] = sum_n lam_t h_{t-1} a'_t A  +  u_t[d] sum_n lam_t B_t
//   gu_t[d]  = dt_t[d] sum_n lam_t B_t,   gA[d,n] += lam_t h_{t-1} a'_t dt_t
//   gB_t[n]  = sum_d lam_t dt_t u_t,      gC_t[n] = sum_d gy_t h_t,   gh0 = a_1 lam_1
// where a' = d a / d(dt A) is a (or a + 1 for the negative-eigenvalue map). gB and gC sum
// over the channels of several units, so each unit writes its own partial row and the caller
// sums them; gA likewise per sequence.
//
// Layout (contiguous, "rows" = time steps of all sequences one after another):
//   u, dt, y, gy, gu, gdt : (rows, D)        B, C : (rows, G, N), channel d uses group d / (D/G)
//   A : (D, N)      h0, hlast, gh0, gA_part : (S, D, N)      ckpt : (checkpoints, D, N)
//   gB_part, gC_part : (blocks per group, rows, G, N)
//   offsets (S+1): sequence s is rows [offsets[s], offsets[s+1]); ckpt_off (S+1): its
//   checkpoints (the state before step c*K of the sequence, c = 0, 1, ...) are
//   ckpt[ckpt_off[s] + c]. Null pointers: h0 (zeros), hlast / ckpt / gh0 / ghlast (none).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNX_AVX2 1
#endif

using i64 = int64_t;

namespace {

// ------------------------------------------------------------------ lanes
// One kernel body, written over a lane type: 8 floats with AVX2, or one scalar
// (double everywhere; float without AVX2).

template <typename T>
struct Scalar {
  using E = T;
  static constexpr int W = 1;
  T v;
  static Scalar load(const T* p) { return {*p}; }
  static Scalar set1(T x) { return {x}; }
  static Scalar zero() { return {T(0)}; }
  void store(T* p) const { *p = v; }
  friend Scalar operator+(Scalar a, Scalar b) { return {a.v + b.v}; }
  friend Scalar operator*(Scalar a, Scalar b) { return {a.v * b.v}; }
  static Scalar fma(Scalar a, Scalar b, Scalar c) { return {a.v * b.v + c.v}; }
  static Scalar exp(Scalar a) { return {std::exp(a.v)}; }
  T sum() const { return v; }
};

#if defined(RNNX_AVX2)
struct F8 {
  using E = float;
  static constexpr int W = 8;
  __m256 v;
  static F8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static F8 set1(float x) { return {_mm256_set1_ps(x)}; }
  static F8 zero() { return {_mm256_setzero_ps()}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  friend F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
  static F8 fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  // exp by range reduction x = k ln2 + r, |r| <= ln2/2, and a degree-7 polynomial for
  // e^r (Cephes' expf coefficients): within 1-2 ulp of expf over [-87, 88]. Arguments
  // below -87 give about 1.6e-38 instead of a smaller number or zero.
  static F8 exp(F8 a) {
    __m256 x = _mm256_min_ps(_mm256_max_ps(a.v, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return {_mm256_mul_ps(p, _mm256_castsi256_ps(e))};
  }
  float sum() const {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
#endif

template <typename T>
struct LanesOf {
  using type = Scalar<T>;
};
#if defined(RNNX_AVX2)
template <>
struct LanesOf<float> {
  using type = F8;
};
#endif

// The transition and d a / d(dt A) from e = exp(dt A).
template <typename V>
inline V transition(V e, bool negative) {
  return negative ? V::fma(V::set1(2), e, V::set1(-1)) : e;
}

inline int threads_for(i64 work, int nthreads) {
  // below ~0.5 ms of work a parallel region costs more than it saves (and far more when
  // the machine is oversubscribed and a thread is descheduled at the barrier)
  return work < (i64(1) << 18) ? 1 : std::max(nthreads, 1);
}

struct Problem {
  const i64* offsets;
  const i64* ckpt_off;
  i64 S, D, N, G, K;
  i64 Dg;      // channels per group
  i64 nb;      // channels per unit (a multiple of the lane width)
  i64 nblk;    // units per (sequence, group)
  bool negative;
  i64 units() const { return S * G * nblk; }
};

template <typename T>
Problem make_problem(const i64* offsets, const i64* ckpt_off, i64 S, i64 D, i64 N, i64 G, i64 K,
                     i64 block, int negative) {
  constexpr i64 W = LanesOf<T>::type::W;
  Problem p{offsets, ckpt_off, S, D, N, G, K, D / G, 0, 0, negative != 0};
  const i64 want = std::max<i64>(W, (std::min(block, p.Dg) + W - 1) / W * W);
  p.nblk = (p.Dg + want - 1) / want;
  // spread the channels of a group evenly over its blocks, in whole lanes
  p.nb = ((p.Dg + p.nblk - 1) / p.nblk + W - 1) / W * W;
  p.nblk = (p.Dg + p.nb - 1) / p.nb;
  return p;
}

// ------------------------------------------------------------------ forward

template <typename T>
void forward(const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* h0, T* y,
             T* hlast, T* ckpt, const Problem& P, int nthreads) {
  using V = typename LanesOf<T>::type;
  constexpr i64 W = V::W;
  const i64 D = P.D, N = P.N, G = P.G, nb = P.nb;
  const int nt = threads_for((P.offsets[P.S] - P.offsets[0]) * D * N, nthreads);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> At(N * nb), h(N * nb), dtv(nb), duv(nb), yv(nb);
#pragma omp for schedule(dynamic, 1)
    for (i64 unit = 0; unit < P.units(); ++unit) {
      const i64 s = unit / (G * P.nblk);
      const i64 g = (unit / P.nblk) % G;
      const i64 d0 = g * P.Dg + (unit % P.nblk) * nb;
      const i64 nc = std::min(nb, (g + 1) * P.Dg - d0);  // channels of this unit
      if (nc <= 0) continue;
      const i64 nv = (nc + W - 1) / W;  // lane groups actually used
      // state and A transposed to [n][channel]; padding lanes stay 0 (a = 1, input 0)
      std::fill(At.begin(), At.end(), T(0));
      std::fill(h.begin(), h.end(), T(0));
      std::fill(dtv.begin(), dtv.end(), T(0));
      std::fill(duv.begin(), duv.end(), T(0));
      for (i64 j = 0; j < nc; ++j)
        for (i64 n = 0; n < N; ++n) {
          At[n * nb + j] = A[(d0 + j) * N + n];
          if (h0) h[n * nb + j] = h0[(s * D + d0 + j) * N + n];
        }
      const i64 r0 = P.offsets[s], r1 = P.offsets[s + 1];
      for (i64 r = r0; r < r1; ++r) {
        const i64 k = r - r0;
        if (ckpt && k % P.K == 0) {
          T* c = ckpt + (P.ckpt_off[s] + k / P.K) * D * N;
          for (i64 j = 0; j < nc; ++j)
            for (i64 n = 0; n < N; ++n) c[(d0 + j) * N + n] = h[n * nb + j];
        }
        for (i64 j = 0; j < nc; ++j) {
          dtv[j] = dt[r * D + d0 + j];
          duv[j] = dtv[j] * u[r * D + d0 + j];
        }
        const T* Br = Bm + (r * G + g) * N;
        const T* Cr = Cm + (r * G + g) * N;
        for (i64 v = 0; v < nv; ++v) {
          const V dtl = V::load(&dtv[v * W]), dul = V::load(&duv[v * W]);
          V acc = V::zero();
          for (i64 n = 0; n < N; ++n) {
            T* hp = &h[n * nb + v * W];
            const V a = transition(V::exp(dtl * V::load(&At[n * nb + v * W])), P.negative);
            const V hn = V::fma(a, V::load(hp), dul * V::set1(Br[n]));
            hn.store(hp);
            acc = V::fma(hn, V::set1(Cr[n]), acc);
          }
          acc.store(&yv[v * W]);
        }
        std::memcpy(y + r * D + d0, yv.data(), sizeof(T) * nc);
      }
      if (hlast)
        for (i64 j = 0; j < nc; ++j)
          for (i64 n = 0; n < N; ++n) hlast[(s * D + d0 + j) * N + n] = h[n * nb + j];
    }
  }
}

// ------------------------------------------------------------------ backward

template <typename T>
void backward(const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* ckpt,
              const T* gy, const T* ghlast, T* gu, T* gdt, T* gA_part, T* gB_part, T* gC_part,
              T* gh0, const Problem& P, int nthreads) {
  using V = typename LanesOf<T>::type;
  constexpr i64 W = V::W;
  const i64 D = P.D, N = P.N, G = P.G, nb = P.nb, K = P.K;
  const i64 rows = P.offsets[P.S] - P.offsets[0];
  const int nt = threads_for(rows * D * N, nthreads);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> At(N * nb), lam(N * nb), gAacc(N * nb), hstart(N * nb);
    std::vector<T> abuf(K * N * nb), hbuf(K * N * nb);
    std::vector<T> dtv(nb), uv(nb), gyv(nb), gdtv(nb), guv(nb);
    std::vector<V> gBl(N), gCl(N);
#pragma omp for schedule(dynamic, 1)
    for (i64 unit = 0; unit < P.units(); ++unit) {
      const i64 s = unit / (G * P.nblk);
      const i64 g = (unit / P.nblk) % G;
      const i64 blk = unit % P.nblk;
      const i64 d0 = g * P.Dg + blk * nb;
      const i64 nc = std::min(nb, (g + 1) * P.Dg - d0);
      if (nc <= 0) continue;
      const i64 nv = (nc + W - 1) / W;
      std::fill(At.begin(), At.end(), T(0));
      std::fill(lam.begin(), lam.end(), T(0));
      std::fill(gAacc.begin(), gAacc.end(), T(0));
      std::fill(hstart.begin(), hstart.end(), T(0));
      for (auto* vec : {&dtv, &uv, &gyv}) std::fill(vec->begin(), vec->end(), T(0));
      for (i64 j = 0; j < nc; ++j)
        for (i64 n = 0; n < N; ++n) {
          At[n * nb + j] = A[(d0 + j) * N + n];
          if (ghlast) lam[n * nb + j] = ghlast[(s * D + d0 + j) * N + n];
        }
      const i64 r0 = P.offsets[s], len = P.offsets[s + 1] - r0;
      const i64 nchunks = (len + K - 1) / K;
      for (i64 c = nchunks - 1; c >= 0; --c) {
        const i64 k0 = c * K, kl = std::min(K, len - k0);
        // 1) recompute the chunk's transitions and states from its checkpoint
        const T* cp = ckpt + (P.ckpt_off[s] + c) * D * N;
        for (i64 j = 0; j < nc; ++j)
          for (i64 n = 0; n < N; ++n) hstart[n * nb + j] = cp[(d0 + j) * N + n];
        for (i64 k = 0; k < kl; ++k) {
          const i64 r = r0 + k0 + k;
          for (i64 j = 0; j < nc; ++j) {
            dtv[j] = dt[r * D + d0 + j];
            uv[j] = dtv[j] * u[r * D + d0 + j];  // dt * u here; reloaded below
          }
          const T* Br = Bm + (r * G + g) * N;
          const T* prev = k ? &hbuf[(k - 1) * N * nb] : hstart.data();
          T* hk = &hbuf[k * N * nb];
          T* ak = &abuf[k * N * nb];
          for (i64 n = 0; n < N; ++n) {
            const V bn = V::set1(Br[n]);
            for (i64 v = 0; v < nv; ++v) {
              const i64 o = n * nb + v * W;
              const V a = transition(V::exp(V::load(&dtv[v * W]) * V::load(&At[o])), P.negative);
              a.store(ak + o);
              V::fma(a, V::load(prev + o), V::load(&uv[v * W]) * bn).store(hk + o);
            }
          }
        }
        // 2) the adjoint recurrence backwards through the chunk
        for (i64 k = kl - 1; k >= 0; --k) {
          const i64 r = r0 + k0 + k;
          for (i64 j = 0; j < nc; ++j) {
            dtv[j] = dt[r * D + d0 + j];
            uv[j] = u[r * D + d0 + j];
            gyv[j] = gy[r * D + d0 + j];
          }
          const T* Br = Bm + (r * G + g) * N;
          const T* Cr = Cm + (r * G + g) * N;
          const T* hprev = k ? &hbuf[(k - 1) * N * nb] : hstart.data();
          const T* hk = &hbuf[k * N * nb];
          const T* ak = &abuf[k * N * nb];
          for (i64 n = 0; n < N; ++n) gBl[n] = gCl[n] = V::zero();
          for (i64 v = 0; v < nv; ++v) {
            const V dtl = V::load(&dtv[v * W]), ul = V::load(&uv[v * W]);
            const V gyl = V::load(&gyv[v * W]), dul = dtl * ul;
            V gdt_a = V::zero(), gu_a = V::zero();
            for (i64 n = 0; n < N; ++n) {
              const i64 o = n * nb + v * W;
              const V bn = V::set1(Br[n]);
              const V lamn = V::fma(gyl, V::set1(Cr[n]), V::load(&lam[o]));  // lam_t
              gCl[n] = V::fma(gyl, V::load(hk + o), gCl[n]);
              gBl[n] = V::fma(lamn, dul, gBl[n]);
              const V a = V::load(ak + o);
              const V da = P.negative ? a + V::set1(1) : a;  // d a / d(dt A)
              const V gz = lamn * V::load(hprev + o) * da;   // gradient of dt A
              gdt_a = V::fma(gz, V::load(&At[o]), gdt_a);
              V::fma(gz, dtl, V::load(&gAacc[o])).store(&gAacc[o]);
              gu_a = V::fma(lamn, bn, gu_a);
              (lamn * a).store(&lam[o]);  // a_t lam_t, carried to step t-1
            }
            (dtl * gu_a).store(&guv[v * W]);
            V::fma(ul, gu_a, gdt_a).store(&gdtv[v * W]);
          }
          std::memcpy(gu + r * D + d0, guv.data(), sizeof(T) * nc);
          std::memcpy(gdt + r * D + d0, gdtv.data(), sizeof(T) * nc);
          T* gBr = gB_part + ((blk * (P.offsets[P.S] - P.offsets[0]) + r) * G + g) * N;
          T* gCr = gC_part + ((blk * (P.offsets[P.S] - P.offsets[0]) + r) * G + g) * N;
          for (i64 n = 0; n < N; ++n) {
            gBr[n] = gBl[n].sum();
            gCr[n] = gCl[n].sum();
          }
        }
      }
      for (i64 j = 0; j < nc; ++j)
        for (i64 n = 0; n < N; ++n) {
          gA_part[(s * D + d0 + j) * N + n] = gAacc[n * nb + j];
          if (gh0) gh0[(s * D + d0 + j) * N + n] = lam[n * nb + j];
        }
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ C entry points

#define RNNX_SSCAN(SUFFIX, T)                                                                   \
  extern "C" void rnnx_sscan_fwd_##SUFFIX(const T* u, const T* dt, const T* A, const T* Bm,     \
                                          const T* Cm, const T* h0, T* y, T* hlast, T* ckpt,    \
                                          const i64* offsets, const i64* ckpt_off, i64 S, i64 D, \
                                          i64 N, i64 G, i64 K, i64 block, int negative,          \
                                          int nthreads) {                                       \
    const Problem P = make_problem<T>(offsets, ckpt_off, S, D, N, G, K, block, negative);       \
    forward<T>(u, dt, A, Bm, Cm, h0, y, hlast, ckpt, P, nthreads);                              \
  }                                                                                             \
  extern "C" i64 rnnx_sscan_blocks_##SUFFIX(i64 D, i64 G, i64 block) {                          \
    return make_problem<T>(nullptr, nullptr, 1, D, 1, G, 1, block, 0).nblk;                     \
  }                                                                                             \
  extern "C" void rnnx_sscan_bwd_##SUFFIX(                                                      \
      const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* ckpt,             \
      const T* gy, const T* ghlast, T* gu, T* gdt, T* gA_part, T* gB_part, T* gC_part, T* gh0,  \
      const i64* offsets, const i64* ckpt_off, i64 S, i64 D, i64 N, i64 G, i64 K, i64 block,    \
      int negative, int nthreads) {                                                             \
    const Problem P = make_problem<T>(offsets, ckpt_off, S, D, N, G, K, block, negative);       \
    backward<T>(u, dt, A, Bm, Cm, ckpt, gy, ghlast, gu, gdt, gA_part, gB_part, gC_part, gh0, P, \
                nthreads);                                                                      \
  }

RNNX_SSCAN(f32, float)
RNNX_SSCAN(f64, double)
