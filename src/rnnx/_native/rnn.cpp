// Fused time loops of the classic nonlinear RNN cells on the CPU: Elman (tanh/relu),
// LSTM, GRU (gates as torch.nn) and sLSTM (xLSTM, arXiv 2405.04517, eqs. 8-17), forward
// and backward through time, with head-wise block-diagonal recurrent weights (FlashRNN,
// arXiv 2412.07752).
//
// The input projections of all time steps are one large matrix product done by the
// caller (torch), so a step here is: the recurrent product rec = h_{t-1} R^T for one
// block of units, then the gate nonlinearities and the state update of those units,
// straight from the accumulator registers. Backward runs the adjoint recurrence in
// native code too: per step the pointwise derivative of the cell, then
// dh_{t-1} += dpre_t R. The weight gradients are large products over all steps, left to
// the caller (torch).
//
// Layout (batch-first, H = hidden units, NH heads of DH = H / NH units, G gates):
//   gx      row of (b, t) at gx + b*gx_sb + t*gx_st: G*H preactivations, gate-major
//           (gate g of unit j at g*H + j), biases already added;
//   R       (G*H, DH) row-major, row g*H + j holds the weights of unit j (head j / DH)
//           over its head's DH inputs (num_heads = 1: torch's weight_hh);
//   y       (B, T, H) the outputs h_t (also the history of h the recurrence reads);
//   states  (S, B, H): h first, then the cell's other states (LSTM c; sLSTM c, n, m);
//   stseq   (T, B, S-1, H) the other states at every step (for backward; time-major,
//           so that one step's rows are contiguous);
//   saved   (T, B, NSV, H) per-step values the backward pass needs (cell-specific);
//   dgx     (B, T, G*H) gradient of the loss w.r.t. gx;
//   drec    (B, T, G*H) gradient w.r.t. the recurrent preactivations h R^T (GRU only,
//           where the n gate's recurrent part is scaled by r; the others share dgx).
// With lengths, step t of sequence b is padding when t >= lengths[b]: the state is
// carried unchanged (y holds the carried h) and, backward, the gradients pass through.
//
// Speed: the recurrent weights are packed once per call into panels (one panel = the
// G gates of a block of units, k-major), so a register tile of MR batch rows x G vectors
// streams one contiguous panel that stays in L1 across the batch tiles. Threads own
// blocks of units; when every head lies within one thread (num_heads a multiple of the
// thread count) the threads never wait for each other, otherwise they meet at one
// barrier per step. Float uses AVX2/FMA with Cephes-style exp/log (about 1 ulp);
// double uses the C library's functions lane by lane (exact reference for gradcheck).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common.h"

using rnnx::i64;

namespace {

// --------------------------------------------------------------------------- vectors

// Portable lanes: plain loops the compiler vectorises; libm for the transcendentals.
template <typename T, int N>
struct Lanes {
  using scalar = T;
  static constexpr int W = N;
  T v[N];
  static Lanes load(const T* p) {
    Lanes r;
    for (int i = 0; i < N; ++i) r.v[i] = p[i];
    return r;
  }
  static Lanes loadn(const T* p, int n) {
    Lanes r;
    for (int i = 0; i < N; ++i) r.v[i] = i < n ? p[i] : T(0);
    return r;
  }
  static Lanes bcast(const T* p) { return set1(*p); }
  static Lanes set1(T x) {
    Lanes r;
    for (int i = 0; i < N; ++i) r.v[i] = x;
    return r;
  }
  static Lanes zero() { return set1(T(0)); }
  void store(T* p) const {
    for (int i = 0; i < N; ++i) p[i] = v[i];
  }
  void storen(T* p, int n) const {
    for (int i = 0; i < N && i < n; ++i) p[i] = v[i];
  }
};

#define RNNX_LANES_BINOP(OP)                                              \
  template <typename T, int N>                                            \
  inline Lanes<T, N> operator OP(const Lanes<T, N>& a, const Lanes<T, N>& b) { \
    Lanes<T, N> r;                                                        \
    for (int i = 0; i < N; ++i) r.v[i] = a.v[i] OP b.v[i];                \
    return r;                                                             \
  }
RNNX_LANES_BINOP(+)
RNNX_LANES_BINOP(-)
RNNX_LANES_BINOP(*)
RNNX_LANES_BINOP(/)
#undef RNNX_LANES_BINOP

template <typename T, int N, typename F>
inline Lanes<T, N> lanewise(const Lanes<T, N>& a, F f) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = f(a.v[i]);
  return r;
}
template <typename T, int N>
inline Lanes<T, N> fmadd(const Lanes<T, N>& a, const Lanes<T, N>& b, const Lanes<T, N>& c) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
  return r;
}
template <typename T, int N>
inline Lanes<T, N> vmax(const Lanes<T, N>& a, const Lanes<T, N>& b) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = rnnx::max_nan(a.v[i], b.v[i]);
  return r;
}
template <typename T, int N>
inline Lanes<T, N> vmin(const Lanes<T, N>& a, const Lanes<T, N>& b) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = rnnx::min_nan(a.v[i], b.v[i]);
  return r;
}
// max(x, 0), NaN for NaN (as torch.relu).
template <typename T, int N>
inline Lanes<T, N> vrelu(const Lanes<T, N>& a) {
  return vmax(a, Lanes<T, N>::zero());
}
// a > b ? x : y and a == b ? x : y, lane by lane.
template <typename T, int N>
inline Lanes<T, N> select_gt(const Lanes<T, N>& a, const Lanes<T, N>& b, const Lanes<T, N>& x,
                             const Lanes<T, N>& y) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = a.v[i] > b.v[i] ? x.v[i] : y.v[i];
  return r;
}
template <typename T, int N>
inline Lanes<T, N> select_eq(const Lanes<T, N>& a, const Lanes<T, N>& b, const Lanes<T, N>& x,
                             const Lanes<T, N>& y) {
  Lanes<T, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = a.v[i] == b.v[i] ? x.v[i] : y.v[i];
  return r;
}
template <typename T, int N>
inline Lanes<T, N> vexp(const Lanes<T, N>& a) {
  return lanewise(a, [](T x) { return std::exp(x); });
}
template <typename T, int N>
inline Lanes<T, N> vtanh(const Lanes<T, N>& a) {
  return lanewise(a, [](T x) { return std::tanh(x); });
}
template <typename T, int N>
inline Lanes<T, N> vsigmoid(const Lanes<T, N>& a) {
  return lanewise(a, [](T x) {
    const T e = std::exp(-std::fabs(x));
    const T r = T(1) / (T(1) + e);
    return x >= T(0) ? r : e * r;
  });
}
template <typename T, int N>
inline Lanes<T, N> vlogsigmoid(const Lanes<T, N>& a) {
  return lanewise(a, [](T x) { return rnnx::min_nan(x, T(0)) - std::log1p(std::exp(-std::fabs(x))); });
}


