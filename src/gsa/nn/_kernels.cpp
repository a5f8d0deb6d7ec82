// Native CPU kernels of gsa's fast attention core (see fastcore.py for the mathematics).
//
// Plain C++17 + OpenMP, no PyTorch headers: built on first use by gsa/nn/native.py and called through
// ctypes with raw pointers and strides. Each kernel fuses, per query pixel, a step that the PyTorch path
// does in several full-size passes:
//
//   gsa_probs      two-level softmax: content C, group term Gt, positional P (or q_pos · table), mask → E, Pn
//   gsa_weights    W = s · Σ_{a_q} Pn ⊙ E ⊙ D   (attention dropout D from a counter-based hash)
//   gsa_backward   W again, dPn, dE, both softmax adjoints → W, dP (or dq_pos, dtable), dC = Σ_u dT, dGt = Σ_κ dT
//   gsa_fold_add   adjoint of the key tiling: add overlapping tiles into the padded key gradient
//
// and, for the "fused" backend (gsa/nn/backends/fused.py), whole local-attention layers in one pass per
// query pixel, batch × heads on the SIMD lanes (see "fused local attention" below):
//
//   gsa_local_forward    scores, both softmax levels, dropout, weights and value aggregation → out
//   gsa_local_backward   the same recomputed per pixel, then every adjoint → dq, dk, dv, dtable, dgt
//   gsa_local_lanes      the lane count L of a dtype (the layout's padding unit)
//
// A "pixel" is one query position of the chunk's pixel layout (up to 6 dims, e.g. (Bc, nx, ny, Tx, Ty)).
// Strided tensors are described by per-dim pixel strides and inner strides (in elements). Contiguous
// tensors produced here are indexed (pixel, ...) in row-major order.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef int64_t i64;

namespace {

struct Pix {
    int nd;
    const i64* size;
};

inline i64 pix_off(const Pix& px, i64 p, const i64* st) {
    i64 off = 0;
    for (int d = px.nd - 1; d >= 0; --d) {
        const i64 s = px.size[d];
        off += (p % s) * st[d];
        p /= s;
    }
    return off;
}

// ---- dropout: keep iff hash(counter) >= thr (the PyTorch reference in fastcore.py is bit-identical)
inline uint32_t fmix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

struct Drop {
    uint32_t thr, k0, k1;
    int on;
};

inline uint32_t hash_word(const Drop& d, uint64_t w) {
    return fmix(fmix(static_cast<uint32_t>(w) ^ d.k0) ^ (static_cast<uint32_t>(w >> 32) + d.k1));
}

// Keep-mask (0/1) of the counters b .. b+n−1 into m (hw: scratch for n/2 + 2 words). Counter c uses the 16-bit half c mod 2
// (low half first) of the hash of word c/2: one hash per two elements. Within a run the high word of the
// word index is almost always constant, which lets the hash run on 32-bit lanes.
template <typename T>
inline void keep_run(const Drop& d, uint64_t b, int n, T* __restrict m, uint32_t* __restrict hw) {
    const uint64_t w0 = b >> 1;
    const int nw = static_cast<int>(((b + n - 1) >> 1) - w0) + 1;
    const uint32_t lo = static_cast<uint32_t>(w0);
    if (lo <= 0xFFFFFFFFu - static_cast<uint32_t>(nw)) {
        const uint32_t hk = static_cast<uint32_t>(w0 >> 32) + d.k1;
#pragma omp simd
        for (int i = 0; i < nw; ++i) hw[i] = fmix(fmix((lo + static_cast<uint32_t>(i)) ^ d.k0) ^ hk);
    } else {
        for (int i = 0; i < nw; ++i) hw[i] = hash_word(d, w0 + i);
    }
    const int off = static_cast<int>(b & 1);
    const uint32_t thr = d.thr;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint16_t* __restrict h16 = reinterpret_cast<const uint16_t*>(hw) + off;
#pragma omp simd
    for (int k = 0; k < n; ++k) m[k] = static_cast<uint32_t>(h16[k]) >= thr ? T(1) : T(0);
#else
    for (int k = 0; k < n; ++k) {
        const int j = off + k;
        m[k] = ((hw[j >> 1] >> (16 * (j & 1))) & 0xFFFFu) >= thr ? T(1) : T(0);
    }
#endif
}

// ---- exp for max-subtracted arguments (x <= 0): vectorisable for float, libm for double
inline float expneg(float x) {
    const float xc = std::max(x, -87.0f);
    const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return x < -87.0f ? 0.0f : y * scale;
}
inline double expneg(double x) { return std::exp(x); }

inline int threads(int n) { return n > 0 ? n : 1; }

template <typename T>
void probs(i64 npix, Pix px, const T* C, const i64* Cps, const i64* Cis, const T* Gt, const T* P, const i64* Pps,
           const i64* Pis, const T* qp, const i64* Qps, const i64* Qis, const T* tabT, int np, const T* mb,
           const i64* Mps, const i64* Mis, const i64* u_of_h, int Gq, int U, int Gk, int H, int Kx, int Ky, T* E,
           T* Pn, int nthreads) {
    // Positional scores: P (any strides) when given, else computed here from the positional part of the
    // query qp (*PIX, Gq, np) and the encoding table tabT (H, np, K): P[a, h, κ] = Σ_c qp[a, c] tabT[h, c, κ].
    // Softmax over a_k per slot: E = exp(T − mx) / sm with T = C + Gt, mx = max_{a_k} T, sm = Σ_{a_k} exp(T − mx).
    // Softmax over slots of L = P + lse + bias, lse = mx + log sm, without the log:
    //   Pn ∝ exp(P + mx + bias − m) · sm   (m = max_κ (P + mx + bias); 1 <= sm <= Gk, so nothing overflows).
    const int K = Kx * Ky;
    const T ninf = -std::numeric_limits<T>::infinity();
#pragma omp parallel num_threads(threads(nthreads))
    {
        std::vector<T> tbv(static_cast<size_t>(Gk) * K), mxv(static_cast<size_t>(U) * K),
            smv(static_cast<size_t>(U) * K), Lv(K), biasv(K);
        T* __restrict tb = tbv.data();
        T* __restrict bias = biasv.data();
        T* __restrict L = Lv.data();
#pragma omp for schedule(static)
        for (i64 p = 0; p < npix; ++p) {
            const T* c = C + pix_off(px, p, Cps);
            const T* pp = P ? P + pix_off(px, p, Pps) : nullptr;
            const T* qpp = P ? nullptr : qp + pix_off(px, p, Qps);
            if (mb) {
                const T* m = mb + pix_off(px, p, Mps);
                for (int kx = 0; kx < Kx; ++kx)
                    for (int ky = 0; ky < Ky; ++ky) bias[kx * Ky + ky] = m[kx * Mis[0] + ky * Mis[1]];
            } else {
                std::fill(bias, bias + K, T(0));
            }
            for (int a = 0; a < Gq; ++a) {
                const T* ca = c + a * Cis[0];
                for (int u = 0; u < U; ++u) {
                    const T* g = Gt ? Gt + ((p * Gq + a) * U + u) * Gk : nullptr;
                    T* __restrict mx = mxv.data() + static_cast<size_t>(u) * K;
                    T* __restrict sm = smv.data() + static_cast<size_t>(u) * K;
                    for (int ak = 0; ak < Gk; ++ak) {
                        const T gv = g ? g[ak] : T(0);
                        const T* cak = ca + ak * Cis[1];
                        T* __restrict t = tb + static_cast<size_t>(ak) * K;
                        for (int kx = 0; kx < Kx; ++kx) {
                            const T* row = cak + kx * Cis[2];
                            for (int ky = 0; ky < Ky; ++ky) t[kx * Ky + ky] = row[ky * Cis[3]] + gv;
                        }
                    }
                    if (Gk == 1) {
                        std::copy(tb, tb + K, mx);
                        std::fill(sm, sm + K, T(1));
                        continue;
                    }
                    std::copy(tb, tb + K, mx);
                    for (int ak = 1; ak < Gk; ++ak) {
                        const T* __restrict t = tb + static_cast<size_t>(ak) * K;
#pragma omp simd
                        for (int k = 0; k < K; ++k) mx[k] = std::max(mx[k], t[k]);
                    }
                    std::fill(sm, sm + K, T(0));
                    for (int ak = 0; ak < Gk; ++ak) {
                        T* __restrict t = tb + static_cast<size_t>(ak) * K;
#pragma omp simd
                        for (int k = 0; k < K; ++k) t[k] = expneg(t[k] - mx[k]);
#pragma omp simd
                        for (int k = 0; k < K; ++k) sm[k] += t[k];
                    }
                    T* __restrict e = E + ((p * Gq + a) * U + u) * Gk * K;
                    for (int ak = 0; ak < Gk; ++ak) {
                        const T* __restrict t = tb + static_cast<size_t>(ak) * K;
                        T* __restrict ea = e + static_cast<i64>(ak) * K;
#pragma omp simd
                        for (int k = 0; k < K; ++k) ea[k] = t[k] / sm[k];
                    }
                }
                for (int h = 0; h < H; ++h) {
                    const int u = u_of_h ? static_cast<int>(u_of_h[h]) : 0;
                    const T* __restrict mx = mxv.data() + static_cast<size_t>(u) * K;
                    const T* __restrict sm = smv.data() + static_cast<size_t>(u) * K;
                    if (pp) {
                        const T* ph = pp + a * Pis[0] + h * Pis[1];
                        for (int kx = 0; kx < Kx; ++kx)
                            for (int ky = 0; ky < Ky; ++ky) {
                                const int k = kx * Ky + ky;
                                L[k] = ph[kx * Pis[2] + ky * Pis[3]] + mx[k] + bias[k];
                            }
                    } else {
#pragma omp simd
                        for (int k = 0; k < K; ++k) L[k] = mx[k] + bias[k];
                        const T* qa = qpp + a * Qis[0];
                        const T* th = tabT + static_cast<size_t>(h) * np * K;
                        for (int cc = 0; cc < np; ++cc) {
                            const T qc = qa[cc * Qis[1]];
                            const T* __restrict row = th + static_cast<size_t>(cc) * K;
#pragma omp simd
                            for (int k = 0; k < K; ++k) L[k] += qc * row[k];
                        }
                    }
                    T m = ninf;
#pragma omp simd reduction(max : m)
                    for (int k = 0; k < K; ++k) m = std::max(m, L[k]);
                    T* __restrict out = Pn + ((p * Gq + a) * H + h) * K;
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int k = 0; k < K; ++k) {
                        const T v = expneg(L[k] - m) * sm[k];
                        out[k] = v;
                        s += v;
                    }
                    const T inv = T(1) / s;
#pragma omp simd
                    for (int k = 0; k < K; ++k) out[k] *= inv;
                }
            }
        }
    }
}

