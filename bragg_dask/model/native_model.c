/* bragg_dask.Model's orientation sum and its vector-Jacobian product, for the C library path of the model.
 *
 * The sum over orientations o of F_latt^2 F^2 at each scattering vector s (a point and a source), where
 * (h, k, l) = cells[o] s, the nearest index (h0, k0, l0) = ceil(h - 1/2), the offsets d = h - h0, and F the
 * structure factor table's amplitude at the nearest index (clamped into its padded table) or default_F;
 * F_latt^2 of the crystal's shape with N per axis continuous (bragg_dask/model/forward.py: the same formulas
 * in torch, which is the reference this file is held to by tests/test_model_native.py).
 *
 * The vector-Jacobian product takes the loss's gradient g with respect to each point's sum and gives the
 * gradients with respect to the scattering vectors (gs: 3 x P), the cell vectors of each orientation
 * (gcell: O x 9), N and the reciprocal vectors (gpar: 3 + 9), and the table (gtab); each recomputed from the
 * inputs (nothing is stored between the forward pass and this one), the reductions over points in double.
 * Where the forward cannot be differentiated (the nearest index, the flat top's edge) the derivative is that
 * of the smooth part, as torch's autograd gives it for forward.py.
 *
 * Built and loaded as bragg_dask/physics/backends/native.py builds its libraries (same flags, libmvec where
 * glibc has it); called by bragg_dask/model/fastsum.py from several threads on slices of the points.
 *
 * ip (int64): [0] points P, [1] orientations O, [2] shape (0 square, 1 round, 2 gauss, 3 tophat),
 *   [3] table (0: default_F everywhere), [4..6] the padded table's dims, [7] want gs, [8] want gtab.
 * dp (double): [0..2] N, [3] fudge, [4..12] a*, b*, c* rows (1/A), [13] default_F,
 *   [14..16] the padded table's first index (h, k, l), [17..19] the shapes' constants ROUND_NORM, GAUSS_WIDTH,
 *   TOPHAT_R2 (bragg_dask/physics/lattice.py's table).
 */
#include <math.h>
#include <stdint.h>

#ifdef USE_LIBMVEC
#pragma omp declare simd notinbranch
double sin(double);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float sinf(float);
#pragma omp declare simd notinbranch
float expf(float);
#endif

#define BLOCK 128
#define PI_D 3.141592653589793

int model_abi(void) { return 3; }

/* The common prologue of one evaluation (point i, orientation o): the indices, offsets and F. */
#define EVAL_START(T, CEIL)                                                                                   \
    const T hh = sx[i] * c0 + sy[i] * c1 + sz[i] * c2;                                                        \
    const T kk = sx[i] * c3 + sy[i] * c4 + sz[i] * c5;                                                        \
    const T ll = sx[i] * c6 + sy[i] * c7 + sz[i] * c8;                                                        \
    const T h0 = CEIL(hh - (T)0.5), k0 = CEIL(kk - (T)0.5), l0 = CEIL(ll - (T)0.5);                          \
    const T da = hh - h0, db = kk - k0, dc = ll - l0;                                                         \
    int64_t ia = (int64_t)(h0 - lo0), ib = (int64_t)(k0 - lo1), ic = (int64_t)(l0 - lo2);                     \
    ia = ia < 0 ? 0 : (ia > dim0 - 1 ? dim0 - 1 : ia);                                                        \
    ib = ib < 0 ? 0 : (ib > dim1 - 1 ? dim1 - 1 : ib);                                                        \
    ic = ic < 0 ? 0 : (ic > dim2 - 1 ? dim2 - 1 : ic);                                                        \
    const int64_t at = (ia * dim1 + ib) * dim2 + ic;                                                          \
    const T ff = tab ? table[at] : dflt;                                                                      \
    const T f2 = ff * ff;

