// Mamba's selective scan on the CPU, fused: forward and a recomputing backward.
//
//   dt_t[d]  = softplus(delta_t[d] + bias[d])      (or delta_t[d] (+ bias) as given)
//   a_t[d,n] = exp(dt_t[d] A[d,n])                 (2 exp(dt_t[d] A[d,n]) - 1 with negative
//                                                   eigenvalues)
//   h_t[d,n] = a_t[d,n] h_{t-1}[d,n] + dt_t[d] u_t[d] B_t[g(d),n]
//   y_t[d]   = sum_n C_t[g(d),n] h_t[d,n]
//   out_t[d] = (y_t[d] + Dskip[d] u_t[d]) silu(z_t[d])   (each factor optional)
//
// (Gu & Dao 2023, arXiv 2312.00752; negative eigenvalues: Grazzi et al. 2024, arXiv
// 2411.12537.) The state (D, N) of a sequence never leaves the cache: a unit of work is one
// sequence and a block of channels, whose state and block of A live in a small buffer; each
// step reads one row of delta, u, z (D values) and of B, C (N values) and writes one row of
// out. Nothing of size (time x D x N) is written, and the elementwise parts (softplus, skip,
// gate) cost no extra pass over memory.
//
// Backward. With checkpoints of the state every K steps (written by the forward when a
// gradient is needed: time/K x D x N numbers), the backward walks the chunks from last to
// first: it recomputes the K states, transitions, steps and outputs y of a chunk into a
// buffer from the chunk's checkpoint, then runs the adjoint recurrence backwards through it.
// With gy = gout silu(z) (the gradient reaching y),
//   lam_t = C_t gy_t + a_{t+1} lam_{t+1},          (lam_T = gradient of the final state)
//   gdt_t[d] = sum_n lam_t h_{t-1} a'_t A  +  u_t[d] sum_n lam_t B_t
//   gu_t[d]  = dt_t[d] sum_n lam_t B_t + Dskip[d] gy_t[d],   gz = gout (y + Dskip u) silu'(z)
//   gdelta   = gdt sigmoid(delta + bias),   gA[d,n] += lam_t h_{t-1} a'_t dt_t
//   gB_t[n]  = sum_d lam_t dt_t u_t,      gC_t[n] = sum_d gy_t h_t,   gh0 = a_1 lam_1
// where a' = d a / d(dt A) is a (or a + 1 for the negative-eigenvalue map). gB and gC sum
// over the channels of several units, so each unit writes its own partial row and the caller
// sums them; gA, gDskip and gbias likewise per sequence.
//
// Layout (contiguous, "rows" = time steps of all sequences one after another):
//   u, delta, z, out, gout, gu, gdelta, gz : (rows, D)   B, C : (rows, G, N), channel d uses
//   group d / (D/G)      A : (D, N)      Dskip, bias : (D,)
//   h0, hlast, gh0, gA_part : (S, D, N)   gD_part, gbias_part : (S, D)
//   ckpt : (checkpoints, D, N)            gB_part, gC_part : (blocks per group, rows, G, N)
//   offsets (S+1): sequence s is rows [offsets[s], offsets[s+1]); ckpt_off (S+1): its
//   checkpoints (the state before step c*K of the sequence, c = 0, 1, ...) are
//   ckpt[ckpt_off[s] + c]. Null pointers: Dskip, z, bias (absent); h0 (zeros); hlast, ckpt,
//   gh0, ghlast (not wanted / zero).

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
  static Scalar exp_clamped(Scalar a) { return {std::exp(a.v)}; }
  friend Scalar operator-(Scalar a, Scalar b) { return {a.v - b.v}; }
  friend Scalar operator/(Scalar a, Scalar b) { return {a.v / b.v}; }
  static Scalar max(Scalar a, Scalar b) { return {a.v > b.v ? a.v : b.v}; }
  static Scalar abs(Scalar a) { return {std::fabs(a.v)}; }
  static Scalar if_negative(Scalar x, Scalar a, Scalar b) { return {x.v < T(0) ? a.v : b.v}; }
  static Scalar log1p(Scalar a) { return {std::log1p(a.v)}; }
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
  // exp(x) = 2^k 2^f with k = round(x log2 e) and f = x log2 e - k in [-1/2, 1/2], formed
  // by fma with one rounding plus the constant's low part; 2^f by a degree-6 polynomial
  // (Cephes' exp2f coefficients). Within 1e-7 relative of exp over [-87, 88]; arguments
  // are clamped to that range (below it: about 1.6e-38), NaN propagates (max and min
  // return their second operand when one is NaN).
  static F8 exp_clamped(F8 a) {
    const __m256 x =
        _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), a.v));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_fmsub_ps(x, _mm256_set1_ps(1.44269502162933349609375f), k);
    f = _mm256_fmadd_ps(x, _mm256_set1_ps(1.925963033500011e-08f), f);
    __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return {_mm256_mul_ps(p, _mm256_castsi256_ps(e))};
  }
  // The same, but 0 below -87, so that exp(-inf) = 0 exactly (softplus(-inf) = 0: Mamba's
  // padding); used per (step, channel), where the two extra operations cost little.
  static F8 exp(F8 a) {
    const __m256 tiny = _mm256_cmp_ps(a.v, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    return {_mm256_andnot_ps(tiny, exp_clamped(a).v)};
  }
  friend F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend F8 operator/(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }
  static F8 max(F8 a, F8 b) { return {_mm256_max_ps(a.v, b.v)}; }
  static F8 abs(F8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
  static F8 if_negative(F8 x, F8 a, F8 b) { return {_mm256_blendv_ps(b.v, a.v, x.v)}; }
  // log(1 + e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) in [0, 1/3]: the odd series
  // to s^15 is within 2e-8 relative, and accurate for tiny e (no 1 + e is formed)
  static F8 log1p(F8 e) {
    const __m256 s = _mm256_div_ps(e.v, _mm256_add_ps(e.v, _mm256_set1_ps(2.0f)));
    const __m256 s2 = _mm256_mul_ps(s, s);
    __m256 p = _mm256_set1_ps(1.0f / 15);
    for (float c : {1.0f / 13, 1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f})
      p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(c));
    return {_mm256_mul_ps(_mm256_add_ps(s, s), p)};
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

// The transition from e = exp(dt A), and its derivative d a / d(dt A) from a.
template <bool Negative, typename V>
inline V transition(V e) {
  if constexpr (Negative) return V::fma(V::set1(2), e, V::set1(-1));
  return e;
}
template <bool Negative, typename V>
inline V transition_slope(V a) {
  if constexpr (Negative) return a + V::set1(1);  // 2 e = a + 1
  return a;
}

// softplus(x) = max(x, 0) + log(1 + exp(-|x|)) and sigmoid(x), sharing exp(-|x|).
template <typename V>
inline V softplus(V x) {
  return V::max(x, V::zero()) + V::log1p(V::exp(V::zero() - V::abs(x)));
}
template <typename V>
inline V sigmoid(V x) {
  const V e = V::exp(V::zero() - V::abs(x));
  return V::if_negative(x, e, V::set1(1)) / (V::set1(1) + e);
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
  i64 units() const { return S * G * nblk; }
};

template <typename T>
Problem make_problem(const i64* offsets, const i64* ckpt_off, i64 S, i64 D, i64 N, i64 G, i64 K,
                     i64 block) {
  constexpr i64 W = LanesOf<T>::type::W;
  Problem p{offsets, ckpt_off, S, D, N, G, K, D / G, 0, 0};
  const i64 want = std::max<i64>(W, (std::min(block, p.Dg) + W - 1) / W * W);
  p.nblk = (p.Dg + want - 1) / want;
  // spread the channels of a group evenly over its blocks, in whole lanes
  p.nb = ((p.Dg + p.nblk - 1) / p.nblk + W - 1) / W * W;
  p.nblk = (p.Dg + p.nb - 1) / p.nb;
  return p;
}


// The optional per-channel parts around the scan.
template <typename T>
struct Pointwise {
  const T* Dskip;  // (D,) or null
  const T* z;      // (rows, D) or null
  const T* bias;   // (D,) or null
  bool softplus;
};

// Copies n values into a zero-padded lane buffer (or zeros if src is null).
template <typename T>
inline void stage(T* dst, const T* src, i64 n, i64 padded) {
  if (src)
    std::memcpy(dst, src, sizeof(T) * n);
  else
    std::fill(dst, dst + n, T(0));
  std::fill(dst + n, dst + padded, T(0));
}

// ------------------------------------------------------------------ forward

template <typename T, bool Neg>
void forward(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm,
             const Pointwise<T>& pw, const T* h0, T* out, T* hlast, T* ckpt, const Problem& P,
             int nthreads) {
  using V = typename LanesOf<T>::type;
  constexpr i64 W = V::W;
  const i64 D = P.D, N = P.N, G = P.G, nb = P.nb;
  const int nt = threads_for((P.offsets[P.S] - P.offsets[0]) * D * N, nthreads);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> At(N * nb), h(N * nb), dv(nb), uv(nb), zv(nb), bv(nb), Dv(nb), ov(nb);
#pragma omp for schedule(dynamic, 1)
    for (i64 unit = 0; unit < P.units(); ++unit) {
      const i64 s = unit / (G * P.nblk);
      const i64 g = (unit / P.nblk) % G;
      const i64 d0 = g * P.Dg + (unit % P.nblk) * nb;
      const i64 nc = std::min(nb, (g + 1) * P.Dg - d0);  // channels of this unit
      if (nc <= 0) continue;
      const i64 nv = (nc + W - 1) / W;  // lane groups actually used
      // state and A transposed to [n][channel]; padding lanes stay 0 (a = 1, no input)
      std::fill(At.begin(), At.end(), T(0));
      std::fill(h.begin(), h.end(), T(0));
      for (i64 j = 0; j < nc; ++j)
        for (i64 n = 0; n < N; ++n) {
          At[n * nb + j] = A[(d0 + j) * N + n];
          if (h0) h[n * nb + j] = h0[(s * D + d0 + j) * N + n];
        }
      stage(bv.data(), pw.bias ? pw.bias + d0 : nullptr, nc, nb);
      stage(Dv.data(), pw.Dskip ? pw.Dskip + d0 : nullptr, nc, nb);
      const i64 r0 = P.offsets[s], r1 = P.offsets[s + 1];
      for (i64 r = r0; r < r1; ++r) {
        const i64 k = r - r0;
        if (ckpt && k % P.K == 0) {
          T* c = ckpt + (P.ckpt_off[s] + k / P.K) * D * N;
          for (i64 j = 0; j < nc; ++j)
            for (i64 n = 0; n < N; ++n) c[(d0 + j) * N + n] = h[n * nb + j];
        }
        stage(dv.data(), delta + r * D + d0, nc, nb);
        stage(uv.data(), u + r * D + d0, nc, nb);
        if (pw.z) stage(zv.data(), pw.z + r * D + d0, nc, nb);
        const T* Br = Bm + (r * G + g) * N;
        const T* Cr = Cm + (r * G + g) * N;
        for (i64 v = 0; v < nv; ++v) {
          V dtl = V::load(&dv[v * W]) + V::load(&bv[v * W]);
          if (pw.softplus) dtl = softplus(dtl);
          const V ul = V::load(&uv[v * W]);
          const V dul = dtl * ul;
          V acc = V::zero();
          for (i64 n = 0; n < N; ++n) {
            T* hp = &h[n * nb + v * W];
            const V a = transition<Neg>(V::exp_clamped(dtl * V::load(&At[n * nb + v * W])));
            const V hn = V::fma(a, V::load(hp), dul * V::set1(Br[n]));
            hn.store(hp);
            acc = V::fma(hn, V::set1(Cr[n]), acc);
          }
          acc = V::fma(V::load(&Dv[v * W]), ul, acc);
          if (pw.z) {
            const V zl = V::load(&zv[v * W]);
            acc = acc * zl * sigmoid(zl);
          }
          acc.store(&ov[v * W]);
        }
        std::memcpy(out + r * D + d0, ov.data(), sizeof(T) * nc);
      }
      if (hlast)
        for (i64 j = 0; j < nc; ++j)
          for (i64 n = 0; n < N; ++n) hlast[(s * D + d0 + j) * N + n] = h[n * nb + j];
    }
  }
}

// ------------------------------------------------------------------ backward

template <typename T>
struct Grads {
  T *gu, *gdelta, *gz;          // (rows, D); gz null when there is no z
  T *gA_part, *gD_part, *gbias_part;  // per sequence; gD / gbias null when absent
  T *gB_part, *gC_part;         // per channel block
  T* gh0;                       // (S, D, N) or null
};

template <typename T, bool Neg>
void backward(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm,
              const Pointwise<T>& pw, const T* ckpt, const T* gout, const T* ghlast,
              const Grads<T>& gr, const Problem& P, int nthreads) {
  using V = typename LanesOf<T>::type;
  constexpr i64 W = V::W;
  const i64 D = P.D, N = P.N, G = P.G, nb = P.nb, K = P.K;
  const i64 rows = P.offsets[P.S] - P.offsets[0];
  const int nt = threads_for(rows * D * N, nthreads);
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> At(N * nb), lam(N * nb), gAacc(N * nb), hstart(N * nb);
    std::vector<T> abuf(K * N * nb), hbuf(K * N * nb);       // a_t and h_t of a chunk
    std::vector<T> dtbuf(K * nb), sgbuf(K * nb), ybuf(K * nb);  // dt, sigmoid, y of a chunk
    std::vector<T> dv(nb), uv(nb), zv(nb), gov(nb), bv(nb), Dv(nb);
    std::vector<T> guv(nb), gdv(nb), gzv(nb), gDacc(nb), gbacc(nb);
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
      std::fill(gDacc.begin(), gDacc.end(), T(0));
      std::fill(gbacc.begin(), gbacc.end(), T(0));
      for (i64 j = 0; j < nc; ++j)
        for (i64 n = 0; n < N; ++n) {
          At[n * nb + j] = A[(d0 + j) * N + n];
          if (ghlast) lam[n * nb + j] = ghlast[(s * D + d0 + j) * N + n];
        }
      stage(bv.data(), pw.bias ? pw.bias + d0 : nullptr, nc, nb);
      stage(Dv.data(), pw.Dskip ? pw.Dskip + d0 : nullptr, nc, nb);
      const i64 r0 = P.offsets[s], len = P.offsets[s + 1] - r0;
      const i64 nchunks = (len + K - 1) / K;
      for (i64 c = nchunks - 1; c >= 0; --c) {
        const i64 k0 = c * K, kl = std::min(K, len - k0);
        // 1) recompute the chunk's steps, transitions, states and outputs y
        const T* cp = ckpt + (P.ckpt_off[s] + c) * D * N;
        for (i64 j = 0; j < nc; ++j)
          for (i64 n = 0; n < N; ++n) hstart[n * nb + j] = cp[(d0 + j) * N + n];
        for (i64 k = 0; k < kl; ++k) {
          const i64 r = r0 + k0 + k;
          stage(dv.data(), delta + r * D + d0, nc, nb);
          stage(uv.data(), u + r * D + d0, nc, nb);
          const T* Br = Bm + (r * G + g) * N;
          const T* Cr = Cm + (r * G + g) * N;
          const T* prev = k ? &hbuf[(k - 1) * N * nb] : hstart.data();
          T* hk = &hbuf[k * N * nb];
          T* ak = &abuf[k * N * nb];
          for (i64 v = 0; v < nv; ++v) {
            const V x = V::load(&dv[v * W]) + V::load(&bv[v * W]);
            const V dtl = pw.softplus ? softplus(x) : x;
            dtl.store(&dtbuf[k * nb + v * W]);
            if (pw.softplus) sigmoid(x).store(&sgbuf[k * nb + v * W]);
            const V dul = dtl * V::load(&uv[v * W]);
            V acc = V::zero();
            for (i64 n = 0; n < N; ++n) {
              const i64 o = n * nb + v * W;
              const V a = transition<Neg>(V::exp_clamped(dtl * V::load(&At[o])));
              a.store(ak + o);
              const V hn = V::fma(a, V::load(prev + o), dul * V::set1(Br[n]));
              hn.store(hk + o);
              acc = V::fma(hn, V::set1(Cr[n]), acc);
            }
            acc.store(&ybuf[k * nb + v * W]);
          }
        }
        // 2) the adjoint recurrence backwards through the chunk
        for (i64 k = kl - 1; k >= 0; --k) {
          const i64 r = r0 + k0 + k;
          stage(uv.data(), u + r * D + d0, nc, nb);
          stage(gov.data(), gout + r * D + d0, nc, nb);
          if (pw.z) stage(zv.data(), pw.z + r * D + d0, nc, nb);
          const T* Br = Bm + (r * G + g) * N;
          const T* Cr = Cm + (r * G + g) * N;
          const T* hprev = k ? &hbuf[(k - 1) * N * nb] : hstart.data();
          const T* hk = &hbuf[k * N * nb];
          const T* ak = &abuf[k * N * nb];
          for (i64 n = 0; n < N; ++n) gBl[n] = gCl[n] = V::zero();
          for (i64 v = 0; v < nv; ++v) {
            const V dtl = V::load(&dtbuf[k * nb + v * W]), ul = V::load(&uv[v * W]);
            const V Dl = V::load(&Dv[v * W]), go = V::load(&gov[v * W]);
            V gyl = go;
            if (pw.z) {  // out = (y + D u) silu(z)
              const V zl = V::load(&zv[v * W]);
              const V sg = sigmoid(zl);
              const V pre = V::fma(Dl, ul, V::load(&ybuf[k * nb + v * W]));
              gyl = go * zl * sg;
              const V dsilu = sg * V::fma(zl, V::set1(1) - sg, V::set1(1));
              (go * pre * dsilu).store(&gzv[v * W]);
            }
            V::fma(gyl, ul, V::load(&gDacc[v * W])).store(&gDacc[v * W]);
            const V dul = dtl * ul;
            V gdt_a = V::zero(), gu_a = V::zero();
            for (i64 n = 0; n < N; ++n) {
              const i64 o = n * nb + v * W;
              const V bn = V::set1(Br[n]);
              const V lamn = V::fma(gyl, V::set1(Cr[n]), V::load(&lam[o]));  // lam_t
              gCl[n] = V::fma(gyl, V::load(hk + o), gCl[n]);
              gBl[n] = V::fma(lamn, dul, gBl[n]);
              const V a = V::load(ak + o);
              const V da = transition_slope<Neg>(a);  // d a / d(dt A)
              const V gz = lamn * V::load(hprev + o) * da;   // gradient of dt A
              gdt_a = V::fma(gz, V::load(&At[o]), gdt_a);
              V::fma(gz, dtl, V::load(&gAacc[o])).store(&gAacc[o]);
              gu_a = V::fma(lamn, bn, gu_a);
              (lamn * a).store(&lam[o]);  // a_t lam_t, carried to step t-1
            }
            V::fma(dtl, gu_a, Dl * gyl).store(&guv[v * W]);
            V gdl = V::fma(ul, gu_a, gdt_a);  // gradient of dt
            if (pw.softplus) gdl = gdl * V::load(&sgbuf[k * nb + v * W]);
            gdl.store(&gdv[v * W]);
            (V::load(&gbacc[v * W]) + gdl).store(&gbacc[v * W]);
          }
          std::memcpy(gr.gu + r * D + d0, guv.data(), sizeof(T) * nc);
          std::memcpy(gr.gdelta + r * D + d0, gdv.data(), sizeof(T) * nc);
          if (gr.gz) std::memcpy(gr.gz + r * D + d0, gzv.data(), sizeof(T) * nc);
          T* gBr = gr.gB_part + ((blk * rows + r) * G + g) * N;
          T* gCr = gr.gC_part + ((blk * rows + r) * G + g) * N;
          for (i64 n = 0; n < N; ++n) {
            gBr[n] = gBl[n].sum();
            gCr[n] = gCl[n].sum();
          }
        }
      }
      for (i64 j = 0; j < nc; ++j) {
        for (i64 n = 0; n < N; ++n) {
          gr.gA_part[(s * D + d0 + j) * N + n] = gAacc[n * nb + j];
          if (gr.gh0) gr.gh0[(s * D + d0 + j) * N + n] = lam[n * nb + j];
        }
        if (gr.gD_part) gr.gD_part[s * D + d0 + j] = gDacc[j];
        if (gr.gbias_part) gr.gbias_part[s * D + d0 + j] = gbacc[j];
      }
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ C entry points

#define RNNX_SSCAN(SUFFIX, T)                                                                  \
  extern "C" void rnnx_sscan_fwd_##SUFFIX(                                                     \
      const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip,        \
      const T* z, const T* bias, int softplus, const T* h0, T* out, T* hlast, T* ckpt,         \
      const i64* offsets, const i64* ckpt_off, i64 S, i64 D, i64 N, i64 G, i64 K, i64 block,  \
      int negative, int nthreads) {                                                            \
    const Problem P = make_problem<T>(offsets, ckpt_off, S, D, N, G, K, block);                \
    const Pointwise<T> pw{Dskip, z, bias, softplus != 0};                                      \
    (negative ? forward<T, true> : forward<T, false>)(u, delta, A, Bm, Cm, pw, h0, out, hlast,  \
                                                      ckpt, P, nthreads);                      \
  }                                                                                            \
  extern "C" i64 rnnx_sscan_blocks_##SUFFIX(i64 D, i64 G, i64 block) {                         \
    return make_problem<T>(nullptr, nullptr, 1, D, 1, G, 1, block).nblk;                    \
  }                                                                                            \
  extern "C" void rnnx_sscan_bwd_##SUFFIX(                                                     \
      const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip,        \
      const T* z, const T* bias, int softplus, const T* ckpt, const T* gout, const T* ghlast,  \
      T* gu, T* gdelta, T* gz, T* gA_part, T* gD_part, T* gbias_part, T* gB_part,              \
      T* gC_part, T* gh0, const i64* offsets, const i64* ckpt_off, i64 S, i64 D, i64 N, i64 G, \
      i64 K, i64 block, int negative, int nthreads) {                                          \
    const Problem P = make_problem<T>(offsets, ckpt_off, S, D, N, G, K, block);                \
    const Pointwise<T> pw{Dskip, z, bias, softplus != 0};                                      \
    const Grads<T> gr{gu, gdelta, gz, gA_part, gD_part, gbias_part, gB_part, gC_part, gh0};    \
    (negative ? backward<T, true> : backward<T, false>)(u, delta, A, Bm, Cm, pw, ckpt, gout,    \
                                                        ghlast, gr, P, nthreads);              \
  }

RNNX_SSCAN(f32, float)
RNNX_SSCAN(f64, double)