// w += pn ⊙ e ⊙ m   (e, m may be null: factor 1)
template <typename T>
inline void acc_w(int K, const T* __restrict pn, const T* __restrict e, const T* __restrict m, T* __restrict w) {
    if (e && m) {
#pragma omp simd
        for (int k = 0; k < K; ++k) w[k] += pn[k] * e[k] * m[k];
    } else if (e) {
#pragma omp simd
        for (int k = 0; k < K; ++k) w[k] += pn[k] * e[k];
    } else if (m) {
#pragma omp simd
        for (int k = 0; k < K; ++k) w[k] += pn[k] * m[k];
    } else {
#pragma omp simd
        for (int k = 0; k < K; ++k) w[k] += pn[k];
    }
}

// d += x ⊙ m   (m may be null)
template <typename T>
inline void acc_x(int K, const T* __restrict x, const T* __restrict m, T* __restrict d) {
    if (m) {
#pragma omp simd
        for (int k = 0; k < K; ++k) d[k] += x[k] * m[k];
    } else {
#pragma omp simd
        for (int k = 0; k < K; ++k) d[k] += x[k];
    }
}

// with x = dw ⊙ m:  w += pn ⊙ e ⊙ m,  dpn += x ⊙ e,  de += x ⊙ pn
template <typename T>
inline void acc_bwd(int K, const T* __restrict dw, const T* __restrict pn, const T* __restrict e,
                    const T* __restrict m, T* __restrict w, T* __restrict dpn, T* __restrict de) {
    if (m) {
#pragma omp simd
        for (int k = 0; k < K; ++k) {
            const T x = dw[k] * m[k];
            w[k] += pn[k] * e[k] * m[k];
            dpn[k] += x * e[k];
            de[k] += x * pn[k];
        }
    } else {
#pragma omp simd
        for (int k = 0; k < K; ++k) {
            w[k] += pn[k] * e[k];
            dpn[k] += dw[k] * e[k];
            de[k] += dw[k] * pn[k];
        }
    }
}

template <typename T>
inline void store4(T* o, const i64* is, const T* w, int n0, int n1, int Kx, int Ky, T scale) {
    for (int i = 0; i < n0; ++i)
        for (int j = 0; j < n1; ++j) {
            const T* src = w + (static_cast<size_t>(i) * n1 + j) * Kx * Ky;
            T* dst = o + i * is[0] + j * is[1];
            for (int kx = 0; kx < Kx; ++kx)
                for (int ky = 0; ky < Ky; ++ky) dst[kx * is[2] + ky * is[3]] = src[kx * Ky + ky] * scale;
        }
}

template <typename T>
void weights(i64 npix, Pix px, const T* Pn, const T* E, const i64* u_of_h, int Gq, int U, int Gk, int H, int Kx,
             int Ky, Drop drop, T scale, T* W, const i64* Wps, const i64* Wis, int nthreads) {
    const int K = Kx * Ky;
#pragma omp parallel num_threads(threads(nthreads))
    {
        std::vector<T> w(static_cast<size_t>(H) * Gk * K), mkv(static_cast<size_t>(Gk) * K);
        std::vector<uint32_t> hwv(static_cast<size_t>(Gk) * K / 2 + 2);
        T* mk = mkv.data();
        uint32_t* hw = hwv.data();
#pragma omp for schedule(static)
        for (i64 p = 0; p < npix; ++p) {
            std::fill(w.begin(), w.end(), T(0));
            for (int a = 0; a < Gq; ++a)
                for (int h = 0; h < H; ++h) {
                    const int u = u_of_h ? static_cast<int>(u_of_h[h]) : 0;
                    const T* pn = Pn + ((p * Gq + a) * H + h) * K;
                    const uint64_t base = static_cast<uint64_t>((p * Gq + a) * H + h) * Gk * K;
                    if (drop.on) keep_run(drop, base, Gk * K, mk, hw);
                    for (int ak = 0; ak < Gk; ++ak) {
                        T* wa = w.data() + (static_cast<size_t>(h) * Gk + ak) * K;
                        const T* e = E ? E + (((p * Gq + a) * U + u) * Gk + ak) * K : nullptr;
                        acc_w(K, pn, e, drop.on ? mk + static_cast<size_t>(ak) * K : nullptr, wa);
                    }
                }
            store4(W + pix_off(px, p, Wps), Wis, w.data(), H, Gk, Kx, Ky, scale);
        }
    }
}