/* sin(n x)/sin(x) of x = pi d (n at d == 0): R; with DERIV, its derivatives by d (RD) and by n (RN).  Each cosine
 * here is 1 - 2 sin^2(y/2): a sine and a cosine of one argument would become a call of sincos, which has no
 * vector variant the compiler uses, and the loop would not vectorise. */
#define SQUARE_AXIS(T, SIN, D, NN, R, RD, RN, DERIV)                                                     \
    T R, RD = (T)0.0, RN = (T)1.0;                                                                            \
    {                                                                                                         \
        const T x_ = (D) * (T)PI_D, safe_ = x_ == (T)0.0 ? (T)1.0 : x_;                                      \
        const T sn_ = SIN(safe_ * (NN)), s_ = SIN(safe_);                                                     \
        R = x_ == (T)0.0 ? (NN) : sn_ / s_;                                                                   \
        if (DERIV) {                                                                                          \
            const T hn_ = SIN(safe_ * (NN) * (T)0.5), h_ = SIN(safe_ * (T)0.5);                               \
            const T cn_ = (T)1.0 - (T)2.0 * hn_ * hn_, c_ = (T)1.0 - (T)2.0 * h_ * h_; /* (not sincos: scalar) */ \
            RD = x_ == (T)0.0 ? (T)0.0 : ((NN) * cn_ * s_ - sn_ * c_) / (s_ * s_) * (T)PI_D;                 \
            RN = x_ == (T)0.0 ? (T)1.0 : safe_ * cn_ / s_;                                                    \
        }                                                                                                     \
    }

/* The constants of one call, read from ip and dp. */
#define DEFINE_CONSTS(T)                                                                                      \
    typedef struct {                                                                                          \
        int64_t dim0, dim1, dim2;                                                                             \
        int tab;                                                                                              \
        T na, nbb, nc, fudge, dflt, lo0, lo1, lo2, pa, pb, pc, nprod, round_norm, gauss_width, tophat_r2;                                         \
        T a0, a1, a2, b0, b1, b2, e0, e1, e2;                                                                 \
    } consts_##T;                                                                                             \
    static void consts_##T##_read(consts_##T *k, const int64_t *ip, const double *dp) {                      \
        k->tab = ip[3] != 0;                                                                                  \
        k->dim0 = ip[4], k->dim1 = ip[5], k->dim2 = ip[6];                                                    \
        k->na = (T)dp[0], k->nbb = (T)dp[1], k->nc = (T)dp[2], k->fudge = (T)dp[3], k->dflt = (T)dp[13];     \
        k->lo0 = (T)dp[14], k->lo1 = (T)dp[15], k->lo2 = (T)dp[16];                                           \
        k->pa = k->nbb * k->nc, k->pb = k->na * k->nc, k->pc = k->na * k->nbb;                                \
        k->nprod = k->na * k->nbb * k->nc;                                                                    \
        k->a0 = (T)dp[4], k->a1 = (T)dp[5], k->a2 = (T)dp[6], k->b0 = (T)dp[7], k->b1 = (T)dp[8];            \
        k->b2 = (T)dp[9], k->e0 = (T)dp[10], k->e1 = (T)dp[11], k->e2 = (T)dp[12];                            \
        k->round_norm = (T)dp[17], k->gauss_width = (T)dp[18], k->tophat_r2 = (T)dp[19];                      \
    }

DEFINE_CONSTS(double)
DEFINE_CONSTS(float)

/* NAME##_orient for the block's shape, its arithmetic with (D 1) or without (D 0) the derivatives */
#define SHAPE_SWITCH(NAME, D)                                                                                 \
    switch (shape) {                                                                                          \
    case 0: NAME##_orient(k, c, sx, sy, sz, table, g, acc, gx, gy, gz, q, sn, sr, tv, ti, nb, 0, D); break;   \
    case 1: NAME##_orient(k, c, sx, sy, sz, table, g, acc, gx, gy, gz, q, sn, sr, tv, ti, nb, 1, D); break;   \
    case 2: NAME##_orient(k, c, sx, sy, sz, table, g, acc, gx, gy, gz, q, sn, sr, tv, ti, nb, 2, D); break;   \
    default: NAME##_orient(k, c, sx, sy, sz, table, g, acc, gx, gy, gz, q, sn, sr, tv, ti, nb, 3, D); break;  \
    }