// A value the compiler must keep in a register: stops it from folding a load into every
// FMA that uses it (one load per use instead of one per k).
template <typename T, int N>
inline Lanes<T, N> in_reg(Lanes<T, N> x) {
  return x;
}

// The sums of eight vectors, out[i] = sum of the lanes of a[i] (a = a0[0..3], a1[0..3]).
template <typename T, int N>
inline void reduce8(const Lanes<T, N>* a0, const Lanes<T, N>* a1, T* out) {
  for (int i = 0; i < 8; ++i) {
    const Lanes<T, N>& x = i < 4 ? a0[i] : a1[i - 4];
    T s = 0;
    for (int l = 0; l < N; ++l) s += x.v[l];
    out[i] = s;
  }
}

#if RNNX_AVX2
// Eight floats in one AVX register.
struct F8 {
  using scalar = float;
  static constexpr int W = 8;
  __m256 v;
  static __m256i mask(int n) {
    alignas(32) static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                              0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 8 - n));
  }
  static F8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static F8 loadn(const float* p, int n) {
    return n >= 8 ? load(p) : n <= 0 ? zero() : F8{_mm256_maskload_ps(p, mask(n))};
  }
  static F8 bcast(const float* p) { return {_mm256_broadcast_ss(p)}; }
  static F8 set1(float x) { return {_mm256_set1_ps(x)}; }
  static F8 zero() { return {_mm256_setzero_ps()}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  void storen(float* p, int n) const {
    if (n >= 8)
      store(p);
    else if (n > 0)
      _mm256_maskstore_ps(p, mask(n), v);
  }
};
inline F8 in_reg(F8 x) {
  asm("" : "+x"(x.v));
  return x;
}
inline F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline F8 operator/(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }
inline F8 fmadd(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
// Maxima and minima keep NaN (common.h): max(x, 0) puts x second, which is enough.
inline F8 vmax(F8 a, F8 b) { return {rnnx::max_nan_ps(a.v, b.v)}; }
inline F8 vrelu(F8 a) { return {_mm256_max_ps(_mm256_setzero_ps(), a.v)}; }
inline F8 vabs(F8 a) { return {rnnx::abs_ps(a.v)}; }
inline F8 select_gt(F8 a, F8 b, F8 x, F8 y) {
  return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ))};
}
inline F8 select_eq(F8 a, F8 b, F8 x, F8 y) {
  return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, b.v, _CMP_EQ_OQ))};
}
// The transcendentals of common.h (Cephes exp/log, ~1 ulp; tanh and sigmoid without
// overflow; the cells only ever take exp of arguments <= 0).
inline F8 vexp(F8 a) { return {rnnx::exp_ps(a.v)}; }
inline F8 vtanh(F8 a) { return {rnnx::tanh_ps(a.v)}; }
inline F8 vsigmoid(F8 a) { return {rnnx::sigmoid_ps(a.v)}; }
inline F8 vlogsigmoid(F8 a) { return {rnnx::logsigmoid_ps(a.v)}; }
inline void reduce8(const F8* a0, const F8* a1, float* out) {
  const __m256 t0 = _mm256_hadd_ps(a0[0].v, a0[1].v), t1 = _mm256_hadd_ps(a0[2].v, a0[3].v);
  const __m256 t2 = _mm256_hadd_ps(a1[0].v, a1[1].v), t3 = _mm256_hadd_ps(a1[2].v, a1[3].v);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                      _mm256_permute2f128_ps(u0, u1, 0x31)));
}
using VecF = F8;
#else
using VecF = Lanes<float, 8>;
#endif
using VecD = Lanes<double, 4>;