template <typename T>
void backward(i64 npix, Pix px, const T* Pn, const T* E, const i64* u_of_h, int Gq, int U, int Gk, int H, int Kx,
              int Ky, Drop drop, T scale, const T* dW, const i64* dWps, const i64* dWis, T* W, const i64* Wps,
              const i64* Wis, T* dP, const T* qp, const i64* Qps, const i64* Qis, const T* tabT, int np, T* dqp,
              T* dtabT, T* dC, const i64* dCps, const i64* dCis, T* dGt, int nthreads) {
    // Positional adjoint: dP (contiguous, like Pn) when given, else dqp (npix, Gq, np) and dtabT (H, np, K)
    // (the latter accumulated over pixels: per-thread sums, added under a lock at the end).
    const int K = Kx * Ky;
#pragma omp parallel num_threads(threads(nthreads))
    {
        const size_t nW = static_cast<size_t>(H) * Gk * K;
        std::vector<T> dw(nW), w(nW), dpn(static_cast<size_t>(H) * K), de(E ? static_cast<size_t>(Gq) * U * Gk * K : 0),
            s2(static_cast<size_t>(U) * K), dc(static_cast<size_t>(Gq) * Gk * K), mkv(static_cast<size_t>(Gk) * K), dpl(K),
            dtl(dP ? 0 : static_cast<size_t>(H) * np * K, T(0)), dqv(dP ? 0 : static_cast<size_t>(np) * K);
        std::vector<uint32_t> hwv(static_cast<size_t>(Gk) * K / 2 + 2);
        T* mk = mkv.data();
        uint32_t* hw = hwv.data();
#pragma omp for schedule(static)
        for (i64 p = 0; p < npix; ++p) {
            const T* dwp = dW + pix_off(px, p, dWps);
            for (int h = 0; h < H; ++h)
                for (int ak = 0; ak < Gk; ++ak) {
                    const T* src = dwp + h * dWis[0] + ak * dWis[1];
                    T* dst = dw.data() + (static_cast<size_t>(h) * Gk + ak) * K;
                    for (int kx = 0; kx < Kx; ++kx)
                        for (int ky = 0; ky < Ky; ++ky) dst[kx * Ky + ky] = src[kx * dWis[2] + ky * dWis[3]] * scale;
                }
            std::fill(w.begin(), w.end(), T(0));
            std::fill(de.begin(), de.end(), T(0));
            for (int a = 0; a < Gq; ++a) {
                // ---- W, dPn, dE for query element a (dropout masks regenerated from their counters)
                std::fill(dpn.begin(), dpn.end(), T(0));
                for (int h = 0; h < H; ++h) {
                    const int u = u_of_h ? static_cast<int>(u_of_h[h]) : 0;
                    const T* pn = Pn + ((p * Gq + a) * H + h) * K;
                    T* dpa = dpn.data() + static_cast<size_t>(h) * K;
                    const uint64_t base = static_cast<uint64_t>((p * Gq + a) * H + h) * Gk * K;
                    if (drop.on) keep_run(drop, base, Gk * K, mk, hw);
                    for (int ak = 0; ak < Gk; ++ak) {
                        const size_t o = (static_cast<size_t>(h) * Gk + ak) * K;
                        const T* dwa = dw.data() + o;
                        T* wa = w.data() + o;
                        const T* mm = drop.on ? mk + static_cast<size_t>(ak) * K : nullptr;
                        if (E) {
                            const T* e = E + (((p * Gq + a) * U + u) * Gk + ak) * K;
                            T* dea = de.data() + ((static_cast<size_t>(a) * U + u) * Gk + ak) * K;
                            acc_bwd(K, dwa, pn, e, mm, wa, dpa, dea);
                        } else {
                            acc_w(K, pn, static_cast<const T*>(nullptr), mm, wa);
                            acc_x(K, dwa, mm, dpa);
                        }
                    }
                }
                // ---- softmax over slots: g = Σ_κ Pn dPn, dP = Pn (dPn − g), s2 = Σ_{h∈u} Pn g
                std::fill(s2.begin(), s2.end(), T(0));
                std::fill(dqv.begin(), dqv.end(), T(0));
                T* dca = dc.data() + static_cast<size_t>(a) * Gk * K;
                if (!E) {
                    std::fill(dca, dca + K, T(0));
                    if (dGt)
                        for (int u = 0; u < U; ++u) dGt[(p * Gq + a) * U + u] = T(0);
                }
                for (int h = 0; h < H; ++h) {
                    const int u = u_of_h ? static_cast<int>(u_of_h[h]) : 0;
                    const T* pn = Pn + ((p * Gq + a) * H + h) * K;
                    const T* dpa = dpn.data() + static_cast<size_t>(h) * K;
                    T g = 0;
#pragma omp simd reduction(+ : g)
                    for (int k = 0; k < K; ++k) g += pn[k] * dpa[k];
                    T* __restrict out = dP ? dP + ((p * Gq + a) * H + h) * K : dpl.data();
                    T* __restrict s2u = s2.data() + static_cast<size_t>(u) * K;
#pragma omp simd
                    for (int k = 0; k < K; ++k) {
                        out[k] = pn[k] * (dpa[k] - g);
                        s2u[k] += pn[k] * g;
                    }
                    if (!dP) {  // dqp[a, c] += Σ_κ dP tabT[h, c];  dtabT[h, c] += dP · qp[a, c]
                        const T* qa = qp + pix_off(px, p, Qps) + a * Qis[0];
                        const T* th = tabT + static_cast<size_t>(h) * np * K;
                        T* dth = dtl.data() + static_cast<size_t>(h) * np * K;
                        for (int cc = 0; cc < np; ++cc) {
                            const T* __restrict row = th + static_cast<size_t>(cc) * K;
                            T* __restrict drow = dth + static_cast<size_t>(cc) * K;
                            T* __restrict dq = dqv.data() + static_cast<size_t>(cc) * K;
                            const T qc = qa[cc * Qis[1]];
#pragma omp simd
                            for (int k = 0; k < K; ++k) {
                                dq[k] += out[k] * row[k];
                                drow[k] += out[k] * qc;
                            }
                        }
                    }
                    if (!E) {  // Gk == 1: dT[u] = Σ_{h∈u} dP, dC = Σ_u dT
                        for (int k = 0; k < K; ++k) dca[k] += out[k];
                        if (dGt) {
                            T s = 0;
                            for (int k = 0; k < K; ++k) s += out[k];
                            dGt[(p * Gq + a) * U + u] += s;
                        }
                    }
                }
                if (!dP) {  // per-slot partial sums → dqp[a, c]
                    T* dqa = dqp + (p * Gq + a) * np;
                    for (int cc = 0; cc < np; ++cc) {
                        const T* __restrict dq = dqv.data() + static_cast<size_t>(cc) * K;
                        T sdot = 0;
#pragma omp simd reduction(+ : sdot)
                        for (int k = 0; k < K; ++k) sdot += dq[k];
                        dqa[cc] = sdot;
                    }
                }
                if (!E) continue;
                // ---- softmax over a_k: dT = E (dE − s2); dC = Σ_u dT, dGt = Σ_κ dT
                std::fill(dca, dca + static_cast<size_t>(Gk) * K, T(0));
                for (int u = 0; u < U; ++u) {
                    const T* s2u = s2.data() + static_cast<size_t>(u) * K;
                    for (int ak = 0; ak < Gk; ++ak) {
                        const T* e = E + (((p * Gq + a) * U + u) * Gk + ak) * K;
                        const T* dea = de.data() + ((static_cast<size_t>(a) * U + u) * Gk + ak) * K;
                        T* dck = dca + static_cast<size_t>(ak) * K;
                        T s = 0;
                        for (int k = 0; k < K; ++k) {
                            const T t = e[k] * (dea[k] - s2u[k]);
                            dck[k] += t;
                            s += t;
                        }
                        if (dGt) dGt[((p * Gq + a) * U + u) * Gk + ak] = s;
                    }
                }
            }
            store4(W + pix_off(px, p, Wps), Wis, w.data(), H, Gk, Kx, Ky, scale);
            store4(dC + pix_off(px, p, dCps), dCis, dc.data(), Gq, Gk, Kx, Ky, T(1));
        }
        if (!dP) {
#pragma omp critical(gsa_dtab)
            for (size_t i = 0; i < dtl.size(); ++i) dtabT[i] += dtl[i];
        }
    }
}

