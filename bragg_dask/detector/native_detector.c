/* The detector's point-spread function on CPU: valid-mode correlation with a symmetric kernel.
 *
 * psf.py's _correlate as plain C.  The kernel is given by its quadrant q[dy][dx] (0 <= dy, dx <= r):
 * both PSFs, and the circle they are cut to, are symmetric under dx -> -dx and dy -> -dy.  Each output
 * pixel is a gather over its window in a fixed order (dy = 0..r, then dx = 0..r; the (up to) four
 * mirrored source pixels of one kernel entry added first, then multiplied by it once), so a pixel's
 * value depends only on the pixels around it: any tiling, any split into rows, the same bits.  Zero
 * entries (outside the circle) are skipped.  The loop over an output row is a plain loop over
 * contiguous values, for the auto-vectoriser.  Built by native.py with -ffp-contract=off (no implicit
 * fused multiply-adds).
 *
 * psf_correlate(ip, src, q, out): ip[0] h, ip[1] w (the source window, row-major, doubles),
 * ip[2] r, ip[3] y0, ip[4] y1 (the output rows computed here); q (r+1) x (r+1) doubles;
 * out (h - 2r) x (w - 2r) doubles, rows y0 .. y1 - 1 written.  psf_adu16: the same values turned into
 * 16-bit ADU on the way out (the noiseless or the noise image of a row of tiles, no float image kept).
 *
 * Also the counter-based uniforms and the small-mean Poisson sampler of noise.py, integer for integer
 * and double for double (no maths library: hashing, one multiplication and one comparison per draw).
 */
#include <stdint.h>

#define XBLOCK 512 /* output columns per block */

/* one block of output row y, columns x0 .. x0 + n - 1, into o: the gather described above */
static void gather_block(const double *src, int64_t w, int64_t r, const double *q, int64_t y, int64_t x0,
                         int64_t n, double *o) {
    for (int64_t x = 0; x < n; x++) o[x] = 0.0;
    for (int64_t dy = 0; dy <= r; dy++) {
        const double *a = src + (y + r - dy) * w + r + x0; /* row above the centre */
        const double *b = src + (y + r + dy) * w + r + x0; /* row below */
        for (int64_t dx = 0; dx <= r; dx++) {
            const double k = q[dy * (r + 1) + dx];
            if (k == 0.0) continue;
            if (dy == 0 && dx == 0) {
                for (int64_t x = 0; x < n; x++) o[x] += k * a[x];
            } else if (dy == 0) {
                for (int64_t x = 0; x < n; x++) o[x] += k * (a[x - dx] + a[x + dx]);
            } else if (dx == 0) {
                for (int64_t x = 0; x < n; x++) o[x] += k * (a[x] + b[x]);
            } else {
                for (int64_t x = 0; x < n; x++) o[x] += k * ((a[x - dx] + a[x + dx]) + (b[x - dx] + b[x + dx]));
            }
        }
    }
}

void psf_correlate(const int64_t *ip, const double *src, const double *q, double *out) {
    const int64_t w = ip[1], r = ip[2], y0 = ip[3], y1 = ip[4];
    const int64_t ow = w - 2 * r;
    for (int64_t y = y0; y < y1; y++)
        for (int64_t x0 = 0; x0 < ow; x0 += XBLOCK) /* a block of the row: its sources stay in L1 */
            gather_block(src, w, r, q, y, x0, ow - x0 < XBLOCK ? ow - x0 : XBLOCK, out + y * ow + x0);
}

/* the ADU conversion (adu.py's to_adu, 16 bits): a = v * gain, a += adc, counted as an overload above
   65535, clipped to [0, 65535] and truncated (NaN: 0) */
static inline uint16_t adu_value(double v, double gain, double adc, int64_t *over) {
    double a = v * gain;
    a += adc;
    *over += a > 65535.0;
    a = a < 0.0 ? 0.0 : (a > 65535.0 ? 65535.0 : a);
    return a == a ? (uint16_t)a : 0;
}