#define DEFINE_MODEL(NAME, T, SIN, EXP, SQRT, CEIL)                                                        \
    /* one orientation c (9) over a block of points: the forward sum into acc, or (deriv) the products'     \
     * parts into gx, gy, gz (per point), q (the cell's 9), sn (N's 3), sr (the reciprocal rows' 9) and the   \
     * table's (tv at ti); inlined with shape and deriv constant, so that each loop holds its own arithmetic */ \
    static inline __attribute__((always_inline)) void NAME##_orient(                                         \
        const consts_##T *restrict kp, const T *restrict c, const T *restrict sx, const T *restrict sy,      \
        const T *restrict sz, const T *restrict table, const double *restrict g, double *restrict acc,       \
        double *restrict gx, double *restrict gy, double *restrict gz, double *restrict q,                   \
        double *restrict sn, double *restrict sr, double *restrict tv, int64_t *restrict ti, int nb,          \
        const int shape, const int deriv) {                                                                   \
        const consts_##T k = *kp;                                                                             \
        const int64_t dim0 = k.dim0, dim1 = k.dim1, dim2 = k.dim2;                                            \
        const int tab = k.tab;                                                                                \
        const T na = k.na, nbb = k.nbb, nc = k.nc, fudge = k.fudge, dflt = k.dflt;                            \
        const T lo0 = k.lo0, lo1 = k.lo1, lo2 = k.lo2, pa = k.pa, pb = k.pb, pc = k.pc, nprod = k.nprod;     \
        const T a0 = k.a0, a1 = k.a1, a2 = k.a2, b0 = k.b0, b1 = k.b1, b2 = k.b2, e0 = k.e0, e1 = k.e1,      \
                e2 = k.e2;                                                                                    \
        const T round_norm = k.round_norm, gauss_width = k.gauss_width, tophat_r2 = k.tophat_r2;             \
        const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7],       \
                c8 = c[8];                                                                                    \
        double q0 = 0.0, q1 = 0.0, q2 = 0.0, q3 = 0.0, q4 = 0.0, q5 = 0.0, q6 = 0.0, q7 = 0.0, q8 = 0.0;      \
        double sn0 = 0.0, sn1 = 0.0, sn2 = 0.0;                                                               \
        double sr0 = 0.0, sr1 = 0.0, sr2 = 0.0, sr3 = 0.0, sr4 = 0.0, sr5 = 0.0, sr6 = 0.0, sr7 = 0.0, sr8 = 0.0; \
        _Pragma("omp simd reduction(+ : q0, q1, q2, q3, q4, q5, q6, q7, q8, sn0, sn1, sn2, sr0, sr1, sr2, sr3, \
                sr4, sr5, sr6, sr7, sr8)") for (int i = 0; i < nb; i++) {                                     \
            EVAL_START(T, CEIL)                                                                               \
            T lat, la = (T)0.0, lb = (T)0.0, lc = (T)0.0, ln0 = (T)0.0, ln1 = (T)0.0, ln2 = (T)0.0;           \
            T lv = (T)0.0, vx = (T)0.0, vy = (T)0.0, vz = (T)0.0;                                             \
            if (shape == 0) {                                                                                 \
                SQUARE_AXIS(T, SIN, da, na, ra, rda, rna, deriv)                                         \
                SQUARE_AXIS(T, SIN, db, nbb, rb, rdb, rnb, deriv)                                        \
                SQUARE_AXIS(T, SIN, dc, nc, rc, rdc, rnc, deriv)                                         \
                const T bc = rb * rc, ac = ra * rc, ab = ra * rb;                                             \
                lat = (ab * rc) * (ab * rc);                                                                  \
                la = (T)2.0 * ra * bc * bc * rda;                                                             \
                lb = (T)2.0 * rb * ac * ac * rdb;                                                             \
                lc = (T)2.0 * rc * ab * ab * rdc;                                                             \
                ln0 = (T)2.0 * ra * bc * bc * rna;                                                            \
                ln1 = (T)2.0 * rb * ac * ac * rnb;                                                            \
                ln2 = (T)2.0 * rc * ab * ab * rnc;                                                            \
            } else if (shape == 1) {                                                                          \
                const T h2 = (da * da * na * na + db * db * nbb * nbb + dc * dc * nc * nc) * fudge;           \
                const T pos = h2 > (T)0.0 ? (T)1.0 : (T)0.0;                                                  \
                const T x = (T)PI_D * SQRT(h2 > (T)0.0 ? h2 : (T)1.0);                                        \
                const T hx_ = SIN(x * (T)0.5), sx_ = SIN(x), cx_ = (T)1.0 - (T)2.0 * hx_ * hx_;               \
                const T s3 = h2 > (T)0.0 ? (T)3.0 * (sx_ / x - cx_) / (x * x) : (T)1.0;                       \
                const T kr = nprod * round_norm, f = kr * s3;                                              \
                lat = f * f;                                                                                  \
                if (deriv) { /* d lat / d h2 = 2 f kr s3'(x) pi^2 / (2 x) */                                  \
                    const T ds3 = (T)3.0 * ((cx_ / x - sx_ / (x * x) + sx_) / (x * x) -                       \
                                            (T)2.0 * (sx_ / x - cx_) / (x * x * x));                          \
                    const T dh2 = pos * (T)2.0 * f * kr * ds3 * (T)(PI_D * PI_D) / ((T)2.0 * x);              \
                    la = dh2 * (T)2.0 * da * na * na * fudge;                                                 \
                    lb = dh2 * (T)2.0 * db * nbb * nbb * fudge;                                               \
                    lc = dh2 * (T)2.0 * dc * nc * nc * fudge;                                                 \
                    const T fs = (T)2.0 * f * round_norm * s3;                                             \
                    ln0 = fs * pa + dh2 * (T)2.0 * da * da * na * fudge;                                      \
                    ln1 = fs * pb + dh2 * (T)2.0 * db * db * nbb * fudge;                                     \
                    ln2 = fs * pc + dh2 * (T)2.0 * dc * dc * nc * fudge;                                      \
                }                                                                                             \
            } else {                                                                                          \
                vx = da * a0 + db * b0 + dc * e0;                                                             \
                vy = da * a1 + db * b1 + dc * e1;                                                             \
                vz = da * a2 + db * b2 + dc * e2;                                                             \
                const T n2 = nprod * nprod, v2 = vx * vx + vy * vy + vz * vz, rr = v2 * n2;                   \
                T f, fn, lrr = (T)0.0; /* fn: d f / d nprod at fixed rr; lrr: d lat / d rr */                 \
                if (shape == 2) {                                                                             \
                    const T ex = EXP(-(rr / gauss_width * fudge));                                         \
                    f = nprod * ex;                                                                           \
                    lrr = (T)-2.0 * f * f * fudge / gauss_width;                                           \
                    fn = ex;                                                                                  \
                } else {                                                                                      \
                    f = rr * fudge < tophat_r2 ? nprod : (T)0.0;                                           \
                    fn = rr * fudge < tophat_r2 ? (T)1.0 : (T)0.0;                                         \
                }                                                                                             \
                lat = f * f;                                                                                  \
                if (deriv) {                                                                                  \
                    lv = lrr * (T)2.0 * n2; /* d lat / d v = lv v */                                          \
                    la = lv * (vx * a0 + vy * a1 + vz * a2);                                                  \
                    lb = lv * (vx * b0 + vy * b1 + vz * b2);                                                  \
                    lc = lv * (vx * e0 + vy * e1 + vz * e2);                                                  \
                    const T fnn = (T)2.0 * f * fn, rn = lrr * v2 * (T)2.0 * nprod; /* d rr / d n_i: v2 2 nprod p_i */ \
                    ln0 = (fnn + rn) * pa;                                                                    \
                    ln1 = (fnn + rn) * pb;                                                                    \
                    ln2 = (fnn + rn) * pc;                                                                    \
                }                                                                                             \
            }                                                                                                 \
            if (!deriv) {                                                                                     \
                acc[i] += (double)(lat * f2);                                                                 \
            } else {                                                                                          \
                const T w = (T)g[i] * f2;                                                                     \
                const T wa = w * la, wb = w * lb, wc = w * lc;                                                \
                gx[i] += (double)(wa * c0 + wb * c3 + wc * c6);                                               \
                gy[i] += (double)(wa * c1 + wb * c4 + wc * c7);                                               \
                gz[i] += (double)(wa * c2 + wb * c5 + wc * c8);                                               \
                q0 += (double)(wa * sx[i]);                                                                   \
                q1 += (double)(wa * sy[i]);                                                                   \
                q2 += (double)(wa * sz[i]);                                                                   \
                q3 += (double)(wb * sx[i]);                                                                   \
                q4 += (double)(wb * sy[i]);                                                                   \
                q5 += (double)(wb * sz[i]);                                                                   \
                q6 += (double)(wc * sx[i]);                                                                   \
                q7 += (double)(wc * sy[i]);                                                                   \
                q8 += (double)(wc * sz[i]);                                                                   \
                sn0 += (double)(w * ln0);                                                                     \
                sn1 += (double)(w * ln1);                                                                     \
                sn2 += (double)(w * ln2);                                                                     \
                if (shape >= 2) { /* d lat / d row_j[k] = lv v_k d_j */                                       \
                    const T wr = w * lv;                                                                      \
                    sr0 += (double)(wr * vx * da);                                                            \
                    sr1 += (double)(wr * vy * da);                                                            \
                    sr2 += (double)(wr * vz * da);                                                            \
                    sr3 += (double)(wr * vx * db);                                                            \
                    sr4 += (double)(wr * vy * db);                                                            \
                    sr5 += (double)(wr * vz * db);                                                            \
                    sr6 += (double)(wr * vx * dc);                                                            \
                    sr7 += (double)(wr * vy * dc);                                                            \
                    sr8 += (double)(wr * vz * dc);                                                            \
                }                                                                                             \
                tv[i] = (double)((T)g[i] * lat * (T)2.0 * ff);                                                \
                ti[i] = at;                                                                                   \
            }                                                                                                 \
        }                                                                                                     \
        if (deriv) {                                                                                          \
            q[0] += q0, q[1] += q1, q[2] += q2, q[3] += q3, q[4] += q4, q[5] += q5, q[6] += q6, q[7] += q7;  \
            q[8] += q8;                                                                                       \
            sn[0] += sn0, sn[1] += sn1, sn[2] += sn2;                                                         \
            sr[0] += sr0, sr[1] += sr1, sr[2] += sr2, sr[3] += sr3, sr[4] += sr4, sr[5] += sr5;               \
            sr[6] += sr6, sr[7] += sr7, sr[8] += sr8;                                                         \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* one block of points: the forward sum (out) or, with g, the vector-Jacobian product */                  \
    static void NAME##_block(const int64_t *ip, const consts_##T *k, const T *restrict sx, const T *restrict sy, \
                             const T *restrict sz, const T *restrict cells, const T *restrict table,          \
                             const double *restrict g, double *restrict out, double *restrict gs,             \
                             double *restrict gcell, double *restrict gpar, double *restrict gtab, int nb,    \
                             int64_t stride) {                                                                \
        const int shape = (int)ip[2];                                                                         \
        const int want_gs = gs != 0 && ip[7] != 0, want_tab = gtab != 0 && ip[8] != 0 && k->tab;              \
        double acc[BLOCK], gx[BLOCK], gy[BLOCK], gz[BLOCK], tv[BLOCK];                                        \
        int64_t ti[BLOCK];                                                                                    \
        for (int i = 0; i < nb; i++) acc[i] = gx[i] = gy[i] = gz[i] = 0.0;                                    \
        for (int64_t o = 0; o < ip[1]; o++) {                                                                 \
            const T *c = cells + 9 * o;                                                                       \
            double *q = g ? gcell + 9 * o : 0;                                                                \
            double *sn = gpar, *sr = gpar ? gpar + 3 : 0;                                                     \
            if (!g) {                                                                                         \
                SHAPE_SWITCH(NAME, 0)                                                                         \
                continue;                                                                                     \
            }                                                                                                 \
            SHAPE_SWITCH(NAME, 1)                                                                             \
            if (want_tab)                                                                                     \
                for (int i = 0; i < nb; i++) gtab[ti[i]] += tv[i];                                            \
        }                                                                                                     \
        if (!g) {                                                                                             \
            for (int i = 0; i < nb; i++) out[i] = acc[i];                                                     \
            return;                                                                                           \
        }                                                                                                     \
        if (want_gs)                                                                                          \
            for (int i = 0; i < nb; i++) {                                                                    \
                gs[i] = gx[i];                                                                                \
                gs[stride + i] = gy[i];                                                                       \
                gs[2 * stride + i] = gz[i];                                                                   \
            }                                                                                                 \
    }                                                                                                         \
                                                                                                              \
    /* the sums of points 0 .. P (ip[0]) of s (rows sx, sy, sz) into out (P,) */                             \
    void NAME##_sum(const int64_t *ip, const double *dp, const T *sx, const T *sy, const T *sz, const T *cells, \
                    const T *table, double *out) {                                                            \
        consts_##T k;                                                                                         \
        consts_##T##_read(&k, ip, dp);                                                                        \
        for (int64_t p0 = 0; p0 < ip[0]; p0 += BLOCK) {                                                       \
            const int nb = (int)(ip[0] - p0 < BLOCK ? ip[0] - p0 : BLOCK);                                    \
            NAME##_block(ip, &k, sx + p0, sy + p0, sz + p0, cells, table, 0, out + p0, 0, 0, 0, 0, nb, 0);    \
        }                                                                                                     \
    }                                                                                                         \
                                                                                                              \
    /* the vector-Jacobian product of points 0 .. P against g (P,): gs (3 rows of stride `stride`) written;   \
     * gcell (O x 9), gpar (12) and gtab (the padded table) added to */                                     \
    void NAME##_vjp(const int64_t *ip, const double *dp, const T *sx, const T *sy, const T *sz, const T *cells, \
                    const T *table, const double *g, double *gs, int64_t stride, double *gcell, double *gpar, \
                    double *gtab) {                                                                           \
        consts_##T k;                                                                                         \
        consts_##T##_read(&k, ip, dp);                                                                        \
        for (int64_t p0 = 0; p0 < ip[0]; p0 += BLOCK) {                                                       \
            const int nb = (int)(ip[0] - p0 < BLOCK ? ip[0] - p0 : BLOCK);                                    \
            NAME##_block(ip, &k, sx + p0, sy + p0, sz + p0, cells, table, g + p0, 0, gs ? gs + p0 : 0, gcell, \
                         gpar, gtab, nb, stride);                                                             \
        }                                                                                                     \
    }

DEFINE_MODEL(model_f64, double, sin, exp, sqrt, ceil)
DEFINE_MODEL(model_f32, float, sinf, expf, sqrtf, ceilf)