template <typename T>
void fold_add(const T* tiles, const i64* ts, i64 Bc, i64 nx, i64 ny, i64 G, i64 Wx, i64 Wy, i64 c, i64 Tx, i64 Ty,
              T* dst, const i64* ds, int nthreads) {
    // tiles (Bc·nx·ny, Wx·Wy·G, c) with strides ts; dst[b, ix·Tx + wx, iy·Ty + wy, g, :] += tile
#pragma omp parallel for schedule(static) num_threads(threads(nthreads))
    for (i64 b = 0; b < Bc; ++b)
        for (i64 ix = 0; ix < nx; ++ix)
            for (i64 iy = 0; iy < ny; ++iy) {
                const T* tile = tiles + ((b * nx + ix) * ny + iy) * ts[0];
                for (i64 wx = 0; wx < Wx; ++wx)
                    for (i64 wy = 0; wy < Wy; ++wy)
                        for (i64 g = 0; g < G; ++g) {
                            const T* src = tile + ((wx * Wy + wy) * G + g) * ts[1];
                            T* o = dst + b * ds[0] + (ix * Tx + wx) * ds[1] + (iy * Ty + wy) * ds[2] + g * ds[3];
                            for (i64 j = 0; j < c; ++j) o[j * ds[4]] += src[j * ts[2]];
                        }
            }
}


// ---- fused local attention: one pass per query pixel over its k×k window, no intermediate tensors.
// Lane layout: batch × heads b is the innermost axis, padded to Bp (a multiple of half the lane count L of
// 64 bytes of T; by_lane_blocks runs whole L-lane blocks and a last half block), and every step runs on L
// lanes at once (SIMD, no gathers, no reductions across lanes):
//   q (X, Y, Gq, d, Bp), k (X, Y, Gk, d, Bp), v (X, Y, Gk, dv, Bp), gt (X, Y, Gq, U, Gk, Bp) or null,
//   out (X, Y, H, dv, Bp); tab (H, R, p) with R = ks² offsets (dx, dy) in row-major order of [-r, r]²;
//   cls (H) the class u(h) of each output element, or null (U = 1).
// Scores S[a_q, h, s, a_k] = q[a_q]·k[j_s, a_k] + gt[a_q, u(h), a_k] + q[a_q, :p]·tab[h, r_s] over the
// slots s of the window inside the image; softmax over (s, a_k) in two levels as in gsa_probs (over a_k
// per slot, then over slots with lse = mx + log sm applied as exp(P + mx − m) · sm), weights
// W[h, s, a_k] = Σ_{a_q} D Pn[a_q, h, s] E[a_q, u(h), s, a_k], out[h] = Σ_{s, a_k} W v[j_s, a_k], with the
// scaled dropout keep-mask D of local_keep (1 without dropout). The backward pass recomputes E and Pn per
// pixel. Threads split the lane blocks and the rows (backward: stripes in two phases), so no two threads
// write the same key's gradient at once.

#define GSA_LANES _Pragma("omp simd") for (int l = 0; l < L; ++l)

struct LocalShape {
    int X, Y, Gq, Gk, H, U, d, dv, p, ks;
    i64 Bp, Bn;    // lanes (padded) and batch × heads
    Drop drop;     // attention dropout: keep D = hash(counter) >= thr, counters as in local_keep
    double scale;  // 1 / (1 − p)
};

// Scaled keep-mask s·D of the L lanes at b0 for (pix, a_q, h, offset r, a_k): counters
// ((((pix·Gq + a_q)·H + h)·R + r)·Gk + a_k)·Bn + b, i.e. the masks of a (X·Y, Gq, H, R, Gk, Bn) tensor.
template <typename T, int L>
inline void local_keep(const LocalShape& sh, i64 pix, int aq, int h, int r, int a, i64 b0, T* m, uint32_t* hw) {
    const int R = sh.ks * sh.ks;
    const uint64_t c = static_cast<uint64_t>(((((pix * sh.Gq + aq) * sh.H + h) * R + r) * sh.Gk + a) * sh.Bn + b0);
    keep_run(sh.drop, c, L, m, hw);
    const T sc = static_cast<T>(sh.scale);
    GSA_LANES m[l] *= sc;
}

struct Window {
    int ns;      // slots inside the image
    int r[4096]; // offset index of each slot
    i64 j[4096]; // key pixel (xx·Y + yy) of each slot
};

inline void window_of(Window& w, int x, int y, const LocalShape& sh) {
    const int rad = sh.ks / 2;
    w.ns = 0;
    for (int dx = -rad; dx <= rad; ++dx) {
        const int xx = x + dx;
        if (xx < 0 || xx >= sh.X) continue;
        for (int dy = -rad; dy <= rad; ++dy) {
            const int yy = y + dy;
            if (yy < 0 || yy >= sh.Y) continue;
            w.r[w.ns] = (dx + rad) * sh.ks + (dy + rad);
            w.j[w.ns] = static_cast<i64>(xx) * sh.Y + yy;
            ++w.ns;
        }
    }
}

// Per-thread scratch of one pixel (all lane-major: [...][L]).
template <typename T, int L>
struct LocalScratch {
    std::vector<T> C, mx, sm, E, Pn, W, dW, dPn, dE, g, s2, dC, dtab, X;
    LocalScratch(const LocalShape& sh, bool backward) {
        const size_t K = static_cast<size_t>(sh.ks) * sh.ks, Gq = sh.Gq, Gk = sh.Gk, U = sh.U, H = sh.H;
        const size_t nE = backward ? Gq : 1;
        C.resize(Gq * K * Gk * L);
        mx.resize(U * K * L);
        sm.resize(U * K * L);
        E.resize(nE * U * K * Gk * L);
        Pn.resize(nE * H * K * L);
        W.resize(H * K * Gk * L);
        if (!backward) return;
        dW.resize(H * K * Gk * L);
        dPn.resize(H * K * L);
        dE.resize(U * K * Gk * L);
        g.resize(H * L);
        s2.resize(U * K * L);
        dC.resize(Gq * K * Gk * L);
        dtab.assign(H * K * sh.p * L, T(0));
        X.resize(Gk * L);
    }
};

// Calls f(std::integral_constant<int, 4>{}, i) for i = 0, 4, … while four remain below n, then
// f(std::integral_constant<int, 1>{}, i) for the rest: the kernels' blocks of four query or output elements.
template <typename F>
inline void in_fours(int n, F&& f) {
    int i = 0;
    for (; i + 4 <= n; i += 4) f(std::integral_constant<int, 4>{}, i);
    for (; i < n; ++i) f(std::integral_constant<int, 1>{}, i);
}

