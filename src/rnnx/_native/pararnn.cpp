// ParaGRU and ParaLSTM cells on the CPU: the fused sequential recurrence (forward and
// backward by BPTT), and the time-parallel pieces of Newton's method (the cell and its
// Jacobian at every (batch, step) at once, and the cell's vector-Jacobian product).
//
// ParaRNN's cells (Danieli et al. 2025, arXiv 2510.21450) have *diagonal* recurrent
// weights, so feature j of the state depends only on feature j of the previous state
// and of the input projection u = W x + b (computed outside, one matrix product for all
// steps). The recurrence is therefore independent across (batch, feature): each unit of
// work (one batch element, a block of features) runs its own loop over time with the
// state in registers/L1, reading u and writing the states once. That is the whole
// sequential computation in one pass over memory, with no per-step dispatch.
//
// Layout (batch-first, contiguous, row-major):
//   u   (B, L, 3H)  gate pre-activations from the input, gate blocks [g0 | g1 | g2]
//   a   (3, H)      diagonal recurrent weights (GRU: z, r, c; LSTM: f, z, o)
//   p   (2, H)      LSTM peepholes (f from c_prev, o from c)
//   GRU state h (B, L, H); LSTM state s (B, L, H, 2) with s[..., 0] = c, s[..., 1] = h
//   lengths (B,) int64 or null: steps t >= lengths[b] leave the state unchanged.
// Backward takes the gradient of every state (the final state is the last one, so its
// gradient is already in there), returns du, the parameter gradients (accumulated over
// batch and time: a unit owns a feature block for every batch element, so no two
// threads write the same entry) and the gradient of the initial state.
//
// Time-parallel kernels (Newton mode) take M independent rows (M = batch * steps):
//   u (M, 3H), previous states hp (M, H) or (M, H, 2); out like hp; the Jacobian
//   d out / d hp: GRU (M, H) (diagonal), LSTM (M, H, 2, 2) (row = output (c, h),
//   column = input (c, h)); the VJP returns du, dhp and the parameter gradients.
//
// Each cell's math lives in one point function (value, Jacobian, VJP at one feature)
// shared by the sequential and the time-parallel kernels.

// Floating-point comparisons never trap here; telling the compiler so lets it turn the
// clamps of exp_approx (common.h) into vector min/max and vectorise the gate loops.
#pragma GCC optimize("no-trapping-math")

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"

using rnnx::i64;