// --------------------------------------------------------------------------- cells
//
// Each cell works on vectors of W units of one batch row. fwd gets the input and
// recurrent preactivations of its G gates, the previous h and other states, and
// returns h, the new states and what backward needs (sv). bwd gets dh (total) and the
// carried gradients of the other states dS (updated in place to the step before), and
// returns the preactivation gradients and dh_direct, the part of dh_{t-1} that does not
// go through R (GRU's z * dh).
enum Act { kTanh = 0, kRelu = 1 };

template <class V>
struct ElmanCell {
  static constexpr int G = 1, NST = 0, NSV = 0;
  static void fwd(const V* gx, const V* rec, V, V, const V*, V& h, V*, V*, int act) {
    V p = gx[0] + rec[0];
    h = act == kRelu ? vrelu(p) : vtanh(p);
  }
  static void bwd(const V*, V h, V, const V*, const V*, V dh, V*, V* dgx, V* drec, V& dhd,
                  int act) {
    V d = act == kRelu ? select_gt(h, V::zero(), dh, V::zero()) : dh * (V::set1(1) - h * h);
    dgx[0] = d;
    drec[0] = d;
    dhd = V::zero();
  }
};

// torch.nn.LSTM: gates i, f, g, o; c = f c + i g; h = o tanh(c). sv = activated gates.
template <class V>
struct LstmCell {
  static constexpr int G = 4, NST = 1, NSV = 4;
  static void fwd(const V* gx, const V* rec, V, V, const V* sp, V& h, V* sn, V* sv, int) {
    V i = vsigmoid(gx[0] + rec[0]);
    V f = vsigmoid(gx[1] + rec[1]);
    V g = vtanh(gx[2] + rec[2]);
    V o = vsigmoid(gx[3] + rec[3]);
    V c = fmadd(f, sp[0], i * g);
    h = o * vtanh(c);
    sn[0] = c;
    sv[0] = i;
    sv[1] = f;
    sv[2] = g;
    sv[3] = o;
  }
  static void bwd(const V* sv, V, V, const V* sp, const V* sc, V dh, V* dS, V* dgx, V* drec,
                  V& dhd, int) {
    const V one = V::set1(1);
    V i = sv[0], f = sv[1], g = sv[2], o = sv[3];
    V tc = vtanh(sc[0]);
    V dc = dS[0] + dh * o * (one - tc * tc);
    dgx[0] = dc * g * i * (one - i);
    dgx[1] = dc * sp[0] * f * (one - f);
    dgx[2] = dc * i * (one - g * g);
    dgx[3] = dh * tc * o * (one - o);
    for (int k = 0; k < 4; ++k) drec[k] = dgx[k];
    dS[0] = dc * f;
    dhd = V::zero();
  }
};

// torch.nn.GRU: gates r, z, n; n = tanh(x_n + r (W_hn h + b_hn)); h = n + z (h - n).
// sv = r, z, n and hn = W_hn h + b_hn.
template <class V>
struct GruCell {
  static constexpr int G = 3, NST = 0, NSV = 4;
  static void fwd(const V* gx, const V* rec, V bhn, V hp, const V*, V& h, V*, V* sv, int) {
    V r = vsigmoid(gx[0] + rec[0]);
    V z = vsigmoid(gx[1] + rec[1]);
    V hn = rec[2] + bhn;
    V n = vtanh(fmadd(r, hn, gx[2]));
    h = fmadd(z, hp - n, n);
    sv[0] = r;
    sv[1] = z;
    sv[2] = n;
    sv[3] = hn;
  }
  static void bwd(const V* sv, V, V hp, const V*, const V*, V dh, V*, V* dgx, V* drec, V& dhd,
                  int) {
    const V one = V::set1(1);
    V r = sv[0], z = sv[1], n = sv[2], hn = sv[3];
    V dn = dh * (one - z) * (one - n * n);
    dgx[2] = dn;
    drec[2] = dn * r;
    dgx[1] = dh * (hp - n) * z * (one - z);
    drec[1] = dgx[1];
    dgx[0] = dn * hn * r * (one - r);
    drec[0] = dgx[0];
    dhd = dh * z;
  }
};