// Content scores C[a_q, s, a_k] = q[a_q]·k[j_s, a_k] (C: (Gq, K, Gk, L), slots s < ns) of NQ query elements
// from aq0: each key vector is loaded once for the NQ of them.
template <typename T, int L, int NQ>
inline void content_block(const LocalShape& sh, const Window& w, const T* qp, const T* k, i64 b0, int aq0, T* C) {
    const int Gk = sh.Gk, d = sh.d, K = sh.ks * sh.ks;
    const i64 Bp = sh.Bp;
    const T* qa = qp + static_cast<i64>(aq0) * d * Bp;
    for (int s = 0; s < w.ns; ++s)
        for (int a = 0; a < Gk; ++a) {
            const T* kp = k + (w.j[s] * Gk + a) * d * Bp + b0;
            T acc[NQ][L] = {};
            for (int c = 0; c < d; ++c)
                for (int i = 0; i < NQ; ++i) GSA_LANES acc[i][l] += qa[(i * d + c) * Bp + l] * kp[c * Bp + l];
            for (int i = 0; i < NQ; ++i) GSA_LANES C[(((aq0 + i) * K + s) * Gk + a) * L + l] = acc[i][l];
        }
}

// Content scores of every query element of pixel pix (qp = q at the pixel and lane block), four at a time.
template <typename T, int L>
inline void local_content(const LocalShape& sh, const Window& w, const T* qp, const T* k, i64 b0, T* C) {
    in_fours(sh.Gq, [&](auto nq, int aq) { content_block<T, L, decltype(nq)::value>(sh, w, qp, k, b0, aq, C); });
}

// Gradient of the content scores: dq[a_q] += Σ dC k, dk += Σ_{a_q} dC q[a_q] (dC: (Gq, K, Gk, L)), NQ query
// elements from aq0 at a time, so each key's gradient is read and written once per NQ of them.
template <typename T, int L, int NQ>
inline void content_grad_block(const LocalShape& sh, const Window& w, const T* qp, const T* k, i64 b0, int aq0,
                               const T* dC, T* dqp, T* dk) {
    const int Gk = sh.Gk, d = sh.d, K = sh.ks * sh.ks;
    const i64 Bp = sh.Bp, qo = static_cast<i64>(aq0) * d * Bp;
    for (int s = 0; s < w.ns; ++s)
        for (int a = 0; a < Gk; ++a) {
            const i64 ko = (w.j[s] * Gk + a) * d * Bp + b0;
            const T* dc[NQ];
            for (int i = 0; i < NQ; ++i) dc[i] = dC + (((aq0 + i) * K + s) * Gk + a) * L;
            for (int c = 0; c < d; ++c) {
                T acc[L] = {};
                for (int i = 0; i < NQ; ++i) GSA_LANES {
                        dqp[qo + (i * d + c) * Bp + l] += dc[i][l] * k[ko + c * Bp + l];
                        acc[l] += dc[i][l] * qp[qo + (i * d + c) * Bp + l];
                    }
                GSA_LANES dk[ko + c * Bp + l] += acc[l];
            }
        }
}

template <typename T, int L>
inline void local_content_grad(const LocalShape& sh, const Window& w, const T* qp, const T* k, i64 b0, const T* dC,
                               T* dqp, T* dk) {
    in_fours(sh.Gq, [&](auto nq, int aq) {
        content_grad_block<T, L, decltype(nq)::value>(sh, w, qp, k, b0, aq, dC, dqp, dk);
    });
}

// Value aggregation of one pixel: o[h] = Σ_{s, a_k} W[h, s, a_k] v[j_s, a_k] (o = out at the pixel and lane
// block), four output elements at a time, so each value vector is read once per four (every sum in the order
// of one at a time: bit-identical results).
template <typename T, int L, int NH>
inline void values_block(const LocalShape& sh, const Window& w, const T* __restrict W, const T* __restrict v, i64 b0,
                         int h0, T* __restrict o) {
    const int ns = w.ns, Gk = sh.Gk, dv = sh.dv;
    const i64 Bp = sh.Bp;
    for (int c = 0; c < dv; ++c) {
        T acc[NH * L] = {};
        for (int s = 0; s < ns; ++s)
            for (int a = 0; a < Gk; ++a) {
                const T* __restrict vp = v + ((w.j[s] * Gk + a) * dv + c) * Bp + b0;
                GSA_LANES {
                    const T vl = vp[l];
#pragma GCC unroll 8
                    for (int i = 0; i < NH; ++i) acc[i * L + l] += W[(((h0 + i) * ns + s) * Gk + a) * L + l] * vl;
                }
            }
        for (int i = 0; i < NH; ++i) GSA_LANES o[((h0 + i) * dv + c) * Bp + l] = acc[i * L + l];
    }
}

template <typename T, int L>
inline void local_values(const LocalShape& sh, const Window& w, const T* W, const T* v, i64 b0, T* o) {
    in_fours(sh.H, [&](auto nh, int h) { values_block<T, L, decltype(nh)::value>(sh, w, W, v, b0, h, o); });
}

// Value gradients of one pixel: dW[h, s, a_k] = do[h]·v[j_s, a_k], dv[j_s, a_k] += Σ_h W[h, s, a_k] do[h]; four
// output elements at a time, so each value vector and its gradient are read once per four (sums in the order
// of one at a time: bit-identical results).
template <typename T, int L, int NH>
inline void value_grad_block(const LocalShape& sh, const Window& w, const T* __restrict dop, const T* __restrict v,
                             i64 b0, int h0, const T* __restrict W, T* __restrict dW, T* __restrict dvv) {
    const int ns = w.ns, Gk = sh.Gk, dv = sh.dv;
    const i64 Bp = sh.Bp;
    for (int s = 0; s < ns; ++s)
        for (int a = 0; a < Gk; ++a) {
            const i64 vo = (w.j[s] * Gk + a) * dv * Bp + b0;
            T acc[NH * L] = {};
            T wr[NH * L];
            for (int i = 0; i < NH; ++i) GSA_LANES wr[i * L + l] = W[(((h0 + i) * ns + s) * Gk + a) * L + l];
            for (int c = 0; c < dv; ++c) {
                const T* __restrict vp = v + vo + c * Bp;
                T* __restrict dvp = dvv + vo + c * Bp;
                GSA_LANES {
                    T g = dvp[l];
                    const T vl = vp[l];
#pragma GCC unroll 8
                    for (int i = 0; i < NH; ++i) {
                        const T dc = dop[((h0 + i) * dv + c) * Bp + l];
                        acc[i * L + l] += dc * vl;
                        g += wr[i * L + l] * dc;
                    }
                    dvp[l] = g;
                }
            }
            for (int i = 0; i < NH; ++i) GSA_LANES dW[(((h0 + i) * ns + s) * Gk + a) * L + l] = acc[i * L + l];
        }
}

template <typename T, int L>
inline void local_value_grad(const LocalShape& sh, const Window& w, const T* dop, const T* v, i64 b0, const T* W,
                             T* dW, T* dvv) {
    in_fours(sh.H, [&](auto nh, int h) {
        value_grad_block<T, L, decltype(nh)::value>(sh, w, dop, v, b0, h, W, dW, dvv);
    });
}

