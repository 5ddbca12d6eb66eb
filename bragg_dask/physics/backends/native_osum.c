/* The orientation sum of bragg_dask's fused CPU kernel: sum over orientations of F_cell^2 F_latt^2.
 *
 * The same arithmetic as _orientation_sum in fused.py (see that module for the maths), written as
 * plain C for a compiler's auto-vectoriser: points are processed in blocks of BLOCK, and every step
 * of one orientation is a simple loop over the block (in L1 cache), so each vectorises; sin, cos and
 * exp come from glibc's vector math library (libmvec) through the declarations below.  Built by
 * native.py with -O3 -march=native -ffp-contract=off -fno-trapping-math (no implicit fused multiply-adds: the same
 * roundings as the reference path), loaded with ctypes, and called from several Python threads on slices of the
 * points (ctypes releases the GIL).  No torch headers: it builds in about a second.
 *
 * Parameters (ip: int64, dp: double):
 *   ip[0] points P, ip[1] orientations O, ip[2] shape (0 square, 1 round, 2 gauss, 3 tophat),
 *   ip[3..5] N_a, N_b, N_c, ip[6..8] per-axis method (0: N == 1, 1: Chebyshev recurrence, 2: sine form),
 *   ip[9] table lookup (0: default_F), ip[10..12] table offset (h, k, l min), ip[13..15] table dims,
 *   ip[16] tricubic interpolation (0: off), ip[17..19] amplitude table's h, k, l min, ip[20..22] its dims.
 *   dp[0] fudge, dp[1..9] a*, b*, c* rows (1/A), dp[10] default_F^2.
 * Arrays: sx, sy, sz (P,) scattering vector components; cells (O, 9) a, b, c per orientation;
 * table: F^2 (dims[0] x dims[1] x dims[2]); amp: amplitudes F (the tricubic table, n_h x n_k x n_l;
 * unread without interpolation); out (P,) double.
 *
 * Tricubic interpolation (-interpolate, spec mode) is TricubicLookup of structure_factors.py: where
 * the fractional (h, k, l) is in range on every axis (h - h_min + 3 <= n_h and h - 2 >= h_min), F^2
 * is the square of the C program's polin3 (4-point Lagrange along l, then k, then h, on the nodes
 * floor(x) - 1 .. floor(x) + 2), else the nearest-neighbour F^2.  Each Lagrange term is
 * ((d_a d_b) d_c) y_i / den_i, summed left to right: the reference's operations in its order, each
 * rounded as there (see QUOT_double), so that F^2 is the reference's bit for bit for equal (h, k, l).
 */
#include <math.h>
#include <stdint.h>

#ifdef USE_LIBMVEC /* vector variants of these functions exist in libmvec: let loops calling them vectorise */
#pragma omp declare simd notinbranch
double sin(double);
#pragma omp declare simd notinbranch
double cos(double);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float sinf(float);
#pragma omp declare simd notinbranch
float cosf(float);
#pragma omp declare simd notinbranch
float expf(float);
#endif

#define BLOCK 128
#define TRI 32 /* in-range tricubic evaluations gathered per pass (64 x TRI stencil values) */
#define RUN 4  /* consecutive evaluations with one stencil interpolated from it without gathering */
#define PI_D 3.141592653589793

/* sin(N x)/sin(x) as U_{N-1}(cos x) by its recurrence (U_0 = 1, U_1 = 2c, U_k = 2c U_{k-1} - U_{k-2}),
 * one axis, any N: each step is a vectorised pass over the block.  f <- f * ratio, or f <- ratio. */
#define DEFINE_CHEB(T, COS)                                                                                   \
    static void cheb_##T(T *restrict f, const T *restrict d, int nb, int first, int n) {                    \
        T c[BLOCK], u[BLOCK], up[BLOCK];                                                                      \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                    \
            c[i] = (T)2.0 * COS(d[i] * (T)PI_D);                                                              \
            u[i] = c[i];                                                                                      \
            up[i] = (T)1.0;                                                                                   \
        }                                                                                                     \
        for (int k = 2; k < n; k++) {                                                                         \
            _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                \
                T nx = c[i] * u[i] - up[i];                                                                   \
                up[i] = u[i];                                                                                 \
                u[i] = nx;                                                                                    \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) f[i] = first ? u[i] : f[i] * u[i];                   \
    }

DEFINE_CHEB(double, cos)
DEFINE_CHEB(float, cosf)

/* The common cube of equal N (-N n) on all three axes by the recurrence: the three ratios, the
 * square and the sum in one vectorised pass, nothing stored between them. */
#define DEFINE_CHEB3(T, COS, N)                                                                               \
    static void cheb3_##T##_##N(double *restrict acc, const T *restrict dh, const T *restrict dk,           \
                                const T *restrict dl, const T *restrict f2, int nb) {                        \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                    \
            T ca = (T)2.0 * COS(dh[i] * (T)PI_D), cb = (T)2.0 * COS(dk[i] * (T)PI_D),                         \
              cc = (T)2.0 * COS(dl[i] * (T)PI_D);                                                             \
            T ua = ca, ub = cb, uc = cc, pa = (T)1.0, pb = (T)1.0, pc = (T)1.0;                               \
            _Pragma("GCC unroll 32") for (int k = 2; k < N; k++) {                                            \
                T na_ = ca * ua - pa, nb_ = cb * ub - pb, nc_ = cc * uc - pc;                                 \
                pa = ua;                                                                                      \
                pb = ub;                                                                                      \
                pc = uc;                                                                                      \
                ua = na_;                                                                                     \
                ub = nb_;                                                                                     \
                uc = nc_;                                                                                     \
            }                                                                                                 \
            T f = (ua * ub) * uc;                                                                             \
            acc[i] += (double)(f * f * f2[i]);                                                                \
        }                                                                                                     \
    }

