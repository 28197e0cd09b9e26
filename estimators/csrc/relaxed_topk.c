/* Fused CPU kernel for relaxed top-k (Xie & Ermon 2019): the same log-space steps and the same
 * hand-derived backward as estimators/relaxed_topk.py, one row at a time, so that a row of n
 * keys stays in cache for all k steps instead of making k round trips through memory.
 *
 * Built at run time by estimators/native.py and called through ctypes; each call handles the
 * rows [row_lo, row_hi), and the caller splits rows across threads. Plain C99 with no
 * dependency but libm.
 *
 * The row loops call no library function: exp and log(1 − a) are the inline functions below,
 * which the compiler vectorises. Built with -ffp-contract=off (fused multiply-adds only where
 * written, MADD), the vectorised body of a loop and its scalar remainder do the same correctly
 * rounded operations, so equal keys give equal results wherever they sit in the row (a vector
 * libm and the scalar libm round differently, and at small τ that alone splits a tie).
 */
#include <math.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

/* a·b + c: one fused, correctly rounded operation where the CPU has it (then the vector and
 * scalar forms are the same instruction), else a product and a sum. */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define MADDF(a, b, c) __builtin_fmaf((a), (b), (c))
#define MADD(a, b, c) __builtin_fma((a), (b), (c))
#else
#define MADDF(a, b, c) ((a) * (b) + (c))
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* exp(x) for x <= 0 (larger x are taken as 0), and 0 below the normal range, by
 * exp(x) = 2^n exp(r), n = round(x / ln 2), r = x − n ln 2 split in two parts (Cody & Waite),
 * |r| <= ln 2 / 2, and exp(r) by its Taylor series (float to r^7, double to r^13: truncation
 * below 2^-27 and 2^-57 relative). */
static inline float expneg_f32(float x) {
    const int under = x < -87.3f; /* exp(−87.3) is just above FLT_MIN */
    x = x < -87.3f ? -87.3f : (x > 0 ? 0.0f : x);
    const float n = roundf(x * 1.44269504088896341f);
    float r = MADDF(-n, 0.693145751953125f, x);
    r = MADDF(-n, 1.42860676533018704e-06f, r);
    float p = 1.0f / 5040;
    p = MADDF(p, r, 1.0f / 720);
    p = MADDF(p, r, 1.0f / 120);
    p = MADDF(p, r, 1.0f / 24);
    p = MADDF(p, r, 1.0f / 6);
    p = MADDF(p, r, 0.5f);
    p = MADDF(p, r, 1.0f);
    p = MADDF(p, r, 1.0f);
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return under ? 0.0f : p * scale;
}

static inline double expneg_f64(double x) {
    const int under = x < -708.3; /* exp(−708.3) is just above DBL_MIN */
    x = x < -708.3 ? -708.3 : (x > 0 ? 0.0 : x);
    const double n = round(x * 1.44269504088896338700e+00);
    double r = MADD(-n, 6.93147180369123816490e-01, x);
    r = MADD(-n, 1.90821492927058770002e-10, r);
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = MADD(p, r, 1.0 / 479001600.0);
    p = MADD(p, r, 1.0 / 39916800.0);
    p = MADD(p, r, 1.0 / 3628800.0);
    p = MADD(p, r, 1.0 / 362880.0);
    p = MADD(p, r, 1.0 / 40320.0);
    p = MADD(p, r, 1.0 / 5040.0);
    p = MADD(p, r, 1.0 / 720.0);
    p = MADD(p, r, 1.0 / 120.0);
    p = MADD(p, r, 1.0 / 24.0);
    p = MADD(p, r, 1.0 / 6.0);
    p = MADD(p, r, 0.5);
    p = MADD(p, r, 1.0);
    p = MADD(p, r, 1.0);
    const int64_t bits = ((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return under ? 0.0 : p * scale;
}

/* log(1 − a) for 0 <= a <= 1/2: 2 atanh(s) with s = −a/(2 − a) in [−1/3, 0], by its series
 * (float to s^15, double to s^33: truncation below 2^-26 and 2^-55 relative). log(1 − α) of
 * every item but the top is the kernel's most frequent operation. */
static inline float log1m_f32(float a) {
    const float s = -a / (2.0f - a), z = s * s;
    float p = 1.0f / 15;
    p = MADDF(p, z, 1.0f / 13);
    p = MADDF(p, z, 1.0f / 11);
    p = MADDF(p, z, 1.0f / 9);
    p = MADDF(p, z, 1.0f / 7);
    p = MADDF(p, z, 1.0f / 5);
    p = MADDF(p, z, 1.0f / 3);
    p = MADDF(p, z, 1.0f);
    return 2.0f * s * p;
}

static inline double log1m_f64(double a) {
    const double s = -a / (2.0 - a), z = s * s;
    double p = 1.0 / 33;
    for (int j = 15; j >= 0; j--) p = MADD(p, z, 1.0 / (2 * j + 1));
    return 2.0 * s * p;
}

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

#define REAL float
#define SFX f32
#define EXP expf
#define LOG logf
#define EXPNEG expneg_f32
#define LOG1M log1m_f32
#define TINY FLT_MIN
#include "relaxed_topk_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef EXPNEG
#undef LOG1M
#undef TINY

#define REAL double
#define SFX f64
#define EXP exp
#define LOG log
#define EXPNEG expneg_f64
#define LOG1M log1m_f64
#define TINY DBL_MIN
#include "relaxed_topk_impl.h"

/* The caller checks this against the version it was written for. */
int64_t estibench_relaxed_topk_abi(void) { return 5; }