// E (U, ns, Gk, L) and Pn (H, ns, L) of query element a_q at pixel pix for the lanes at b0, from the content
// scores sc.C of local_content; W += Pn ⊗ E.
template <typename T, int L>
inline void local_probs(const LocalShape& sh, const Window& w, i64 pix, int aq, i64 b0, const T* q,
                        const T* tab, const T* gt, const i64* cls, LocalScratch<T, L>& sc, T* E, T* Pn) {
    const int ns = w.ns, Gk = sh.Gk, d = sh.d, U = sh.U, R = sh.ks * sh.ks;
    const i64 Bp = sh.Bp;
    const T* qa = q + (pix * sh.Gq + aq) * d * Bp + b0;
    const T* C = sc.C.data() + static_cast<size_t>(aq) * R * Gk * L;
    for (int u = 0; u < U; ++u) {
        const T* ga = gt ? gt + ((pix * sh.Gq + aq) * U + u) * Gk * Bp + b0 : nullptr;
        for (int s = 0; s < ns; ++s) {
            T* e = E + (u * ns + s) * Gk * L;
            T m[L], sum[L] = {};
            GSA_LANES m[l] = -std::numeric_limits<T>::infinity();
            for (int a = 0; a < Gk; ++a) GSA_LANES {
                    e[a * L + l] = C[(s * Gk + a) * L + l] + (ga ? ga[a * Bp + l] : T(0));
                    m[l] = std::max(m[l], e[a * L + l]);
                }
            for (int a = 0; a < Gk; ++a) GSA_LANES {
                    e[a * L + l] = expneg(e[a * L + l] - m[l]);
                    sum[l] += e[a * L + l];
                }
            T inv[L];
            GSA_LANES inv[l] = T(1) / sum[l];
            for (int a = 0; a < Gk; ++a) GSA_LANES e[a * L + l] *= inv[l];
            T* mx = sc.mx.data() + (u * ns + s) * L;
            T* sm = sc.sm.data() + (u * ns + s) * L;
            GSA_LANES {
                mx[l] = m[l];
                sm[l] = sum[l];
            }
        }
    }
    for (int h = 0; h < sh.H; ++h) {
        const int u = cls ? static_cast<int>(cls[h]) : 0;
        T* P = Pn + h * ns * L;
        T m[L];
        GSA_LANES m[l] = -std::numeric_limits<T>::infinity();
        for (int s = 0; s < ns; ++s) {
            const T* tr = tab + (static_cast<i64>(h) * R + w.r[s]) * sh.p;
            const T* mx = sc.mx.data() + (u * ns + s) * L;
            T acc[L];
            GSA_LANES acc[l] = mx[l];
            for (int c = 0; c < sh.p; ++c) {
                const T t = tr[c];
                GSA_LANES acc[l] += qa[c * Bp + l] * t;
            }
            GSA_LANES {
                P[s * L + l] = acc[l];
                m[l] = std::max(m[l], acc[l]);
            }
        }
        T sum[L] = {};
        for (int s = 0; s < ns; ++s) {
            const T* sm = sc.sm.data() + (u * ns + s) * L;
            GSA_LANES {
                P[s * L + l] = expneg(P[s * L + l] - m[l]) * sm[l];
                sum[l] += P[s * L + l];
            }
        }
        T inv[L];
        GSA_LANES inv[l] = T(1) / sum[l];
        for (int s = 0; s < ns; ++s) GSA_LANES P[s * L + l] *= inv[l];
    }
    T* W = sc.W.data();
    T mk[L];
    uint32_t hw[L / 2 + 2];
    for (int h = 0; h < sh.H; ++h) {
        const int u = cls ? static_cast<int>(cls[h]) : 0;
        for (int s = 0; s < ns; ++s) {
            const T* P = Pn + (h * ns + s) * L;
            const T* e = E + (u * ns + s) * Gk * L;
            T* wr = W + (h * ns + s) * Gk * L;
            if (!sh.drop.on) {
                for (int a = 0; a < Gk; ++a) GSA_LANES wr[a * L + l] += P[l] * e[a * L + l];
                continue;
            }
            for (int a = 0; a < Gk; ++a) {
                local_keep<T, L>(sh, pix, aq, h, w.r[s], a, b0, mk, hw);
                GSA_LANES wr[a * L + l] += P[l] * e[a * L + l] * mk[l];
            }
        }
    }
}

// The lanes [lo, hi) (a multiple of L) of the forward pass.
template <typename T, int L>
void local_forward(LocalShape sh, i64 lo, i64 hi, const T* q, const T* k, const T* v, const T* tab, const T* gt,
                   const i64* cls, T* out, int nthreads) {
    const int X = sh.X, Y = sh.Y, Gk = sh.Gk, H = sh.H, dv = sh.dv;
    const i64 Bp = sh.Bp, nblk = (hi - lo) / L;
#pragma omp parallel num_threads(threads(nthreads))
    {
        Window* w = new Window;
        LocalScratch<T, L> sc(sh, false);
#pragma omp for schedule(dynamic, 1)
        for (i64 job = 0; job < nblk * X; ++job) {
            const i64 b0 = lo + (job / X) * L;
            const int x = static_cast<int>(job % X);
            for (int y = 0; y < Y; ++y) {
                const i64 pix = static_cast<i64>(x) * Y + y;
                window_of(*w, x, y, sh);
                const int ns = w->ns;
                std::fill(sc.W.begin(), sc.W.begin() + static_cast<size_t>(H) * ns * Gk * L, T(0));
                local_content<T, L>(sh, *w, q + pix * sh.Gq * sh.d * Bp + b0, k, b0, sc.C.data());
                for (int aq = 0; aq < sh.Gq; ++aq)
                    local_probs<T, L>(sh, *w, pix, aq, b0, q, tab, gt, cls, sc, sc.E.data(), sc.Pn.data());
                local_values<T, L>(sh, *w, sc.W.data(), v, b0, out + pix * H * dv * Bp + b0);
            }
        }
        delete w;
    }
}