#define CHEB3_ALL(T, COS)                                                                                     \
    DEFINE_CHEB3(T, COS, 2) DEFINE_CHEB3(T, COS, 3) DEFINE_CHEB3(T, COS, 4) DEFINE_CHEB3(T, COS, 5)           \
    DEFINE_CHEB3(T, COS, 6) DEFINE_CHEB3(T, COS, 7) DEFINE_CHEB3(T, COS, 8) DEFINE_CHEB3(T, COS, 9)           \
    DEFINE_CHEB3(T, COS, 10) DEFINE_CHEB3(T, COS, 11) DEFINE_CHEB3(T, COS, 12) DEFINE_CHEB3(T, COS, 13)       \
    DEFINE_CHEB3(T, COS, 14) DEFINE_CHEB3(T, COS, 15) DEFINE_CHEB3(T, COS, 16) DEFINE_CHEB3(T, COS, 17)       \
    DEFINE_CHEB3(T, COS, 18) DEFINE_CHEB3(T, COS, 19) DEFINE_CHEB3(T, COS, 20) DEFINE_CHEB3(T, COS, 21)       \
    DEFINE_CHEB3(T, COS, 22) DEFINE_CHEB3(T, COS, 23) DEFINE_CHEB3(T, COS, 24)                                \
    static void cheb3_##T(double *acc, const T *dh, const T *dk, const T *dl, const T *f2, int nb, int n) {  \
        switch (n) {                                                                                          \
        case 2: cheb3_##T##_2(acc, dh, dk, dl, f2, nb); break;                                                \
        case 3: cheb3_##T##_3(acc, dh, dk, dl, f2, nb); break;                                                \
        case 4: cheb3_##T##_4(acc, dh, dk, dl, f2, nb); break;                                                \
        case 5: cheb3_##T##_5(acc, dh, dk, dl, f2, nb); break;                                                \
        case 6: cheb3_##T##_6(acc, dh, dk, dl, f2, nb); break;                                                \
        case 7: cheb3_##T##_7(acc, dh, dk, dl, f2, nb); break;                                                \
        case 8: cheb3_##T##_8(acc, dh, dk, dl, f2, nb); break;                                                \
        case 9: cheb3_##T##_9(acc, dh, dk, dl, f2, nb); break;                                                \
        case 10: cheb3_##T##_10(acc, dh, dk, dl, f2, nb); break;                                              \
        case 11: cheb3_##T##_11(acc, dh, dk, dl, f2, nb); break;                                              \
        case 12: cheb3_##T##_12(acc, dh, dk, dl, f2, nb); break;                                              \
        case 13: cheb3_##T##_13(acc, dh, dk, dl, f2, nb); break;                                              \
        case 14: cheb3_##T##_14(acc, dh, dk, dl, f2, nb); break;                                              \
        case 15: cheb3_##T##_15(acc, dh, dk, dl, f2, nb); break;                                              \
        case 16: cheb3_##T##_16(acc, dh, dk, dl, f2, nb); break;                                              \
        case 17: cheb3_##T##_17(acc, dh, dk, dl, f2, nb); break;                                              \
        case 18: cheb3_##T##_18(acc, dh, dk, dl, f2, nb); break;                                              \
        case 19: cheb3_##T##_19(acc, dh, dk, dl, f2, nb); break;                                              \
        case 20: cheb3_##T##_20(acc, dh, dk, dl, f2, nb); break;                                              \
        case 21: cheb3_##T##_21(acc, dh, dk, dl, f2, nb); break;                                              \
        case 22: cheb3_##T##_22(acc, dh, dk, dl, f2, nb); break;                                              \
        case 23: cheb3_##T##_23(acc, dh, dk, dl, f2, nb); break;                                              \
        default: cheb3_##T##_24(acc, dh, dk, dl, f2, nb); break;                                              \
        }                                                                                                     \
    }

CHEB3_ALL(double, cos)
CHEB3_ALL(float, cosf)

/* x / b for the constant b = +-6, rounded as the division.  In double, where the FPU fuses multiply-adds,
 * without a division (they would be the bulk of polin3's time): q = x (1/b) is within an ulp of x/b,
 * the remainder x - b q is exact (one fma), and q + (x - b q)(1/b), rounded once, is the correctly
 * rounded quotient (Markstein's theorem; 1/b rounded to nearest).  Checked against the division on
 * 10^9 doubles: equal but for |x| < 2^-1021 (an ulp of a subnormal quotient: no product of stencil
 * weights and amplitudes comes near) and the sign of a zero (squared away).  In float the division
 * costs no more.  (The divisions by +-2 are exact multiplications by +-0.5: the compiler's.) */
static inline double quot_fma(double x, double b) {
    const double r = 1.0 / b, q = x * r;
    return fma(fma(-q, b, x), r, q);
}
#ifdef __FP_FAST_FMA
#define QUOT_double(X, B) quot_fma(X, B)
#else
#define QUOT_double(X, B) ((X) / (B))
#endif
#define QUOT_float(X, B) ((X) / (B))