namespace {

// exp, sigmoid and tanh from common.h: for float the vectorisable Cephes exp (the libm
// expf is a scalar call per element and dominates the kernel otherwise), NaN in, NaN out;
// for double the C library's functions.
using rnnx::exp_of;
using rnnx::tanh_of;
template <typename T>
inline T sigmoid(T x) {
  return rnnx::sigmoid_of(x);
}

inline int threads_for(i64 work, int nthreads) {
  return work < (i64(1) << 14) ? 1 : std::max(nthreads, 1);
}

// Feature block size: about 4 units per thread, at least 8 features per block.
inline i64 block_of(i64 rows, i64 H, int nthreads) {
  const i64 want = 4 * std::max(nthreads, 1);
  i64 per_row = std::max<i64>(1, (want + rows - 1) / rows);
  i64 blk = (H + per_row - 1) / per_row;
  blk = std::max<i64>(8, (blk + 7) / 8 * 8);
  return std::min(blk, std::max<i64>(H, 1));
}

constexpr i64 kMaxBlk = 512;

// ---------------------------------------------------------------------------- GRU
//   z = sigmoid(a_z h + u_z), r = sigmoid(a_r h + u_r), c = tanh(a_c (h r) + u_c)
//   h' = h + z (c - h)

template <typename T, bool Jac>
inline T gru_point(T az, T ar, T ac, T hp, T uz, T ur, T uc, T& dh) {
  const T z = sigmoid(az * hp + uz);
  const T r = sigmoid(ar * hp + ur);
  const T c = tanh_of(ac * (hp * r) + uc);
  if constexpr (Jac)
    dh = (T(1) - z) + (c - hp) * z * (T(1) - z) * az +
         z * (T(1) - c * c) * ac * (r + hp * r * (T(1) - r) * ar);
  return hp + z * (c - hp);
}

template <typename T>
struct GruGrad {
  T du_z, du_r, du_c, dhp, hr;  // hr = h r: the factor of a_c's gradient
};

// Pull the cotangent g of h' back to u and h (and the factors of a's gradient).
template <typename T>
inline GruGrad<T> gru_vjp(T az, T ar, T ac, T hp, T uz, T ur, T uc, T g) {
  const T z = sigmoid(az * hp + uz);
  const T r = sigmoid(ar * hp + ur);
  const T c = tanh_of(ac * (hp * r) + uc);
  const T dq = g * z * (T(1) - c * c);
  const T dpz = g * (c - hp) * z * (T(1) - z);
  const T dpr = dq * ac * hp * r * (T(1) - r);
  return {dpz, dpr, dq, g * (T(1) - z) + dpz * az + dpr * ar + dq * ac * r, hp * r};
}

template <typename T>
void gru_forward(const T* u, const T* a, const T* h0, const i64* lengths, T* h, i64 B, i64 L,
                 i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(B, H, nthreads));
  const i64 per_row = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * per_row; ++unit) {
    T s[kMaxBlk];
    const i64 b = unit / per_row;
    const i64 j0 = (unit % per_row) * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const i64 len = lengths ? lengths[b] : L;
    const T* az = a + j0;
    const T* ar = a + H + j0;
    const T* ac = a + 2 * H + j0;
    std::memcpy(s, h0 + b * H + j0, sizeof(T) * n);
    for (i64 t = 0; t < L; ++t) {
      if (t < len) {
        const T* ut = u + (b * L + t) * 3 * H + j0;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          T unused;
          s[j] = gru_point<T, false>(az[j], ar[j], ac[j], s[j], ut[j], ut[H + j], ut[2 * H + j],
                                     unused);
        }
      }
      std::memcpy(h + (b * L + t) * H + j0, s, sizeof(T) * n);
    }
  }
}

template <typename T>
void gru_backward(const T* u, const T* a, const T* h0, const i64* lengths, const T* h,
                  const T* gh, T* du, T* ga, T* gh0, i64 B, i64 L, i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T carry[kMaxBlk], gaz[kMaxBlk], gar[kMaxBlk], gac[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* az = a + j0;
    const T* ar = a + H + j0;
    const T* ac = a + 2 * H + j0;
    std::fill(gaz, gaz + n, T(0));
    std::fill(gar, gar + n, T(0));
    std::fill(gac, gac + n, T(0));
    for (i64 b = 0; b < B; ++b) {
      const i64 len = lengths ? lengths[b] : L;
      std::fill(carry, carry + n, T(0));
      for (i64 t = L - 1; t >= 0; --t) {
        const T* gt = gh + (b * L + t) * H + j0;
        T* dut = du + (b * L + t) * 3 * H + j0;
        if (t >= len) {  // identity step
          for (i64 j = 0; j < n; ++j) {
            carry[j] += gt[j];
            dut[j] = dut[H + j] = dut[2 * H + j] = T(0);
          }
          continue;
        }
        const T* ut = u + (b * L + t) * 3 * H + j0;
        const T* hp = t > 0 ? h + (b * L + t - 1) * H + j0 : h0 + b * H + j0;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const GruGrad<T> d = gru_vjp(az[j], ar[j], ac[j], hp[j], ut[j], ut[H + j],
                                       ut[2 * H + j], gt[j] + carry[j]);
          dut[j] = d.du_z;
          dut[H + j] = d.du_r;
          dut[2 * H + j] = d.du_c;
          gaz[j] += d.du_z * hp[j];
          gar[j] += d.du_r * hp[j];
          gac[j] += d.du_c * d.hr;
          carry[j] = d.dhp;
        }
      }
      std::memcpy(gh0 + b * H + j0, carry, sizeof(T) * n);
    }
    std::memcpy(ga + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + H + j0, gar, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gac, sizeof(T) * n);
  }
}