// The lanes [lo, hi) (a multiple of L) of the backward pass.
template <typename T, int L>
void local_backward(LocalShape sh, i64 lo, i64 hi, const T* q, const T* k, const T* v, const T* tab, const T* gt,
                    const i64* cls, const T* dout, T* dq, T* dk, T* dvv, T* dtab, T* dgt, int nthreads) {
    // dk, dvv, dtab accumulated (zero them first); dq, dgt written.
    const int X = sh.X, Y = sh.Y, Gq = sh.Gq, Gk = sh.Gk, H = sh.H, U = sh.U, d = sh.d, dv = sh.dv, p = sh.p;
    const int K = sh.ks * sh.ks;
    const i64 Bp = sh.Bp, nblk = (hi - lo) / L;
    // Jobs: (lane block, stripe of `rows` query rows). A stripe's windows write key rows within `rad` of
    // it, so stripes of the same parity (rows >= 2 rad apart) never write the same key: even stripes
    // run first, then odd ones.
    // The table gradient is summed per job, then over jobs in a fixed order: the result does not depend
    // on which thread ran which job (deterministic for any thread count).
    const int rad = sh.ks / 2, rows = std::max(2 * rad, 1);
    const i64 nstripe = (X + rows - 1) / rows, even = nblk * ((nstripe + 1) / 2);
    const size_t ntab = static_cast<size_t>(H) * K * p;
    std::vector<T> part(static_cast<size_t>(nblk * nstripe) * ntab);
#pragma omp parallel num_threads(threads(nthreads))
    {
        Window* w = new Window;
        LocalScratch<T, L> sc(sh, true);
        T mk[L];
        std::vector<uint32_t> hwv(L / 2 + 2);  // keep_run scratch (heap, like the chunked kernels')
        for (int parity = 0; parity < 2; ++parity) {
#pragma omp for schedule(dynamic, 1)
            for (i64 job = 0; job < nblk * ((nstripe + 1 - parity) / 2); ++job) {
                T* pj = part.data() + static_cast<size_t>(parity ? even + job : job) * ntab;
                const i64 per = (nstripe + 1 - parity) / 2;
                const i64 b0 = lo + (job / per) * L;
                const int x0 = static_cast<int>((2 * (job % per) + parity) * rows);
                for (int x = x0; x < std::min(x0 + rows, X); ++x)
                    for (int y = 0; y < Y; ++y) {
                        const i64 pix = static_cast<i64>(x) * Y + y;
                        window_of(*w, x, y, sh);
                        const int ns = w->ns;
                        const size_t eS = static_cast<size_t>(U) * ns * Gk * L, pS = static_cast<size_t>(H) * ns * L;
                        std::fill(sc.W.begin(), sc.W.begin() + static_cast<size_t>(H) * ns * Gk * L, T(0));
                        const i64 qo = pix * Gq * d * Bp + b0;
                        local_content<T, L>(sh, *w, q + qo, k, b0, sc.C.data());
                        for (int aq = 0; aq < Gq; ++aq)
                            local_probs<T, L>(sh, *w, pix, aq, b0, q, tab, gt, cls, sc, sc.E.data() + aq * eS,
                                              sc.Pn.data() + aq * pS);
                        // values: o[h] = Σ W v  →  dW = do · v, dv += W do
                        local_value_grad<T, L>(sh, *w, dout + pix * H * dv * Bp + b0, v, b0, sc.W.data(), sc.dW.data(),
                                               dvv);
                        for (int aq = 0; aq < Gq; ++aq) {
                            const T* E = sc.E.data() + aq * eS;
                            const T* Pn = sc.Pn.data() + aq * pS;
                            T* dE = sc.dE.data();
                            T* s2 = sc.s2.data();
                            T* dPn = sc.dPn.data();
                            std::fill(dE, dE + eS, T(0));
                            std::fill(s2, s2 + static_cast<size_t>(U) * ns * L, T(0));
                            for (int h = 0; h < H; ++h) {
                                const int u = cls ? static_cast<int>(cls[h]) : 0;
                                T gh[L] = {};
                                for (int s = 0; s < ns; ++s) {
                                    const T* e = E + (u * ns + s) * Gk * L;
                                    const T* dw = sc.dW.data() + (h * ns + s) * Gk * L;
                                    T* de = dE + (u * ns + s) * Gk * L;
                                    const T* pn = Pn + (h * ns + s) * L;
                                    if (sh.drop.on) {  // X = dW ⊙ s·D of this a_q in place of dW
                                        T* x = sc.X.data();
                                        for (int a = 0; a < Gk; ++a) {
                                            local_keep<T, L>(sh, pix, aq, h, w->r[s], a, b0, mk, hwv.data());
                                            GSA_LANES x[a * L + l] = dw[a * L + l] * mk[l];
                                        }
                                        dw = x;
                                    }
                                    T acc[L] = {};
                                    for (int a = 0; a < Gk; ++a) GSA_LANES {
                                            acc[l] += dw[a * L + l] * e[a * L + l];
                                            de[a * L + l] += dw[a * L + l] * pn[l];
                                        }
                                    GSA_LANES {
                                        dPn[(h * ns + s) * L + l] = acc[l];
                                        gh[l] += pn[l] * acc[l];
                                    }
                                }
                                T* gp = sc.g.data() + h * L;
                                GSA_LANES gp[l] = gh[l];
                            }
                            const T* qa = q + (pix * Gq + aq) * d * Bp + b0;
                            T* dqa = dq + (pix * Gq + aq) * d * Bp + b0;
                            for (int c = 0; c < d; ++c) GSA_LANES dqa[c * Bp + l] = T(0);
                            for (int h = 0; h < H; ++h) {
                                const int u = cls ? static_cast<int>(cls[h]) : 0;
                                const T* gp = sc.g.data() + h * L;
                                for (int s = 0; s < ns; ++s) {
                                    const T* pn = Pn + (h * ns + s) * L;
                                    const T* dpn = dPn + (h * ns + s) * L;
                                    T* s2u = s2 + (u * ns + s) * L;
                                    T dp[L];
                                    GSA_LANES {
                                        dp[l] = pn[l] * (dpn[l] - gp[l]);
                                        s2u[l] += pn[l] * gp[l];
                                    }
                                    const i64 t = (static_cast<i64>(h) * K + w->r[s]) * p;
                                    T* dtl = sc.dtab.data() + t * L;
                                    for (int c = 0; c < p; ++c) {
                                        const T tv = tab[t + c];
                                        GSA_LANES {
                                            dqa[c * Bp + l] += dp[l] * tv;
                                            dtl[c * L + l] += dp[l] * qa[c * Bp + l];
                                        }
                                    }
                                }
                            }
                            T* dC = sc.dC.data() + static_cast<size_t>(aq) * K * Gk * L;
                            std::fill(dC, dC + static_cast<size_t>(ns) * Gk * L, T(0));
                            for (int u = 0; u < U; ++u) {
                                T* dg = dgt ? dgt + ((pix * Gq + aq) * U + u) * Gk * Bp + b0 : nullptr;
                                if (dg)
                                    for (int a = 0; a < Gk; ++a) GSA_LANES dg[a * Bp + l] = T(0);
                                for (int s = 0; s < ns; ++s) {
                                    const T* e = E + (u * ns + s) * Gk * L;
                                    const T* de = dE + (u * ns + s) * Gk * L;
                                    const T* sv = s2 + (u * ns + s) * L;
                                    for (int a = 0; a < Gk; ++a) {
                                        T dt[L];
                                        GSA_LANES {
                                            dt[l] = e[a * L + l] * (de[a * L + l] - sv[l]);
                                            dC[(s * Gk + a) * L + l] += dt[l];
                                        }
                                        if (dg) GSA_LANES dg[a * Bp + l] += dt[l];
                                    }
                                }
                            }
                        }
                        local_content_grad<T, L>(sh, *w, q + qo, k, b0, sc.dC.data(), dq + qo, dk);
                    }
                for (size_t i = 0; i < ntab; ++i) {  // this job's table gradient, lanes summed
                    T acc = 0;
                    for (int l = 0; l < L; ++l) acc += sc.dtab[i * L + l];
                    pj[i] = acc;
                }
                std::fill(sc.dtab.begin(), sc.dtab.end(), T(0));
            }
        }
        delete w;
    }
    const i64 njobs = nblk * nstripe;
    for (size_t i = 0; i < ntab; ++i) {
        T acc = 0;
        for (i64 j = 0; j < njobs; ++j) acc += part[static_cast<size_t>(j) * ntab + i];
        dtab[i] += acc;
    }
}
#undef GSA_LANES

template <typename T>
constexpr int local_lanes() {
    return static_cast<int>(64 / sizeof(T));
}

// Batch × heads is padded to a multiple of this: half a block of L lanes (8 float32, 4 float64).
template <typename T>
constexpr int lane_padding() {
    return local_lanes<T>() / 2;
}

