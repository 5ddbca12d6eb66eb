/* A frame's reflection table on CPU: each pixel's reflection, and what it adds to it; and a tile's exact sums.
 *
 * reflections.py's _fractional and _PixelIndex.find (the dense table) and the sums of spot_photons as plain
 * C, operation for operation (built by native.py with -ffp-contract=off: no fused multiply-adds), so that
 * the table is the same, bit for bit, with or without this library.
 *
 * label_index(g, ip, image, table, idx, photons, peak, has): each pixel's reflection (idx: int32, -1 none)
 *   and the band's photons per reflection (the caller's zeros, added to its total after: the sum in pixel
 *   order, as numpy's bincount), the brightest pixel of each (updated) and which have a pixel (set to 1).
 *   g: doubles: [0] p.p, [1] p.s, [2] p.f, [3] f.s, [4] lam, [5] px, [6..8] p.a_k, [9..11] s.a_k,
 *      [12..14] f.a_k, [15..17] s0.a_k (a_k: the cell's rows a, b, c), [18..20] the table's lowest index
 *      (a border of "none" below it), [21..23] its highest (shape - 1);
 *   ip: int64: [0] a (the band's first row), [1] z (past its last), [2] width, [3..4] the table's strides
 *      of h and k (l's is 1); image: (z - a) x width floats; table: int32 (-1: no reflection).
 * label_centroid(ip, image, idx, peak, floor, w, wf, ws): over the band's pixels at or above floor times
 *   their reflection's brightest, in pixel order: w += v, wf += v * (col + 0.5), ws += v * (row + 0.5).
 * exact_bins(v, n, bins): sums.py's bins of n float32 values, as integers: for each value m * 2^(e - 150)
 *   (m its signed 24-bit mantissa, e its biased exponent, at least 1), bins[e] += m, bins[256 + e] +=
 *   m * m >> 24 and bins[512 + e] += m * m & 0xFFFFFF (int64, the caller's zeros; any order: integers).
 *   Returns 1 where a value is not finite (the bins then unfinished), else 0.
 */
#include <math.h>
#include <stdint.h>

int64_t labels_abi(void) { return 3; }

/* columns c0 .. c0 + n - 1 of one row: their places in the table (every value hoisted out of the loop and
 * no branch but the clamps, for the auto-vectoriser; a zero f.s term added is the numpy path's skipped one) */
static void row_index(const double *g, double r, int64_t c0, int64_t n, double s0, double s1, double *restrict flat) {
    const double pf = g[2], fs2r = 2.0 * g[3] * r, lam = g[4], px = g[5];
    const double rowterm = g[0] + 2.0 * r * g[1] + r * r;
    const double ra = g[6] + r * g[9], rb = g[7] + r * g[10], rc = g[8] + r * g[11];
    const double fa = g[12], fb = g[13], fc = g[14], sa = g[15], sb = g[16], sc = g[17];
    const double la = g[18], lb = g[19], lc = g[20], ha = g[21], hb = g[22], hc = g[23];
    for (int64_t j = 0; j < n; j++) {
        const double c = ((double)(c0 + j) + 0.5) * px;
        double norm2 = rowterm + (2.0 * c * pf + c * c);
        norm2 += fs2r * c;
        const double inv = 1.0 / (sqrt(norm2) * lam);
        double xa = nearbyint((ra + c * fa) * inv - sa) - la;
        double xb = nearbyint((rb + c * fb) * inv - sb) - lb;
        double xc = nearbyint((rc + c * fc) * inv - sc) - lc;
        xa = xa < 0.0 ? 0.0 : (xa > ha ? ha : xa);
        xb = xb < 0.0 ? 0.0 : (xb > hb ? hb : xb);
        xc = xc < 0.0 ? 0.0 : (xc > hc ? hc : xc);
        flat[j] = (0.0 + xa * s0 + xb * s1) + xc;
    }
}

void label_index(const double *g, const int64_t *ip, const float *image, const int32_t *table, int32_t *idx,
                 double *photons, double *peak, uint8_t *has) {
    const int64_t a = ip[0], z = ip[1], width = ip[2];
    double flat[1024];
    for (int64_t row = a; row < z; row++) {
        const double r = ((double)row + 0.5) * g[5];
        const float *line = image + (row - a) * width;
        int32_t *out = idx + (row - a) * width;
        for (int64_t c0 = 0; c0 < width; c0 += 1024) {
            const int64_t n = width - c0 < 1024 ? width - c0 : 1024;
            row_index(g, r, c0, n, (double)ip[3], (double)ip[4], flat);
            for (int64_t j = 0; j < n; j++) {
                const int32_t i = table[(int64_t)flat[j]];
                out[c0 + j] = i;
                if (i < 0) continue;
                const double v = (double)line[c0 + j];
                photons[i] += v;
                has[i] = 1;
                if (v > peak[i]) peak[i] = v;
            }
        }
    }
}

void label_centroid(const int64_t *ip, const float *image, const int32_t *idx, const double *peak, double floor_,
                    double *w, double *wf, double *ws) {
    const int64_t a = ip[0], z = ip[1], width = ip[2];
    for (int64_t row = a; row < z; row++) {
        const double ss = (double)(row - a) + ((double)a + 0.5);
        for (int64_t col = 0; col < width; col++) {
            const int64_t at = (row - a) * width + col;
            const int32_t i = idx[at];
            if (i < 0) continue;
            const double v = (double)image[at];
            if (!(v >= floor_ * peak[i])) continue;
            w[i] += v;
            wf[i] += v * ((double)col + 0.5);
            ws[i] += v * ss;
        }
    }
}

int64_t exact_bins(const uint32_t *v, int64_t n, int64_t *restrict bins) {
    for (int64_t i = 0; i < n; i++) {
        const uint32_t bits = v[i];
        const uint32_t e = (bits >> 23) & 0xFFu;
        if (e == 0xFFu) return 1;
        const int64_t m = (int64_t)((bits & 0x7FFFFFu) | (e ? 0x800000u : 0u));
        const int64_t eb = e ? (int64_t)e : 1;
        const uint64_t sq = (uint64_t)(m * m);
        bins[eb] += (bits >> 31) ? -m : m;
        bins[256 + eb] += (int64_t)(sq >> 24);
        bins[512 + eb] += (int64_t)(sq & 0xFFFFFFu);
    }
    return 0;
}