// sLSTM (xLSTM, arXiv 2405.04517, eqs. 8-17) with the sigmoid forget gate in log space:
//   m_t = max(log sigma(f~) + m_{t-1}, i~),  i' = exp(i~ - m_t),  f' = exp(log sigma(f~)
//   + m_{t-1} - m_t),  c_t = f' c + i' tanh(z~),  n_t = f' n + i',  h_t = sigma(o~) c_t / n_t.
// Gates i, f, z, o; states h, c, n, m; sv = the preactivations.
template <class V>
struct SlstmCell {
  static constexpr int G = 4, NST = 3, NSV = 4;
  static void fwd(const V* gx, const V* rec, V, V, const V* sp, V& h, V* sn, V* sv, int) {
    V pi = gx[0] + rec[0], pf = gx[1] + rec[1], pz = gx[2] + rec[2], po = gx[3] + rec[3];
    V a = vlogsigmoid(pf) + sp[2];
    V m = vmax(a, pi);
    V ip = vexp(pi - m);
    V fp = vexp(a - m);
    V z = vtanh(pz);
    V o = vsigmoid(po);
    V c = fmadd(fp, sp[0], ip * z);
    V n = fmadd(fp, sp[1], ip);
    h = o * c / n;
    sn[0] = c;
    sn[1] = n;
    sn[2] = m;
    sv[0] = pi;
    sv[1] = pf;
    sv[2] = pz;
    sv[3] = po;
  }
  static void bwd(const V* sv, V, V, const V* sp, const V* sc, V dh, V* dS, V* dgx, V* drec,
                  V& dhd, int) {
    const V one = V::set1(1), zero = V::zero();
    V pi = sv[0], pf = sv[1], pz = sv[2], po = sv[3];
    V a = vlogsigmoid(pf) + sp[2];
    V m = vmax(a, pi);
    V ip = vexp(pi - m);
    V fp = vexp(a - m);
    V z = vtanh(pz);
    V o = vsigmoid(po);
    V c = sc[0], n = sc[1];
    V hn = c / n;
    dgx[3] = dh * hn * o * (one - o);
    V dc = dS[0] + dh * o / n;
    V dn = dS[1] - dh * o * hn / n;
    dgx[2] = dc * ip * (one - z * z);
    V ei = (dc * z + dn) * ip;
    V ef = (dc * sp[0] + dn * sp[1]) * fp;
    V dm = dS[2] - ei - ef;
    // d max(a, i~): all to the larger argument, half each on a tie (as torch.maximum).
    V wa = select_gt(a, pi, one, select_eq(a, pi, V::set1(0.5), zero));
    V da = fmadd(wa, dm, ef);
    dgx[0] = fmadd(one - wa, dm, ei);
    dgx[1] = da * vsigmoid(zero - pf);
    for (int k = 0; k < 4; ++k) drec[k] = dgx[k];
    dS[0] = dc * fp;
    dS[1] = dn * fp;
    dS[2] = da;
    dhd = zero;
  }
};

// --------------------------------------------------------------------------- planning

// How the threads share a step. Threads own blocks of units (a barrier per step unless
// whole heads are per thread), or batch rows when there are too few blocks.
struct Plan {
  int nth;
  bool by_batch;
  bool barrier;
};

constexpr i64 kMinWorkPerThread = i64(1) << 15;  // multiply-adds per step and thread

inline Plan make_plan(i64 B, i64 NH, i64 blocks_per_head, i64 work, int nthreads, int policy) {
  int nth = std::max(1, nthreads);
  nth = static_cast<int>(std::min<i64>(nth, std::max<i64>(1, work / kMinWorkPerThread)));
  if (nth <= 1) return {1, false, false};
  const i64 P = NH * blocks_per_head;
  if (policy == 1) return {static_cast<int>(std::min<i64>(nth, B)), true, false};
  if (NH % nth == 0) return {nth, false, false};
  if (P >= nth) return {nth, false, true};
  if (B >= nth) return {nth, true, false};
  return {1, false, false};
}

inline void ranges(const Plan& plan, int tid, i64 B, i64 NH, i64 bph, i64& p0, i64& p1, i64& b0,
                   i64& b1) {
  const i64 P = NH * bph;
  p0 = 0;
  p1 = P;
  b0 = 0;
  b1 = B;
  if (plan.nth <= 1) return;
  if (plan.by_batch) {
    b0 = B * tid / plan.nth;
    b1 = B * (tid + 1) / plan.nth;
  } else if (!plan.barrier) {  // whole heads
    p0 = NH * tid / plan.nth * bph;
    p1 = NH * (tid + 1) / plan.nth * bph;
  } else {
    p0 = P * tid / plan.nth;
    p1 = P * (tid + 1) / plan.nth;
  }
}

template <typename F>
inline void run_parallel(int nth, F f) {
#if defined(_OPENMP)
  if (nth > 1) {
#pragma omp parallel num_threads(nth)
    f(omp_get_thread_num());
    return;
  }
#endif
  f(0);
}

inline void barrier_if(bool need) {
#if defined(_OPENMP)
  if (need) {
#pragma omp barrier
  }
#else
  (void)need;
#endif
}

// --------------------------------------------------------------------------- kernels

template <template <class> class CellT, class V>
struct Rnn {
  using T = typename V::scalar;
  using Cell = CellT<V>;
  static constexpr int W = V::W;
  static constexpr int G = Cell::G, NST = Cell::NST, NSV = Cell::NSV;
  static constexpr int NSTA = NST > 0 ? NST : 1, NSVA = NSV > 0 ? NSV : 1;
  // forward: blocks of W units per head; backward panels: NVB vectors of dh units,
  // register tile MRB x NVB.
  static constexpr int NVB = 2, MRB = 6, BWB = NVB * W;
#ifndef RNNX_NW
#define RNNX_NW 3
#define RNNX_MRD 4
#endif
  // forward register tile: NW rows of R x MRD batch rows
  static constexpr int NW = RNNX_NW, MRD = RNNX_MRD;