// The cell (and, with jac != null, its diagonal Jacobian) at M independent rows.
template <typename T>
void gru_cell(const T* u, const T* a, const T* hp, T* out, T* jac, i64 M, i64 H, int nthreads) {
  const int nt = threads_for(M * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const T* um = u + m * 3 * H;
    const T* hm = hp + m * H;
    T* om = out + m * H;
    if (jac) {
      T* jm = jac + m * H;
#pragma omp simd
      for (i64 j = 0; j < H; ++j)
        om[j] = gru_point<T, true>(a[j], a[H + j], a[2 * H + j], hm[j], um[j], um[H + j],
                                   um[2 * H + j], jm[j]);
    } else {
#pragma omp simd
      for (i64 j = 0; j < H; ++j) {
        T unused;
        om[j] = gru_point<T, false>(a[j], a[H + j], a[2 * H + j], hm[j], um[j], um[H + j],
                                    um[2 * H + j], unused);
      }
    }
  }
}

// VJP of the cell at M independent rows: du, dhp, and ga (summed over the rows; a unit
// owns a feature block for all rows, so the sums need no atomics).
template <typename T>
void gru_cell_vjp(const T* u, const T* a, const T* hp, const T* g, T* du, T* ga, T* dhp, i64 M,
                  i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(M * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T gaz[kMaxBlk], gar[kMaxBlk], gac[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* az = a + j0;
    const T* ar = a + H + j0;
    const T* ac = a + 2 * H + j0;
    std::fill(gaz, gaz + n, T(0));
    std::fill(gar, gar + n, T(0));
    std::fill(gac, gac + n, T(0));
    for (i64 m = 0; m < M; ++m) {
      const T* um = u + m * 3 * H + j0;
      const T* hm = hp + m * H + j0;
      const T* gm = g + m * H + j0;
      T* dum = du + m * 3 * H + j0;
      T* dhm = dhp + m * H + j0;
#pragma omp simd
      for (i64 j = 0; j < n; ++j) {
        const GruGrad<T> d = gru_vjp(az[j], ar[j], ac[j], hm[j], um[j], um[H + j],
                                     um[2 * H + j], gm[j]);
        dum[j] = d.du_z;
        dum[H + j] = d.du_r;
        dum[2 * H + j] = d.du_c;
        gaz[j] += d.du_z * hm[j];
        gar[j] += d.du_r * hm[j];
        gac[j] += d.du_c * d.hr;
        dhm[j] = d.dhp;
      }
    }
    std::memcpy(ga + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + H + j0, gar, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gac, sizeof(T) * n);
  }
}

// ---------------------------------------------------------------------------- LSTM
// Coupled input-forget gate with peepholes (state (c, h)):
//   f = sigmoid(a_f h + p_f c + u_f), z = tanh(a_z h + u_z), c' = f c + (1 - f) z
//   o = sigmoid(a_o h + p_o c' + u_o), h' = o tanh(c')

// Value (c', h') and, with Jac, the 2x2 Jacobian d(c', h') / d(c, h) (row-major).
template <typename T, bool Jac>
inline void lstm_point(T af, T az, T ao, T pf, T po, T cp, T hp, T uf, T uz, T uo, T& c, T& h,
                       T* J) {
  const T f = sigmoid(af * hp + pf * cp + uf);
  const T z = tanh_of(az * hp + uz);
  c = f * cp + (T(1) - f) * z;
  const T o = sigmoid(ao * hp + po * c + uo);
  const T tc = tanh_of(c);
  h = o * tc;
  if constexpr (Jac) {
    const T df = (cp - z) * f * (T(1) - f);
    const T dc_dc = f + df * pf;
    const T dc_dh = df * af + (T(1) - f) * (T(1) - z * z) * az;
    const T so = tc * o * (T(1) - o);  // d h' / d(o's pre-activation)
    const T k = o * (T(1) - tc * tc) + so * po;  // d h' / d c' (through tanh and the peephole)
    J[0] = dc_dc;
    J[1] = dc_dh;
    J[2] = k * dc_dc;
    J[3] = k * dc_dh + so * ao;
  }
}

template <typename T>
struct LstmGrad {
  T du_f, du_z, du_o, dcp, dhp, c;  // c = c': the factor of p_o's gradient
};

// Pull the cotangents (gc, gh) of (c', h') back to u and (c, h).
template <typename T>
inline LstmGrad<T> lstm_vjp(T af, T az, T ao, T pf, T po, T cp, T hp, T uf, T uz, T uo, T gc,
                            T gh) {
  const T f = sigmoid(af * hp + pf * cp + uf);
  const T z = tanh_of(az * hp + uz);
  const T c = f * cp + (T(1) - f) * z;
  const T o = sigmoid(ao * hp + po * c + uo);
  const T tc = tanh_of(c);
  const T dpo = gh * tc * o * (T(1) - o);
  const T dc = gc + gh * o * (T(1) - tc * tc) + dpo * po;
  const T dpf = dc * (cp - z) * f * (T(1) - f);
  const T dpz = dc * (T(1) - f) * (T(1) - z * z);
  return {dpf, dpz, dpo, dc * f + dpf * pf, dpf * af + dpz * az + dpo * ao, c};
}

template <typename T>
void lstm_forward(const T* u, const T* a, const T* p, const T* s0, const i64* lengths, T* s,
                  i64 B, i64 L, i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(B, H, nthreads));
  const i64 per_row = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < B * per_row; ++unit) {
    T st[2 * kMaxBlk];
    const i64 b = unit / per_row;
    const i64 j0 = (unit % per_row) * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const i64 len = lengths ? lengths[b] : L;
    const T* af = a + j0;
    const T* az = a + H + j0;
    const T* ao = a + 2 * H + j0;
    const T* pf = p + j0;
    const T* po = p + H + j0;
    std::memcpy(st, s0 + (b * H + j0) * 2, sizeof(T) * 2 * n);
    for (i64 t = 0; t < L; ++t) {
      if (t < len) {
        const T* ut = u + (b * L + t) * 3 * H + j0;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          T c, h;
          lstm_point<T, false>(af[j], az[j], ao[j], pf[j], po[j], st[2 * j], st[2 * j + 1],
                               ut[j], ut[H + j], ut[2 * H + j], c, h, nullptr);
          st[2 * j] = c;
          st[2 * j + 1] = h;
        }
      }
      std::memcpy(s + ((b * L + t) * H + j0) * 2, st, sizeof(T) * 2 * n);
    }
  }
}