// Calls f(std::integral_constant<int, L>{}, 0, full) on the whole L-lane blocks of [0, Bp) and, when Bp is
// not a multiple of L, f(std::integral_constant<int, lane_padding>{}, full, Bp) on the last half block
// (batch × heads = 72 runs as 4 × 16 + 8 float32 lanes, not 80). Each lane's arithmetic is the same
// whatever the block width, so the results do not depend on the split.
template <typename T, typename F>
inline void by_lane_blocks(i64 Bp, F&& f) {
    constexpr int L = local_lanes<T>(), half = lane_padding<T>();
    const i64 full = Bp / L * L;
    if (full > 0) f(std::integral_constant<int, L>{}, i64(0), full);
    if (full < Bp) f(std::integral_constant<int, half>{}, full, Bp);
}

}  // namespace

extern "C" {

int gsa_abi_version() { return 6; }

void gsa_probs(int dtype, i64 npix, int nd, const i64* psize, const void* C, const i64* Cps, const i64* Cis,
               const void* Gt, const void* P, const i64* Pps, const i64* Pis, const void* qp, const i64* Qps,
               const i64* Qis, const void* tabT, int np, const void* mb, const i64* Mps, const i64* Mis,
               const i64* u_of_h, int Gq, int U, int Gk, int H, int Kx, int Ky, void* E, void* Pn, int nthreads) {
    Pix px{nd, psize};
    if (dtype == 0)
        probs<float>(npix, px, (const float*)C, Cps, Cis, (const float*)Gt, (const float*)P, Pps, Pis,
                     (const float*)qp, Qps, Qis, (const float*)tabT, np, (const float*)mb, Mps, Mis, u_of_h, Gq, U,
                     Gk, H, Kx, Ky, (float*)E, (float*)Pn, nthreads);
    else
        probs<double>(npix, px, (const double*)C, Cps, Cis, (const double*)Gt, (const double*)P, Pps, Pis,
                      (const double*)qp, Qps, Qis, (const double*)tabT, np, (const double*)mb, Mps, Mis, u_of_h, Gq,
                      U, Gk, H, Kx, Ky, (double*)E, (double*)Pn, nthreads);
}

void gsa_weights(int dtype, i64 npix, int nd, const i64* psize, const void* Pn, const void* E, const i64* u_of_h,
                 int Gq, int U, int Gk, int H, int Kx, int Ky, uint32_t thr, uint32_t k0, uint32_t k1, int drop_on,
                 double scale, void* W, const i64* Wps, const i64* Wis, int nthreads) {
    Pix px{nd, psize};
    Drop d{thr, k0, k1, drop_on};
    if (dtype == 0)
        weights<float>(npix, px, (const float*)Pn, (const float*)E, u_of_h, Gq, U, Gk, H, Kx, Ky, d, (float)scale,
                       (float*)W, Wps, Wis, nthreads);
    else
        weights<double>(npix, px, (const double*)Pn, (const double*)E, u_of_h, Gq, U, Gk, H, Kx, Ky, d, scale,
                        (double*)W, Wps, Wis, nthreads);
}

void gsa_backward(int dtype, i64 npix, int nd, const i64* psize, const void* Pn, const void* E, const i64* u_of_h,
                  int Gq, int U, int Gk, int H, int Kx, int Ky, uint32_t thr, uint32_t k0, uint32_t k1, int drop_on,
                  double scale, const void* dW, const i64* dWps, const i64* dWis, void* W, const i64* Wps,
                  const i64* Wis, void* dP, const void* qp, const i64* Qps, const i64* Qis, const void* tabT, int np,
                  void* dqp, void* dtabT, void* dC, const i64* dCps, const i64* dCis, void* dGt, int nthreads) {
    Pix px{nd, psize};
    Drop d{thr, k0, k1, drop_on};
    if (dtype == 0)
        backward<float>(npix, px, (const float*)Pn, (const float*)E, u_of_h, Gq, U, Gk, H, Kx, Ky, d, (float)scale,
                        (const float*)dW, dWps, dWis, (float*)W, Wps, Wis, (float*)dP, (const float*)qp, Qps, Qis,
                        (const float*)tabT, np, (float*)dqp, (float*)dtabT, (float*)dC, dCps, dCis, (float*)dGt,
                        nthreads);
    else
        backward<double>(npix, px, (const double*)Pn, (const double*)E, u_of_h, Gq, U, Gk, H, Kx, Ky, d, scale,
                         (const double*)dW, dWps, dWis, (double*)W, Wps, Wis, (double*)dP, (const double*)qp, Qps,
                         Qis, (const double*)tabT, np, (double*)dqp, (double*)dtabT, (double*)dC, dCps, dCis,
                         (double*)dGt, nthreads);
}

void gsa_fold_add(int dtype, const void* tiles, const i64* ts, i64 Bc, i64 nx, i64 ny, i64 G, i64 Wx, i64 Wy, i64 c,
                  i64 Tx, i64 Ty, void* dst, const i64* ds, int nthreads) {
    if (dtype == 0)
        fold_add<float>((const float*)tiles, ts, Bc, nx, ny, G, Wx, Wy, c, Tx, Ty, (float*)dst, ds, nthreads);
    else
        fold_add<double>((const double*)tiles, ts, Bc, nx, ny, G, Wx, Wy, c, Tx, Ty, (double*)dst, ds, nthreads);
}

// The lane padding (lane_padding; see by_lane_blocks).
int gsa_local_lanes(int dtype) { return dtype == 0 ? lane_padding<float>() : lane_padding<double>(); }

void gsa_local_forward(int dtype, i64 Bp, i64 Bn, int X, int Y, int Gq, int Gk, int H, int U, int d, int dv, int p,
                       int ks, uint32_t thr, uint32_t k0, uint32_t k1, int drop_on, double scale, const void* q,
                       const void* k, const void* v, const void* tab, const void* gt, const i64* cls, void* out,
                       int nthreads) {
    LocalShape sh{X, Y, Gq, Gk, H, U, d, dv, p, ks, Bp, Bn, Drop{thr, k0, k1, drop_on}, scale};
    auto run = [&](auto t) {
        using T = decltype(t);
        by_lane_blocks<T>(Bp, [&](auto lanes, i64 lo, i64 hi) {
            local_forward<T, decltype(lanes)::value>(sh, lo, hi, (const T*)q, (const T*)k, (const T*)v,
                                                     (const T*)tab, (const T*)gt, cls, (T*)out, nthreads);
        });
    };
    if (dtype == 0)
        run(float{});
    else
        run(double{});
}

void gsa_local_backward(int dtype, i64 Bp, i64 Bn, int X, int Y, int Gq, int Gk, int H, int U, int d, int dv,
                        int p, int ks, uint32_t thr, uint32_t k0, uint32_t k1, int drop_on, double scale,
                        const void* q, const void* k, const void* v, const void* tab, const void* gt, const i64* cls,
                        const void* dout, void* dq, void* dk, void* dv_, void* dtab, void* dgt, int nthreads) {
    LocalShape sh{X, Y, Gq, Gk, H, U, d, dv, p, ks, Bp, Bn, Drop{thr, k0, k1, drop_on}, scale};
    auto run = [&](auto t) {
        using T = decltype(t);
        by_lane_blocks<T>(Bp, [&](auto lanes, i64 lo, i64 hi) {
            local_backward<T, decltype(lanes)::value>(sh, lo, hi, (const T*)q, (const T*)k, (const T*)v,
                                                      (const T*)tab, (const T*)gt, cls, (const T*)dout, (T*)dq,
                                                      (T*)dk, (T*)dv_, (T*)dtab, (T*)dgt, nthreads);
        });
    };
    if (dtype == 0)
        run(float{});
    else
        run(double{});
}

}  // extern "C"