  static i64 blocks_fwd(i64 DH) { return (DH + W - 1) / W; }
  static i64 blocks_bwd(i64 DH) { return (DH + BWB - 1) / BWB; }
  static i64 size_bwd(i64 H, i64 NH) {
    const i64 DH = H / NH;
    return NH * blocks_bwd(DH) * G * DH * BWB;
  }

  // panel (head, block): [g][j][lane] = R[g*H + head*DH + j, block*BWB + lane], zero past DH.
  static void pack_bwd(const T* R, T* out, i64 H, i64 NH) {
    const i64 DH = H / NH, nb = blocks_bwd(DH);
    for (i64 hd = 0; hd < NH; ++hd)
      for (i64 blk = 0; blk < nb; ++blk) {
        T* p = out + (hd * nb + blk) * G * DH * BWB;
        for (int g = 0; g < G; ++g)
          for (i64 j = 0; j < DH; ++j)
            for (int l = 0; l < BWB; ++l) {
              const i64 k = blk * BWB + l;
              *p++ = k < DH ? R[(g * H + hd * DH + j) * DH + k] : T(0);
            }
      }
  }

  // out[r][q] = sum_k w[q][k] h[r*ldh + k] for q < NW rows of R and r < MR batch rows:
  // dot products along k (R rows are contiguous in torch's layout), reduced at the end.
  // NW x MRMAX = 12 accumulators hide the FMA latency; W + h vectors stay in registers.
  template <int MR>
  static inline void dot_tile(const T* const* __restrict w, const T* __restrict h, i64 ldh, i64 K,
                              T* out) {
    V a[MR * NW];
#pragma GCC unroll 16
    for (int i = 0; i < MR * NW; ++i) a[i] = V::zero();
    i64 k = 0;
    for (; k + W <= K; k += W) {
      V x[NW];
#pragma GCC unroll 4
      for (int q = 0; q < NW; ++q) x[q] = in_reg(V::load(w[q] + k));
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const V hv = in_reg(V::load(h + r * ldh + k));
#pragma GCC unroll 4
        for (int q = 0; q < NW; ++q) a[r * NW + q] = fmadd(x[q], hv, a[r * NW + q]);
      }
    }
    if (k < K) {
      const int n = static_cast<int>(K - k);
      V x[NW];
      for (int q = 0; q < NW; ++q) x[q] = V::loadn(w[q] + k, n);
      for (int r = 0; r < MR; ++r) {
        const V hv = V::loadn(h + r * ldh + k, n);
        for (int q = 0; q < NW; ++q) a[r * NW + q] = fmadd(x[q], hv, a[r * NW + q]);
      }
    }
    // out[r*NW + q] = lane sum of a[r*NW + q], eight at a time
    constexpr int NA = MR * NW;
    int i = 0;
    for (; i + 8 <= NA; i += 8) reduce8(a + i, a + i + 4, out + i);
    if (i < NA) {
      V rest[8];
      T tmp[8];
      for (int l = 0; l < 8; ++l) rest[l] = i + l < NA ? a[i + l] : V::zero();
      reduce8(rest, rest + 4, tmp);
      for (int l = 0; i + l < NA; ++l) out[i + l] = tmp[l];
    }
  }

  static inline void dot_tile_n(int mr, const T* const* w, const T* h, i64 ldh, i64 K, T* out) {
    switch (mr) {
      case 1: dot_tile<1>(w, h, ldh, K, out); break;
      case 2: if constexpr (MRD >= 2) dot_tile<2>(w, h, ldh, K, out); break;
      case 3: if constexpr (MRD >= 3) dot_tile<3>(w, h, ldh, K, out); break;
      case 4: if constexpr (MRD >= 4) dot_tile<4>(w, h, ldh, K, out); break;
      case 5: if constexpr (MRD >= 5) dot_tile<5>(w, h, ldh, K, out); break;
      default: if constexpr (MRD >= 6) dot_tile<6>(w, h, ldh, K, out); break;
    }
  }

  // out[r*ldo + v*W + lane] += sum_{g, j} d[r*ldd + g*H + j] * panel[g][j][v*W + lane]
  template <int MR>
  static inline void tile_bwd(const T* __restrict d, i64 ldd, i64 H, const T* __restrict panel,
                              i64 DH, T* __restrict out, i64 ldo, int nvalid) {
    V a[MR][NVB];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NVB; ++v) a[r][v] = V::loadn(out + r * ldo + v * W, nvalid - v * W);
    for (int g = 0; g < G; ++g) {
      const T* dg = d + g * H;
      const T* pg = panel + g * DH * BWB;
      for (i64 j = 0; j < DH; ++j) {
        V w[NVB];
#pragma GCC unroll 8
        for (int v = 0; v < NVB; ++v) w[v] = V::load(pg + j * BWB + v * W);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const V db = V::bcast(dg + r * ldd + j);
#pragma GCC unroll 8
          for (int v = 0; v < NVB; ++v) a[r][v] = fmadd(db, w[v], a[r][v]);
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NVB; ++v) a[r][v].storen(out + r * ldo + v * W, nvalid - v * W);
  }

  static inline void tile_bwd_n(int mr, const T* d, i64 ldd, i64 H, const T* panel, i64 DH, T* out,
                                i64 ldo, int nvalid) {
    switch (mr) {
      case 1: tile_bwd<1>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
      case 2: tile_bwd<2>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
      case 3: tile_bwd<3>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
      case 4: tile_bwd<4>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
      case 5: tile_bwd<5>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
      default: tile_bwd<6>(d, ldd, H, panel, DH, out, ldo, nvalid); break;
    }
  }

  // Strided (b, t) rows: a tensor's row of (b, t) starts at b*sb + t*st.
  struct Rows {
    i64 sb, st;
    i64 at(i64 b, i64 t) const { return b * sb + t * st; }
  };

  static void forward(const T* gx, Rows gxr, const T* R, const T* brec, const T* state0,
                      const i64* lengths, T* y, Rows yr, T* stseq, T* saved, T* sfinal, i64 B,
                      i64 Tn, i64 H, i64 NH, int reverse, int act, int nthreads, int policy) {
    const i64 DH = H / NH, nb = blocks_fwd(DH);
    // The other states (c, n, m) run in place in sfinal; h is read back from y.
    if (NST > 0) std::memcpy(sfinal + B * H, state0 + B * H, sizeof(T) * NST * B * H);
    const Plan plan = make_plan(B, NH, nb, B * G * H * DH, nthreads, policy);
    run_parallel(plan.nth, [&](int tid) {
      i64 p0, p1, bb0, bb1;
      ranges(plan, tid, B, NH, nb, p0, p1, bb0, bb1);
      // rec of one block of units for this thread's batch rows: [b][g][lane]
      T* buf = new T[std::max<i64>(1, bb1 - bb0) * G * W]();
      for (i64 s = 0; s < Tn; ++s) {
        const i64 t = reverse ? Tn - 1 - s : s;
        const i64 tp = reverse ? t + 1 : t - 1;
        const i64 tn = reverse ? t - 1 : t + 1;  // the next step, prefetched
        const bool has_next = s + 1 < Tn;
        const T* hbase = s == 0 ? state0 : y + tp * yr.st;
        const i64 ldh = s == 0 ? H : yr.sb;
        for (i64 p = p0; p < p1; ++p) {
          const i64 hd = p / nb, jj0 = (p % nb) * W;
          const int nu = static_cast<int>(std::min<i64>(W, DH - jj0));
          const i64 j0 = hd * DH + jj0;
          if (has_next) {
            // The rows of the next step are far apart in memory (batch-first) and the
            // hardware prefetcher cannot guess them: ask for them one step ahead.
            for (i64 b = bb0; b < bb1; ++b) {
              for (int g = 0; g < G; ++g) __builtin_prefetch(gx + gxr.at(b, tn) + g * H + j0, 0, 3);
              __builtin_prefetch(y + yr.at(b, tn) + j0, 1, 3);
            }
          }
          // 1) rec = h_{t-1} R^T for the rows (unit u, gate g), q = u*G + g, NW at a time
          const int nq = nu * G;
          for (int q0 = 0; q0 < nq; q0 += NW) {
            const int nr = std::min(NW, nq - q0);
            const T* w[NW];
            for (int i = 0; i < NW; ++i) {
              const int q = std::min(q0 + i, nq - 1);
              w[i] = R + ((q % G) * H + j0 + q / G) * DH;
            }
            for (i64 b0 = bb0; b0 < bb1; b0 += MRD) {
              T out[MRD * NW];
#ifdef RNNX_PROFILE_NO_GEMM
              continue;
#endif
              const int mr = static_cast<int>(std::min<i64>(MRD, bb1 - b0));
              dot_tile_n(mr, w, hbase + b0 * ldh + hd * DH, ldh, DH, out);
              for (int r = 0; r < mr; ++r)
                for (int i = 0; i < nr; ++i) {
                  const int q = q0 + i;
                  buf[((b0 - bb0 + r) * G + q % G) * W + q / G] = out[r * NW + i];
                }
            }
          }
          // 2) the cell update of these units, straight from rec
#ifdef RNNX_PROFILE_NO_POINTWISE
          continue;
#endif
          for (i64 b = bb0; b < bb1; ++b) {
            const bool pad = lengths != nullptr && t >= lengths[b];
            const T* gxrow = gx + gxr.at(b, t);
            const T* hprow = hbase + b * ldh;
            const i64 row = t * B + b;  // time-major rows of stseq and saved
            V hp = V::loadn(hprow + j0, nu);
            V sp[NSTA], sn[NSTA], sv[NSVA], h;
            for (int k = 0; k < NST; ++k) sp[k] = V::loadn(sfinal + (1 + k) * B * H + b * H + j0, nu);
            if (pad) {
              h = hp;
              for (int k = 0; k < NST; ++k) sn[k] = sp[k];
              for (int k = 0; k < NSV; ++k) sv[k] = V::zero();
            } else {
              V gxv[G], recv[G];
              for (int g = 0; g < G; ++g) {
                gxv[g] = V::loadn(gxrow + g * H + j0, nu);
                recv[g] = V::loadn(buf + ((b - bb0) * G + g) * W, nu);
              }
              const V bh = brec != nullptr ? V::loadn(brec + j0, nu) : V::zero();
              Cell::fwd(gxv, recv, bh, hp, sp, h, sn, sv, act);
            }
            h.storen(y + yr.at(b, t) + j0, nu);
            for (int k = 0; k < NST; ++k) {
              sn[k].storen(sfinal + (1 + k) * B * H + b * H + j0, nu);
              if (stseq != nullptr) sn[k].storen(stseq + (row * NST + k) * H + j0, nu);
            }
            if (saved != nullptr)
              for (int k = 0; k < NSV; ++k) sv[k].storen(saved + (row * NSV + k) * H + j0, nu);
          }
        }
        if (has_next) barrier_if(plan.barrier);
      }
      delete[] buf;
    });
    const i64 tl = reverse ? 0 : Tn - 1;
    for (i64 b = 0; b < B; ++b) std::memcpy(sfinal + b * H, y + yr.at(b, tl), sizeof(T) * H);
  }

  static void backward(const T* Rpb, const T* state0, const i64* lengths, const T* y, Rows yr,
                       const T* stseq, const T* saved, const T* dy, Rows dyr, const T* dfinal,
                       T* dgx, T* drec, Rows dr_rows, T* dstate0, i64 B, i64 Tn, i64 H, i64 NH,
                       int reverse, int act, int nthreads, int policy) {
    const i64 DH = H / NH, nb = blocks_bwd(DH);
    // dstate0 carries the gradients: [0] w.r.t. h_t (direct part, then + the product
    // with R), [1..] w.r.t. the other states.
    if (dfinal != nullptr)
      std::memcpy(dstate0, dfinal, sizeof(T) * (1 + NST) * B * H);
    else
      std::memset(dstate0, 0, sizeof(T) * (1 + NST) * B * H);
    T* const dr = drec != nullptr ? drec : dgx;
    const Plan plan = make_plan(B, NH, nb, B * G * H * DH, nthreads, policy);
    run_parallel(plan.nth, [&](int tid) {
      i64 p0, p1, bb0, bb1;
      ranges(plan, tid, B, NH, nb, p0, p1, bb0, bb1);
      for (i64 s = Tn - 1; s >= 0; --s) {
        const i64 t = reverse ? Tn - 1 - s : s;
        const i64 tp = reverse ? t + 1 : t - 1;
        // 1) the cell's derivative for the units this thread owns
        for (i64 p = p0; p < p1; ++p) {
          const i64 hd = p / nb, blk = p % nb;
          for (i64 b = bb0; b < bb1; ++b) {
            const bool pad = lengths != nullptr && t >= lengths[b];
            const i64 row = t * B + b;
            const T* hprow = s == 0 ? state0 + b * H : y + yr.at(b, tp);
            if (s > 0) {
              // prefetch what the step before needs (see forward)
              const i64 j = hd * DH + blk * BWB, rowp = tp * B + b;
              for (int k = 0; k < NSV; ++k) __builtin_prefetch(saved + (rowp * NSV + k) * H + j, 0, 3);
              for (int k = 0; k < NST; ++k) {
                __builtin_prefetch(stseq + (rowp * NST + k) * H + j, 0, 3);
                if (s > 1)
                  __builtin_prefetch(stseq + (((reverse ? tp + 1 : tp - 1) * B + b) * NST + k) * H + j, 0, 3);
              }
              __builtin_prefetch(y + yr.at(b, tp) + j, 0, 3);
              if (dy != nullptr) __builtin_prefetch(dy + dyr.at(b, tp) + j, 0, 3);
              for (int g = 0; g < G; ++g) {
                __builtin_prefetch(dgx + dr_rows.at(b, tp) + g * H + j, 1, 3);
                if (drec != nullptr) __builtin_prefetch(drec + dr_rows.at(b, tp) + g * H + j, 1, 3);
              }
            }
            for (int vb = 0; vb < NVB; ++vb) {
              const i64 jj = blk * BWB + vb * W;
              if (jj >= DH) break;
              const int n = static_cast<int>(std::min<i64>(W, DH - jj));
              const i64 j = hd * DH + jj;
              V dh = V::loadn(dstate0 + b * H + j, n);
              if (dy != nullptr) dh = dh + V::loadn(dy + dyr.at(b, t) + j, n);
              V dS[NSTA], dgv[G], drv[G], dhd;
              for (int k = 0; k < NST; ++k) dS[k] = V::loadn(dstate0 + (1 + k) * B * H + b * H + j, n);
              if (pad) {
                for (int g = 0; g < G; ++g) dgv[g] = drv[g] = V::zero();
                dhd = dh;
              } else {
                V sv[NSVA], sp[NSTA], sc[NSTA];
                for (int k = 0; k < NSV; ++k) sv[k] = V::loadn(saved + (row * NSV + k) * H + j, n);
                for (int k = 0; k < NST; ++k) {
                  sc[k] = V::loadn(stseq + (row * NST + k) * H + j, n);
                  sp[k] = s == 0 ? V::loadn(state0 + (1 + k) * B * H + b * H + j, n)
                                 : V::loadn(stseq + ((tp * B + b) * NST + k) * H + j, n);
                }
                const V h = V::loadn(y + yr.at(b, t) + j, n);
                const V hp = V::loadn(hprow + j, n);
                Cell::bwd(sv, h, hp, sp, sc, dh, dS, dgv, drv, dhd, act);
              }
              for (int g = 0; g < G; ++g) {
                dgv[g].storen(dgx + dr_rows.at(b, t) + g * H + j, n);
                if (drec != nullptr) drv[g].storen(drec + dr_rows.at(b, t) + g * H + j, n);
              }
              dhd.storen(dstate0 + b * H + j, n);
              for (int k = 0; k < NST; ++k) dS[k].storen(dstate0 + (1 + k) * B * H + b * H + j, n);
            }
          }
        }
        barrier_if(plan.barrier);
        // 2) dh_{t-1} += dpre_t R for the same units (rows of this head only)
        for (i64 p = p0; p < p1; ++p) {
          const i64 hd = p / nb, blk = p % nb;
          const i64 k0 = blk * BWB;
          const int nvalid = static_cast<int>(std::min<i64>(BWB, DH - k0));
          const T* panel = Rpb + p * G * DH * BWB;
          for (i64 b0 = bb0; b0 < bb1; b0 += MRB) {
            const int mr = static_cast<int>(std::min<i64>(MRB, bb1 - b0));
            tile_bwd_n(mr, dr + dr_rows.at(b0, t) + hd * DH, dr_rows.sb, H, panel, DH,
                       dstate0 + b0 * H + hd * DH + k0, H, nvalid);
          }
        }
      }
    });
  }
};

}  // namespace