template <typename T>
void lstm_backward(const T* u, const T* a, const T* p, const T* s0, const i64* lengths,
                   const T* s, const T* gs, T* du, T* ga, T* gp, T* gs0, i64 B, i64 L, i64 H,
                   int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(B * L * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T cc[kMaxBlk], ch[kMaxBlk];
    T gaf[kMaxBlk], gaz[kMaxBlk], gao[kMaxBlk], gpf[kMaxBlk], gpo[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* af = a + j0;
    const T* az = a + H + j0;
    const T* ao = a + 2 * H + j0;
    const T* pf = p + j0;
    const T* po = p + H + j0;
    for (T* buf : {gaf, gaz, gao, gpf, gpo}) std::fill(buf, buf + n, T(0));
    for (i64 b = 0; b < B; ++b) {
      const i64 len = lengths ? lengths[b] : L;
      std::fill(cc, cc + n, T(0));
      std::fill(ch, ch + n, T(0));
      for (i64 t = L - 1; t >= 0; --t) {
        const T* gt = gs + ((b * L + t) * H + j0) * 2;
        T* dut = du + (b * L + t) * 3 * H + j0;
        if (t >= len) {
          for (i64 j = 0; j < n; ++j) {
            cc[j] += gt[2 * j];
            ch[j] += gt[2 * j + 1];
            dut[j] = dut[H + j] = dut[2 * H + j] = T(0);
          }
          continue;
        }
        const T* ut = u + (b * L + t) * 3 * H + j0;
        const T* sp = t > 0 ? s + ((b * L + t - 1) * H + j0) * 2 : s0 + (b * H + j0) * 2;
#pragma omp simd
        for (i64 j = 0; j < n; ++j) {
          const T cp = sp[2 * j], hp = sp[2 * j + 1];
          const LstmGrad<T> d = lstm_vjp(af[j], az[j], ao[j], pf[j], po[j], cp, hp, ut[j],
                                         ut[H + j], ut[2 * H + j], gt[2 * j] + cc[j],
                                         gt[2 * j + 1] + ch[j]);
          dut[j] = d.du_f;
          dut[H + j] = d.du_z;
          dut[2 * H + j] = d.du_o;
          gaf[j] += d.du_f * hp;
          gaz[j] += d.du_z * hp;
          gao[j] += d.du_o * hp;
          gpf[j] += d.du_f * cp;
          gpo[j] += d.du_o * d.c;
          cc[j] = d.dcp;
          ch[j] = d.dhp;
        }
      }
      T* o0 = gs0 + (b * H + j0) * 2;
      for (i64 j = 0; j < n; ++j) {
        o0[2 * j] = cc[j];
        o0[2 * j + 1] = ch[j];
      }
    }
    std::memcpy(ga + j0, gaf, sizeof(T) * n);
    std::memcpy(ga + H + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gao, sizeof(T) * n);
    std::memcpy(gp + j0, gpf, sizeof(T) * n);
    std::memcpy(gp + H + j0, gpo, sizeof(T) * n);
  }
}

template <typename T>
void lstm_cell(const T* u, const T* a, const T* p, const T* sp, T* out, T* jac, i64 M, i64 H,
               int nthreads) {
  const int nt = threads_for(M * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const T* um = u + m * 3 * H;
    const T* sm = sp + m * 2 * H;
    T* om = out + m * 2 * H;
    if (jac) {
      T* jm = jac + m * 4 * H;
#pragma omp simd
      for (i64 j = 0; j < H; ++j)
        lstm_point<T, true>(a[j], a[H + j], a[2 * H + j], p[j], p[H + j], sm[2 * j],
                            sm[2 * j + 1], um[j], um[H + j], um[2 * H + j], om[2 * j],
                            om[2 * j + 1], jm + 4 * j);
    } else {
#pragma omp simd
      for (i64 j = 0; j < H; ++j)
        lstm_point<T, false>(a[j], a[H + j], a[2 * H + j], p[j], p[H + j], sm[2 * j],
                             sm[2 * j + 1], um[j], um[H + j], um[2 * H + j], om[2 * j],
                             om[2 * j + 1], nullptr);
    }
  }
}

template <typename T>
void lstm_cell_vjp(const T* u, const T* a, const T* p, const T* sp, const T* g, T* du, T* ga,
                   T* gp, T* dsp, i64 M, i64 H, int nthreads) {
  const i64 blk = std::min(kMaxBlk, block_of(1, H, nthreads));
  const i64 units = (H + blk - 1) / blk;
  const int nt = threads_for(M * H, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (i64 unit = 0; unit < units; ++unit) {
    T gaf[kMaxBlk], gaz[kMaxBlk], gao[kMaxBlk], gpf[kMaxBlk], gpo[kMaxBlk];
    const i64 j0 = unit * blk;
    const i64 n = std::min(H, j0 + blk) - j0;
    const T* af = a + j0;
    const T* az = a + H + j0;
    const T* ao = a + 2 * H + j0;
    const T* pf = p + j0;
    const T* po = p + H + j0;
    for (T* buf : {gaf, gaz, gao, gpf, gpo}) std::fill(buf, buf + n, T(0));
    for (i64 m = 0; m < M; ++m) {
      const T* um = u + m * 3 * H + j0;
      const T* sm = sp + (m * H + j0) * 2;
      const T* gm = g + (m * H + j0) * 2;
      T* dum = du + m * 3 * H + j0;
      T* dsm = dsp + (m * H + j0) * 2;
#pragma omp simd
      for (i64 j = 0; j < n; ++j) {
        const T cp = sm[2 * j], hp = sm[2 * j + 1];
        const LstmGrad<T> d = lstm_vjp(af[j], az[j], ao[j], pf[j], po[j], cp, hp, um[j],
                                       um[H + j], um[2 * H + j], gm[2 * j], gm[2 * j + 1]);
        dum[j] = d.du_f;
        dum[H + j] = d.du_z;
        dum[2 * H + j] = d.du_o;
        gaf[j] += d.du_f * hp;
        gaz[j] += d.du_z * hp;
        gao[j] += d.du_o * hp;
        gpf[j] += d.du_f * cp;
        gpo[j] += d.du_o * d.c;
        dsm[2 * j] = d.dcp;
        dsm[2 * j + 1] = d.dhp;
      }
    }
    std::memcpy(ga + j0, gaf, sizeof(T) * n);
    std::memcpy(ga + H + j0, gaz, sizeof(T) * n);
    std::memcpy(ga + 2 * H + j0, gao, sizeof(T) * n);
    std::memcpy(gp + j0, gpf, sizeof(T) * n);
    std::memcpy(gp + H + j0, gpo, sizeof(T) * n);
  }
}

}  // namespace

#define RNNX_PARARNN(SUFFIX, T)                                                               \
  extern "C" void rnnx_paragru_fwd_##SUFFIX(const T* u, const T* a, const T* h0,              \
                                            const i64* lengths, T* h, i64 B, i64 L, i64 H,    \
                                            int nthreads) {                                   \
    gru_forward<T>(u, a, h0, lengths, h, B, L, H, nthreads);                                  \
  }                                                                                           \
  extern "C" void rnnx_paragru_bwd_##SUFFIX(const T* u, const T* a, const T* h0,              \
                                            const i64* lengths, const T* h, const T* gh,      \
                                            T* du, T* ga, T* gh0, i64 B, i64 L, i64 H,        \
                                            int nthreads) {                                   \
    gru_backward<T>(u, a, h0, lengths, h, gh, du, ga, gh0, B, L, H, nthreads);                \
  }                                                                                           \
  extern "C" void rnnx_paragru_cell_##SUFFIX(const T* u, const T* a, const T* hp, T* out,     \
                                             T* jac, i64 M, i64 H, int nthreads) {            \
    gru_cell<T>(u, a, hp, out, jac, M, H, nthreads);                                          \
  }                                                                                           \
  extern "C" void rnnx_paragru_cell_vjp_##SUFFIX(const T* u, const T* a, const T* hp,         \
                                                 const T* g, T* du, T* ga, T* dhp, i64 M,     \
                                                 i64 H, int nthreads) {                       \
    gru_cell_vjp<T>(u, a, hp, g, du, ga, dhp, M, H, nthreads);                                \
  }                                                                                           \
  extern "C" void rnnx_paralstm_fwd_##SUFFIX(const T* u, const T* a, const T* p, const T* s0, \
                                             const i64* lengths, T* s, i64 B, i64 L, i64 H,   \
                                             int nthreads) {                                  \
    lstm_forward<T>(u, a, p, s0, lengths, s, B, L, H, nthreads);                              \
  }                                                                                           \
  extern "C" void rnnx_paralstm_bwd_##SUFFIX(                                                 \
      const T* u, const T* a, const T* p, const T* s0, const i64* lengths, const T* s,        \
      const T* gs, T* du, T* ga, T* gp, T* gs0, i64 B, i64 L, i64 H, int nthreads) {          \
    lstm_backward<T>(u, a, p, s0, lengths, s, gs, du, ga, gp, gs0, B, L, H, nthreads);        \
  }                                                                                           \
  extern "C" void rnnx_paralstm_cell_##SUFFIX(const T* u, const T* a, const T* p,             \
                                              const T* sp, T* out, T* jac, i64 M, i64 H,      \
                                              int nthreads) {                                 \
    lstm_cell<T>(u, a, p, sp, out, jac, M, H, nthreads);                                      \
  }                                                                                           \
  extern "C" void rnnx_paralstm_cell_vjp_##SUFFIX(const T* u, const T* a, const T* p,         \
                                                  const T* sp, const T* g, T* du, T* ga,      \
                                                  T* gp, T* dsp, i64 M, i64 H,                \
                                                  int nthreads) {                             \
    lstm_cell_vjp<T>(u, a, p, sp, g, du, ga, gp, dsp, M, H, nthreads);                        \
  }

RNNX_PARARNN(f32, float)
RNNX_PARARNN(f64, double)