/* The reference's _polint (structure_factors.py) on the nodes b, b + 1, b + 2, b + 3, b = floor(x) - 1:
 * P##0 .. P##3 = (d_a d_b) d_c over the three nodes other than i (d_j = x - (b + j)), and the sum of
 * the terms P##i y_i / den_i (den = -6, 2, -2, 6) from left to right, each rounded as in the reference. */
#define LAGRANGE_WEIGHTS(T, FLOOR, X, P)                                                                      \
    const T P##x = (X), P##b = FLOOR(P##x) - (T)1.0;                                                          \
    const T P##d0 = P##x - P##b, P##d1 = P##x - (P##b + (T)1.0), P##d2 = P##x - (P##b + (T)2.0),              \
            P##d3 = P##x - (P##b + (T)3.0);                                                                   \
    const T P##0 = P##d1 * P##d2 * P##d3, P##1 = P##d0 * P##d2 * P##d3, P##2 = P##d0 * P##d1 * P##d3,         \
            P##3 = P##d0 * P##d1 * P##d2;
#define LAGRANGE(T, P, Y0, Y1, Y2, Y3)                                                                        \
    (QUOT_##T(P##0 * (Y0), (T)-6.0) + P##1 * (Y1) / (T)2.0 + P##2 * (Y2) / (T)-2.0 + QUOT_##T(P##3 * (Y3), (T)6.0))

/* polin3: OUT <- F^2, F interpolated along l, then k, then h, as the reference's _polin3; Y is the
 * stencil value (a, b, c: h, k, l), an expression of o = 16 a + 4 b + c */
#define POLIN3(T, FLOOR, XH, XK, XL, Y, OUT)                                                                  \
    LAGRANGE_WEIGHTS(T, FLOOR, XH, ph)                                                                        \
    LAGRANGE_WEIGHTS(T, FLOOR, XK, pk)                                                                        \
    LAGRANGE_WEIGHTS(T, FLOOR, XL, pl)                                                                        \
    T s_[4];                                                                                                  \
    _Pragma("GCC unroll 4") for (int a = 0; a < 4; a++) {                                                     \
        T r_[4];                                                                                              \
        _Pragma("GCC unroll 4") for (int b = 0; b < 4; b++) {                                                 \
            int o = 16 * a + 4 * b;                                                                           \
            const T y0 = Y;                                                                                   \
            o++;                                                                                              \
            const T y1 = Y;                                                                                   \
            o++;                                                                                              \
            const T y2 = Y;                                                                                   \
            o++;                                                                                              \
            const T y3 = Y;                                                                                   \
            r_[b] = LAGRANGE(T, pl, y0, y1, y2, y3);                                                          \
        }                                                                                                     \
        s_[a] = LAGRANGE(T, pk, r_[0], r_[1], r_[2], r_[3]);                                                  \
    }                                                                                                         \
    const T f_ = LAGRANGE(T, ph, s_[0], s_[1], s_[2], s_[3]);                                                 \
    OUT = f_ * f_;

/* the 4 x 4 x 4 stencil from its first entry SRC (strides SH, SK, 1) to DST[(16 a + 4 b + c) STEP] */
#define STENCIL_COPY(T, SRC, SH, SK, DST, STEP)                                                               \
    {                                                                                                         \
        const T *src_ = (SRC);                                                                                \
        T *dst_ = (DST);                                                                                      \
        _Pragma("GCC unroll 4") for (int a = 0; a < 4; a++) {                                                 \
            _Pragma("GCC unroll 4") for (int b = 0; b < 4; b++) {                                             \
                const T *row = src_ + a * (SH) + b * (SK);                                                    \
                T *to = dst_ + (16 * a + 4 * b) * (STEP);                                                     \
                to[0] = row[0];                                                                               \
                to[STEP] = row[1];                                                                            \
                to[2 * (STEP)] = row[2];                                                                      \
                to[3 * (STEP)] = row[3];                                                                      \
            }                                                                                                 \
        }                                                                                                     \
    }

#define DEFINE_OSUM(NAME, T, SIN, COS, EXP, SQRT, CEIL, FLOOR)                                                 \
    /* sin(N x)/sin(x) by the sine form (N above the recurrence's range) */                                   \
    static void NAME##_sine(T *restrict f, const T *restrict d, int n, int first, int nb) {                   \
        const T pi = (T)PI_D, fn = (T)n;                                                                      \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                    \
            T x = d[i] * pi;                                                                                  \
            T v = SIN(x * fn) / SIN(x);                                                                       \
            T r = d[i] == (T)0.0 ? fn : v;                                                                    \
            f[i] = first ? r : f[i] * r;                                                                      \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* polin3 of m evaluations, xh, xk, xl their fractional indices: v[j] <- F^2.  The stencil (a, b, c: h, k, \
     * l) of evaluation j: y[(16 a + 4 b + c) TRI + j] (gathered), or st[16 a + 4 b + c] (one for all) */     \
    static void NAME##_polin3(const T *restrict y, const T *restrict xh, const T *restrict xk,                \
                              const T *restrict xl, T *restrict v, int m) {                                   \
        _Pragma("omp simd") for (int j = 0; j < m; j++) {                                                     \
            POLIN3(T, FLOOR, xh[j], xk[j], xl[j], y[(o) * TRI + j], v[j])                                     \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    static void NAME##_polin3_one(const T *restrict st, const T *restrict xh, const T *restrict xk,           \
                                  const T *restrict xl, T *restrict v, int m) {                               \
        _Pragma("omp simd") for (int j = 0; j < m; j++) {                                                     \
            POLIN3(T, FLOOR, xh[j], xk[j], xl[j], st[o], v[j])                                                \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* f2[i] <- tricubic F^2 where ok[i].  The in-range evaluations are taken in order; a run of RUN or more  \
     * consecutive ones with one stencil (common: neighbouring points have nearby h, k, l) is interpolated   \
     * from that stencil directly, the others are gathered (scalar loads, 4 contiguous l values per stencil  \
     * row) TRI at a time into y; each set in one vectorised pass */                                         \
    static void NAME##_tricubic(const int64_t *ip, const T *restrict amp, const T *restrict xh,                \
                                const T *restrict xk, const T *restrict xl, const T *restrict ok,             \
                                T *restrict f2, int nb) {                                                     \
        T y[64 * TRI], gx[3][TRI], st[64], cx[3][BLOCK], v[BLOCK];                                            \
        int sel[BLOCK], gi[TRI];                                                                              \
        int64_t off[BLOCK];                                                                                   \
        const int64_t lo0 = ip[17], lo1 = ip[18], lo2 = ip[19];                                               \
        const int64_t sk = ip[22], sh = ip[21] * ip[22];                                                      \
        int n = 0, m = 0;                                                                                     \
        for (int i = 0; i < nb; i++) { /* the in-range evaluations and their stencils' first entries */       \
            if (ok[i] == (T)0.0) continue;                                                                    \
            const int64_t bh = (int64_t)(FLOOR(xh[i]) - (T)1.0) - lo0;                                        \
            const int64_t bk = (int64_t)(FLOOR(xk[i]) - (T)1.0) - lo1;                                        \
            const int64_t bl = (int64_t)(FLOOR(xl[i]) - (T)1.0) - lo2;                                        \
            off[n] = bh * sh + bk * sk + bl;                                                                  \
            cx[0][n] = xh[i];                                                                                 \
            cx[1][n] = xk[i];                                                                                 \
            cx[2][n] = xl[i];                                                                                 \
            sel[n++] = i;                                                                                     \
        }                                                                                                     \
        for (int r0 = 0, r1; r0 < n; r0 = r1) {                                                               \
            for (r1 = r0 + 1; r1 < n && off[r1] == off[r0]; r1++) {                                           \
            }                                                                                                 \
            if (r1 - r0 >= RUN) { /* one stencil */                                                           \
                STENCIL_COPY(T, amp + off[r0], sh, sk, st, 1)                                                 \
                NAME##_polin3_one(st, cx[0] + r0, cx[1] + r0, cx[2] + r0, v, r1 - r0);                        \
                for (int j = r0; j < r1; j++) f2[sel[j]] = v[j - r0];                                         \
                continue;                                                                                     \
            }                                                                                                 \
            for (int j = r0; j < r1; j++) {                                                                   \
                STENCIL_COPY(T, amp + off[j], sh, sk, y + m, TRI)                                             \
                gx[0][m] = cx[0][j];                                                                          \
                gx[1][m] = cx[1][j];                                                                          \
                gx[2][m] = cx[2][j];                                                                          \
                gi[m++] = sel[j];                                                                             \
                if (m == TRI) {                                                                               \
                    NAME##_polin3(y, gx[0], gx[1], gx[2], v, m);                                              \
                    for (int q = 0; q < m; q++) f2[gi[q]] = v[q];                                             \
                    m = 0;                                                                                    \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        if (m) {                                                                                              \
            NAME##_polin3(y, gx[0], gx[1], gx[2], v, m);                                                      \
            for (int q = 0; q < m; q++) f2[gi[q]] = v[q];                                                     \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    static void NAME##_block(const int64_t *ip, const double *dp, const T *restrict sx, const T *restrict sy, \
                             const T *restrict sz, const T *restrict cells, const T *restrict table,          \
                             const T *restrict amp, double *restrict out, int nb) {                           \
        T dh[BLOCK], dk[BLOCK], dl[BLOCK], lat[BLOCK], f2[BLOCK];                                             \
        T fi[BLOCK], xh[BLOCK], xk[BLOCK], xl[BLOCK], ok[BLOCK];                                              \
        double acc[BLOCK];                                                                                    \
        const int64_t n_orient = ip[1];                                                                       \
        const int shape = (int)ip[2];                                                                         \
        const int n[3] = {(int)ip[3], (int)ip[4], (int)ip[5]};                                                \
        const double na = (double)n[0], nbc = (double)n[1], nc = (double)n[2];                                \
        const T fudge = (T)dp[0];                                                                             \
        const T nnn = (T)(na * nbc * nc);                                                                     \
        /* table index: clamp(h0 - offset, 0, dim - 1) per axis, flattened (exact: fused.spec_of checks the size) */ \
        const int tab = ip[9] != 0;                                                                           \
        const T o0 = (T)ip[10], o1 = (T)ip[11], o2 = (T)ip[12];                                               \
        const T m0 = (T)(ip[13] - 1), m1 = (T)(ip[14] - 1), m2 = (T)(ip[15] - 1);                             \
        const T t1 = (T)ip[14], t2 = (T)ip[15];                                                               \
        const T df2 = (T)dp[10];                                                                              \
        /* tricubic: in range where x - lo + 3 <= n and x - 2 >= lo on every axis (NaN: out of range) */      \
        const int tri = ip[16] != 0;                                                                          \
        const T lh = (T)ip[17], lk = (T)ip[18], ll_ = (T)ip[19];                                              \
        const T nh = (T)ip[20], nk = (T)ip[21], nl = (T)ip[22];                                               \
        for (int i = 0; i < nb; i++) acc[i] = 0.0;                                                            \
        for (int64_t o = 0; o < n_orient; o++) {                                                              \
            const T *c = cells + 9 * o;                                                                       \
            const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7],   \
                    c8 = c[8];                                                                                \
            _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                \
                T hh = sx[i] * c0 + sy[i] * c1 + sz[i] * c2;                                                  \
                T kk = sx[i] * c3 + sy[i] * c4 + sz[i] * c5;                                                  \
                T ll = sx[i] * c6 + sy[i] * c7 + sz[i] * c8;                                                  \
                xh[i] = hh;                                                                                   \
                xk[i] = kk;                                                                                   \
                xl[i] = ll;                                                                                   \
                T h0 = CEIL(hh - (T)0.5), k0 = CEIL(kk - (T)0.5), l0 = CEIL(ll - (T)0.5);                     \
                dh[i] = hh - h0;                                                                              \
                dk[i] = kk - k0;                                                                              \
                dl[i] = ll - l0;                                                                              \
                T a = h0 - o0, b = k0 - o1, e = l0 - o2;                                                      \
                a = a < (T)0.0 ? (T)0.0 : a;                                                                  \
                a = a > m0 ? m0 : a;                                                                          \
                b = b < (T)0.0 ? (T)0.0 : b;                                                                  \
                b = b > m1 ? m1 : b;                                                                          \
                e = e < (T)0.0 ? (T)0.0 : e;                                                                  \
                e = e > m2 ? m2 : e;                                                                          \
                fi[i] = (a * t1 + b) * t2 + e;                                                                \
            }                                                                                                 \
            if (tab) {                                                                                        \
                _Pragma("omp simd") for (int i = 0; i < nb; i++) f2[i] = table[(int64_t)fi[i]];               \
            } else {                                                                                          \
                for (int i = 0; i < nb; i++) f2[i] = df2;                                                     \
            }                                                                                                 \
            if (tri) {                                                                                        \
                _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                            \
                    const T h = xh[i], k = xk[i], l = xl[i];                                                  \
                    const int in = (h - lh + (T)3.0 <= nh) & (h - (T)2.0 >= lh) & (k - lk + (T)3.0 <= nk) &   \
                                   (k - (T)2.0 >= lk) & (l - ll_ + (T)3.0 <= nl) & (l - (T)2.0 >= ll_);       \
                    ok[i] = in ? (T)1.0 : (T)0.0;                                                             \
                }                                                                                             \
                NAME##_tricubic(ip, amp, xh, xk, xl, ok, f2, nb);                                             \
            }                                                                                                 \
            if (shape == 0 && ip[6] == 1 && ip[7] == 1 && ip[8] == 1 && n[0] == n[1] && n[1] == n[2]) {       \
                cheb3_##T(acc, dh, dk, dl, f2, nb, n[0]);                                                     \
                continue;                                                                                     \
            }                                                                                                 \
            if (shape == 0) {                                                                                 \
                int first = 1;                                                                                \
                const T *ds[3] = {dh, dk, dl};                                                                \
                for (int ax = 0; ax < 3; ax++) {                                                              \
                    if (ip[6 + ax] == 1)                                                                      \
                        cheb_##T(lat, ds[ax], nb, first, n[ax]);                                              \
                    else if (ip[6 + ax] == 2)                                                                 \
                        NAME##_sine(lat, ds[ax], n[ax], first, nb);                                           \
                    else                                                                                      \
                        continue;                                                                             \
                    first = 0;                                                                                \
                }                                                                                             \
                if (first) {                                                                                  \
                    for (int i = 0; i < nb; i++) acc[i] += (double)f2[i];                                     \
                } else {                                                                                      \
                    _Pragma("omp simd") for (int i = 0; i < nb; i++) acc[i] += (double)(lat[i] * lat[i] * f2[i]); \
                }                                                                                             \
                continue;                                                                                     \
            }                                                                                                 \
            if (shape == 1) {                                                                                 \
                const T wa = (T)(na * na), wb = (T)(nbc * nbc), wc = (T)(nc * nc);                            \
                const T kr = (T)(na * nbc * nc * 0.723601254558268);                                          \
                _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                            \
                    T hrad = dh[i] * dh[i] * wa + dk[i] * dk[i] * wb + dl[i] * dl[i] * wc;                    \
                    T x = (T)PI_D * SQRT(hrad * fudge);                                                       \
                    T safe = x == (T)0.0 ? (T)1.0 : x;                                                        \
                    T s3 = (T)3.0 * (SIN(safe) / safe - COS(safe)) / (safe * safe);                           \
                    T sinc3 = x == (T)0.0 ? (T)1.0 : s3;                                                      \
                    T f = kr * sinc3;                                                                         \
                    lat[i] = f * f;                                                                           \
                }                                                                                             \
            } else {                                                                                          \
                const T r0 = (T)dp[1], r1 = (T)dp[2], r2 = (T)dp[3], r3 = (T)dp[4], r4 = (T)dp[5],            \
                        r5 = (T)dp[6], r6 = (T)dp[7], r7 = (T)dp[8], r8 = (T)dp[9];                           \
                const T n2 = (T)(na * na * nbc * nbc * nc * nc);                                              \
                const T c063 = (T)0.63, c3969 = (T)0.3969;                                                    \
                const int gauss = shape == 2;                                                                 \
                _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                            \
                    T x = dh[i] * r0 + dk[i] * r3 + dl[i] * r6;                                               \
                    T y = dh[i] * r1 + dk[i] * r4 + dl[i] * r7;                                               \
                    T z = dh[i] * r2 + dk[i] * r5 + dl[i] * r8;                                               \
                    T rr = (x * x + y * y + z * z) * n2;                                                      \
                    T fg = nnn * EXP(-(rr / c063 * fudge));                                                   \
                    T ft = rr * fudge < c3969 ? nnn : (T)0.0;                                                 \
                    T f = gauss ? fg : ft;                                                                    \
                    lat[i] = f * f;                                                                           \
                }                                                                                             \
            }                                                                                                 \
            _Pragma("omp simd") for (int i = 0; i < nb; i++) acc[i] += (double)(lat[i] * f2[i]);              \
        }                                                                                                     \
        for (int i = 0; i < nb; i++) out[i] = acc[i];                                                         \
    }                                                                                                         \
                                                                                                              \
    void NAME(const int64_t *ip, const double *dp, const T *sx, const T *sy, const T *sz, const T *cells,     \
              const T *table, const T *amp, double *out) {                                                    \
        const int64_t p = ip[0];                                                                              \
        for (int64_t p0 = 0; p0 < p; p0 += BLOCK) {                                                           \
            int nb = (int)(p - p0 < BLOCK ? p - p0 : BLOCK);                                                  \
            NAME##_block(ip, dp, sx + p0, sy + p0, sz + p0, cells, table, amp, out + p0, nb);                 \
        }                                                                                                     \
    }

DEFINE_OSUM(osum_f64, double, sin, cos, exp, sqrt, ceil, floor)
DEFINE_OSUM(osum_f32, float, sinf, cosf, expf, sqrtf, ceilf, floorf)

/* A batch of pixels whole: their sub-pixel points' geometry (pixels.py's points, scatter_and_kept), the
 * orientation sum of each source's scattering vectors (NAME##_block), the points and sources added per pixel
 * and the pixel's factors (solid angle, capture, polarization: pixels.prologue; kernel.pixel_values' value),
 * with the reference's operations in its order, in double (the scattering vectors cast to T for the sum).
 * No per-pixel array but the output: the pixels' geometry is made where it is used, never kept.
 * Covers what pixel_values covers without a running sum, a curved detector or a -dmin cut (native.py says).
 *
 * gi (int64): [0] oversample, [1] sensor layers, [2] point pixel (1), [3] sources, [4] a sensor (1: capture),
 *   [5] no polarization (1: factor 1).
 * gp (double): [0..2] fdet, [3..5] sdet, [6..8] odet, [9..11] pix0 (m), [12] sub-pixel size (m), [13] layer
 *   step (m), [14] pixel size (m), [15] close distance (m), [16] mu x layer step, [17] Kahn factor K,
 *   [18] fluence scale, [19] background (water) term, [20] steps, [21..23] source 0's b_in, [24..26] its e_in.
 *   [6] the tile's first column, [7] its first row, [8] its width (no pixel list: the tile's pixels in raster
 *   order, ordinals first .. first + npix - 1).
 * src (double, sources x 4): incident x, y, z, wavelength (m).  fpix_in, spix_in: the pixels' absolute
 * indices (their entries first .. first + npix - 1), or NULL.  out (npix,) float: photons per pixel (the
 * float64 value rounded, as the image's copy rounds it). */
#define DEFINE_PIX(PIX, NAME, T)                                                                              \
    /* points i of the block at (fast, slow) sub-pixel coordinates fa, sa (pixel * oversample + sub-pixel)  \
     * and layer la: unit vectors d and distances r */                                                       \
    static void PIX##_points(const double *gp, const double *fa, const double *sa, const double *la, int nb,  \
                             double *restrict dx, double *restrict dy, double *restrict dz, double *restrict r) { \
        const double sub = gp[12], half = gp[12] / 2.0, step = gp[13];                                        \
        const double f0 = gp[0], f1 = gp[1], f2 = gp[2], s0 = gp[3], s1 = gp[4], s2 = gp[5];                  \
        const double o0 = gp[6], o1 = gp[7], o2 = gp[8], q0 = gp[9], q1 = gp[10], q2 = gp[11];                \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                    \
            const double fm = sub * fa[i] + half, sm = sub * sa[i] + half, off = la[i] * step;                \
            const double x = ((fm * f0 + sm * s0) + off * o0) + q0;                                           \
            const double y = ((fm * f1 + sm * s1) + off * o1) + q1;                                           \
            const double z = ((fm * f2 + sm * s2) + off * o2) + q2;                                           \
            const double rr = sqrt(x * x + y * y + z * z);                                                    \
            dx[i] = x / rr;                                                                                   \
            dy[i] = y / rr;                                                                                   \
            dz[i] = z / rr;                                                                                   \
            r[i] = rr;                                                                                        \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* the pixels' values from their totals and their factors (from each one's first point d0, r0 and its   \
     * last layer's first point dt): value * capture * polar * omega, rounded to float */                    \
    static void PIX##_factors(const int64_t *gi, const double *gp, const double *src, int n,                  \
                              const double *restrict d0x, const double *restrict d0y,                         \
                              const double *restrict d0z, const double *restrict r0,                          \
                              const double *restrict dtx, const double *restrict dty,                         \
                              const double *restrict dtz, const double *restrict tot, float *restrict out) {  \
        const double px2 = gp[14] * gp[14], close = gp[15], k = gp[17], fl = gp[18], bg = gp[19], st = gp[20]; \
        const double t = (double)(gi[1] - 1), mu = gp[16];                                                    \
        const double i0 = src[0], i1 = src[1], i2 = src[2], o0 = gp[6], o1 = gp[7], o2 = gp[8];               \
        const double b0 = gp[21], b1 = gp[22], b2 = gp[23], e0 = gp[24], e1 = gp[25], e2 = gp[26];            \
        const int point = gi[2] != 0, sensor = gi[4] != 0, nopolar = gi[5] != 0, kahn = k != 0.0;            \
        double cap[BLOCK], pol[BLOCK], om[BLOCK];                                                             \
        _Pragma("omp simd") for (int j = 0; j < n; j++) {                                                     \
            const double r = r0[j];                                                                           \
            om[j] = point ? 1.0 / r / r : px2 / r / r * close / r;                                            \
            const double c = i0 * d0x[j] + i1 * d0y[j] + i2 * d0z[j];                                         \
            pol[j] = 0.5 * (1.0 + c * c);                                                                     \
        }                                                                                                     \
        if (kahn) {                                                                                           \
            for (int j = 0; j < n; j++) {                                                                     \
                const double c = i0 * d0x[j] + i1 * d0y[j] + i2 * d0z[j];                                     \
                const double c2 = c * c, s2 = 1.0 - c2;                                                       \
                const double psi = -atan2(d0x[j] * b0 + d0y[j] * b1 + d0z[j] * b2,                            \
                                          d0x[j] * e0 + d0y[j] * e1 + d0z[j] * e2);                           \
                pol[j] = 0.5 * (1.0 + c2 - k * cos(2.0 * psi) * s2);                                          \
            }                                                                                                 \
        }                                                                                                     \
        if (sensor) {                                                                                         \
            _Pragma("omp simd") for (int j = 0; j < n; j++) {                                                 \
                const double par = dtx[j] * o0 + dty[j] * o1 + dtz[j] * o2;                                   \
                cap[j] = exp(-t * mu / par) - exp(-(t + 1.0) * mu / par);                                     \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("omp simd") for (int j = 0; j < n; j++) {                                                     \
            const double value = fl * (bg + tot[j]) / st;                                                     \
            out[j] = (float)(value * (sensor ? cap[j] : 1.0) * (nopolar ? 1.0 : pol[j]) * om[j]);             \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* points k0 .. k0 + nk - 1 (C loop order: layer, subS, subF) of pixel (f, s) appended at fa, sa, la */   \
    static int PIX##_fill(int64_t os, int64_t f, int64_t s, int64_t k0, int64_t nk, double *fa, double *sa,   \
                          double *la) {                                                                       \
        int64_t layer = k0 / (os * os), ks = (k0 / os) % os, kf = k0 % os; /* then counted, not divided */    \
        const double fo = (double)f * (double)os, so = (double)s * (double)os;                                \
        for (int64_t k = 0; k < nk; k++) {                                                                    \
            fa[k] = fo + (double)kf;                                                                          \
            sa[k] = so + (double)ks;                                                                          \
            la[k] = (double)layer;                                                                            \
            if (++kf == os) {                                                                                 \
                kf = 0;                                                                                       \
                if (++ks == os) {                                                                             \
                    ks = 0;                                                                                   \
                    layer++;                                                                                  \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        return (int)nk;                                                                                       \
    }                                                                                                         \
                                                                                                              \
    /* one source's evaluations of the block's points d: their scattering vectors, cast to T, and their       \
     * orientation sums (contrib) */                                                                          \
    static void PIX##_source(const int64_t *ip, const double *dp, const double *in, const double *dx,         \
                             const double *dy, const double *dz, int nb, const T *cells, const T *table,      \
                             const T *amp, double *contrib) {                                                 \
        T sx[BLOCK], sy[BLOCK], sz[BLOCK];                                                                    \
        const double i0 = in[0], i1 = in[1], i2 = in[2], lam = in[3];                                         \
        _Pragma("omp simd") for (int i = 0; i < nb; i++) {                                                    \
            sx[i] = (T)((dx[i] - i0) / lam);                                                                  \
            sy[i] = (T)((dy[i] - i1) / lam);                                                                  \
            sz[i] = (T)((dz[i] - i2) / lam);                                                                  \
        }                                                                                                     \
        NAME##_block(ip, dp, sx, sy, sz, cells, table, amp, contrib, nb);                                     \
    }                                                                                                         \
                                                                                                              \
    /* each pixel's first point (d0, r0) and its last layer's first point (dt): from the block (whole: np     \
     * pixels of q points each), or made again for pixel (f, s) whose points took several blocks */           \
    static void PIX##_firsts(const double *gp, int64_t os, int64_t layers, int64_t np, int64_t q, int64_t f,  \
                             int64_t s, int whole, const double *dx, const double *dy, const double *dz,      \
                             const double *r, double *d0x, double *d0y, double *d0z, double *r0,              \
                             double *dtx, double *dty, double *dtz) {                                         \
        if (whole) {                                                                                          \
            const int64_t tq = (layers - 1) * os * os;                                                        \
            for (int64_t j = 0; j < np; j++) {                                                                \
                const int64_t i = j * q, t = j * q + tq;                                                      \
                d0x[j] = dx[i], d0y[j] = dy[i], d0z[j] = dz[i], r0[j] = r[i];                                 \
                dtx[j] = dx[t], dty[j] = dy[t], dtz[j] = dz[t];                                               \
            }                                                                                                 \
            return;                                                                                           \
        }                                                                                                     \
        double f2[2] = {(double)f * (double)os, (double)f * (double)os};                                      \
        double s2[2] = {(double)s * (double)os, (double)s * (double)os};                                      \
        double l2[2] = {0.0, (double)(layers - 1)};                                                           \
        double x2[2], y2[2], z2[2], r2[2];                                                                    \
        PIX##_points(gp, f2, s2, l2, 2, x2, y2, z2, r2);                                                      \
        d0x[0] = x2[0], d0y[0] = y2[0], d0z[0] = z2[0], r0[0] = r2[0];                                        \
        dtx[0] = x2[1], dty[0] = y2[1], dtz[0] = z2[1];                                                       \
    }                                                                                                         \
                                                                                                              \
    void PIX(const int64_t *ip, const double *dp, const int64_t *gi, const double *gp, const double *src,     \
             const int64_t *fpix_in, const int64_t *spix_in, int64_t first, int64_t npix, const T *cells,     \
             const T *table, const T *amp, float *out) {                                                      \
        const int64_t os = gi[0], layers = gi[1], nsrc = gi[3];                                               \
        int64_t fpix[BLOCK], spix[BLOCK]; /* the group's pixels: given, or (no list) a tile's in raster order */ \
        int64_t rf = 0, rs = 0;                                                                               \
        if (!fpix_in) {                                                                                       \
            rs = gi[7] + first / gi[8];                                                                       \
            rf = gi[6] + first % gi[8];                                                                       \
        }                                                                                                     \
        const int64_t q = os * os * layers;                                                                   \
        const int64_t ppb = q >= BLOCK ? 1 : BLOCK / q; /* whole pixels a block, or one pixel's points */     \
        double fa[BLOCK], sa[BLOCK], la[BLOCK], dx[BLOCK], dy[BLOCK], dz[BLOCK], r[BLOCK];                    \
        double contrib[BLOCK], tot[BLOCK];                                                                    \
        for (int64_t p0 = 0; p0 < npix; p0 += ppb) {                                                          \
            const int64_t np = npix - p0 < ppb ? npix - p0 : ppb;                                             \
            const int whole = q <= BLOCK; /* the group's points in one block, made once for every source */   \
            for (int64_t j = 0; j < np; j++) {                                                                \
                if (fpix_in) {                                                                                \
                    fpix[j] = fpix_in[first + p0 + j];                                                        \
                    spix[j] = spix_in[first + p0 + j];                                                        \
                    continue;                                                                                 \
                }                                                                                             \
                fpix[j] = rf;                                                                                 \
                spix[j] = rs;                                                                                 \
                if (++rf == gi[6] + gi[8]) {                                                                  \
                    rf = gi[6];                                                                               \
                    rs++;                                                                                     \
                }                                                                                             \
            }                                                                                                 \
            int nb = 0;                                                                                       \
            if (whole) {                                                                                      \
                for (int64_t j = 0; j < np; j++) nb += PIX##_fill(os, fpix[j], spix[j], 0, q,                 \
                                                                 fa + nb, sa + nb, la + nb);                  \
                PIX##_points(gp, fa, sa, la, nb, dx, dy, dz, r);                                              \
            }                                                                                                 \
            for (int64_t j = 0; j < np; j++) tot[j] = 0.0;                                                    \
            for (int64_t si = 0; si < nsrc; si++) {                                                           \
                double ps = 0.0; /* (one pixel's points in several blocks) */                                 \
                for (int64_t k0 = 0; k0 < (whole ? 1 : q); k0 += BLOCK) {                                     \
                    if (!whole) {                                                                             \
                        nb = PIX##_fill(os, fpix[0], spix[0], k0, q - k0 < BLOCK ? q - k0 : BLOCK, fa, sa, la);   \
                        PIX##_points(gp, fa, sa, la, nb, dx, dy, dz, r);                                      \
                    }                                                                                         \
                    PIX##_source(ip, dp, src + 4 * si, dx, dy, dz, nb, cells, table, amp, contrib);           \
                    if (!whole) {                                                                             \
                        for (int i = 0; i < nb; i++) ps += contrib[i];                                        \
                        continue;                                                                             \
                    }                                                                                         \
                    for (int64_t j = 0; j < np; j++) {                                                        \
                        double a = 0.0;                                                                       \
                        for (int64_t k = 0; k < q; k++) a += contrib[j * q + k];                              \
                        tot[j] += a;                                                                          \
                    }                                                                                         \
                }                                                                                             \
                if (!whole) tot[0] += ps;                                                                     \
            }                                                                                                 \
            double d0x[BLOCK], d0y[BLOCK], d0z[BLOCK], r0[BLOCK], dtx[BLOCK], dty[BLOCK], dtz[BLOCK];         \
            PIX##_firsts(gp, os, layers, whole ? np : 1, q, fpix[0], spix[0], whole, dx, dy, dz, r,           \
                         d0x, d0y, d0z, r0, dtx, dty, dtz);                                                   \
            PIX##_factors(gi, gp, src, (int)np, d0x, d0y, d0z, r0, dtx, dty, dtz, tot, out + p0);             \
        }                                                                                                     \
    }

DEFINE_PIX(pix_f64, osum_f64, double)
DEFINE_PIX(pix_f32, osum_f32, float)

/* the version of this file's interface: native.py refuses a library that reports another */
int osum_abi(void) { return 3; }