// --------------------------------------------------------------------------- C API

#define RNNX_RNN_API(NAME, CELL, T, V)                                                          \
  extern "C" void rnnx_rnn_layout_##NAME(int64_t* out) {                                      \
    using R = Rnn<CELL, V>;                                                                   \
    out[0] = R::G;                                                                            \
    out[1] = R::NST;                                                                          \
    out[2] = R::NSV;                                                                          \
  }                                                                                           \
  extern "C" int64_t rnnx_rnn_packed_size_##NAME(int64_t H, int64_t NH) {                   \
    return Rnn<CELL, V>::size_bwd(H, NH);                                                     \
  }                                                                                           \
  extern "C" void rnnx_rnn_pack_##NAME(const T* R, T* out, int64_t H, int64_t NH) {           \
    Rnn<CELL, V>::pack_bwd(R, out, H, NH);                                                    \
  }                                                                                           \
  extern "C" void rnnx_rnn_fwd_##NAME(                                                        \
      const T* gx, int64_t gx_sb, int64_t gx_st, const T* R, const T* brec, const T* state0,  \
      const int64_t* lengths, T* y, int64_t y_sb, int64_t y_st, T* stseq, T* saved,           \
      T* sfinal, int64_t B, int64_t Tn, int64_t H, int64_t NH, int reverse, int act,          \
      int nthreads, int policy) {                                                             \
    Rnn<CELL, V>::forward(gx, {gx_sb, gx_st}, R, brec, state0, lengths, y, {y_sb, y_st},      \
                          stseq, saved, sfinal, B, Tn, H, NH, reverse, act, nthreads, policy);\
  }                                                                                           \
  extern "C" void rnnx_rnn_bwd_##NAME(                                                        \
      const T* Rpb, const T* state0, const int64_t* lengths, const T* y, int64_t y_sb,        \
      int64_t y_st, const T* stseq, const T* saved, const T* dy, int64_t dy_sb, int64_t dy_st, \
      const T* dfinal, T* dgx, T* drec, int64_t d_sb, int64_t d_st, T* dstate0, int64_t B,    \
      int64_t Tn, int64_t H, int64_t NH, int reverse, int act, int nthreads, int policy) {    \
    Rnn<CELL, V>::backward(Rpb, state0, lengths, y, {y_sb, y_st}, stseq, saved, dy,           \
                           {dy_sb, dy_st}, dfinal, dgx, drec, {d_sb, d_st}, dstate0, B, Tn,   \
                           H, NH, reverse, act, nthreads, policy);                            \
  }

RNNX_RNN_API(elman_f32, ElmanCell, float, VecF)
RNNX_RNN_API(elman_f64, ElmanCell, double, VecD)
RNNX_RNN_API(lstm_f32, LstmCell, float, VecF)
RNNX_RNN_API(lstm_f64, LstmCell, double, VecD)
RNNX_RNN_API(gru_f32, GruCell, float, VecF)
RNNX_RNN_API(gru_f64, GruCell, double, VecD)
RNNX_RNN_API(slstm_f32, SlstmCell, float, VecF)
RNNX_RNN_API(slstm_f64, SlstmCell, double, VecD)