/* psf_correlate's value v of each pixel, then its ADU as adu.py makes them: a = (v + add) * gain,
   a += adc, counted as an overload above 65535, clipped to [0, 65535] and truncated to 16 bits (NaN: 0).
   dp: add, gain, adc.  out (h - 2r) x (w - 2r) uint16, rows y0 .. y1 - 1; *overloads: their count. */
void psf_adu16(const int64_t *ip, const double *dp, const double *src, const double *q, uint16_t *out,
               int64_t *overloads) {
    const int64_t w = ip[1], r = ip[2], y0 = ip[3], y1 = ip[4];
    const int64_t ow = w - 2 * r;
    const double add = dp[0], gain = dp[1], adc = dp[2];
    double o[XBLOCK];
    int64_t over = 0;
    for (int64_t y = y0; y < y1; y++) {
        for (int64_t x0 = 0; x0 < ow; x0 += XBLOCK) {
            const int64_t n = ow - x0 < XBLOCK ? ow - x0 : XBLOCK;
            gather_block(src, w, r, q, y, x0, n, o);
            uint16_t *u = out + y * ow + x0;
            for (int64_t x = 0; x < n; x++)
                u[x] = adu_value(o[x] + add, gain, adc, &over);
        }
    }
    *overloads = over;
}

/* adu.adu_noiseless's 16-bit ADU of n values x (no PSF): a = x * gain, a += adc, clipped to
   [0, 65535] and truncated (NaN: 0) */
void adu16(int64_t n, const double *dp, const double *x, uint16_t *out) {
    const double gain = dp[0], adc = dp[1];
    int64_t over = 0;
    for (int64_t i = 0; i < n; i++)
        out[i] = adu_value(x[i], gain, adc, &over);
}

/* ---- counter-based random numbers (noise.py): the same integers and the same doubles ---------- */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline double uniform(uint64_t key, uint64_t index, uint64_t draw) {
    uint64_t x = mix64(mix64((index * 0x100000000ULL + draw) * 0x9E3779B97F4A7C15ULL) ^ key);
    return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* noise.uniforms: out[i] = uniform of (key, index[i], draw), key = mix64(seed) (given) */
void counter_uniforms(int64_t n, uint64_t key, const int64_t *index, uint64_t draw, double *out) {
    for (int64_t i = 0; i < n; i++) out[i] = uniform(key, (uint64_t)index[i], draw);
}

/* noise._poisson_small: uniforms (draws 0, 1, ...) multiplied until the product falls to g[i] =
   exp(-mean) or below; out[i] = the number multiplied, minus one.  LANES pixels at a time, each lane
   doing exactly the scalar loop's operations (a lane that has stopped keeps its values), so that the
   compiler can run the lanes in SIMD registers: the same numbers as one pixel at a time. */
#define LANES 8
void poisson_small(int64_t n, uint64_t key, const int64_t *index, const double *g, int64_t *out) {
    for (int64_t i0 = 0; i0 < n; i0 += LANES) {
        const int64_t m = n - i0 < LANES ? n - i0 : LANES;
        uint64_t ix[LANES];
        double t[LANES], gl[LANES];
        int64_t k[LANES], run[LANES];
        for (int j = 0; j < LANES; j++) {
            const int live = j < m;
            ix[j] = live ? (uint64_t)index[i0 + j] : 0;
            gl[j] = live ? g[i0 + j] : 2.0; /* a lane past the end stops at once */
            t[j] = 1.0;
            k[j] = -1;
            run[j] = 1;
        }
        int64_t running = m;
        for (uint64_t draw = 0; running > 0; draw++) {
            running = 0;
            for (int j = 0; j < LANES; j++) {
                const double tn = t[j] * uniform(key, ix[j], draw);
                t[j] = run[j] ? tn : t[j];
                k[j] += run[j];
                run[j] = run[j] & (tn > gl[j]);
                running += run[j];
            }
        }
        for (int64_t j = 0; j < m; j++) out[i0 + j] = k[j];
    }
}

/* the version of this file's interface: native.py refuses a library that reports another */
int detector_abi(void) { return 4; }
