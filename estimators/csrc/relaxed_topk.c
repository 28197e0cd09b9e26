/* Fused CPU kernel for relaxed top-k (Xie & Ermon 2019): the same log-space steps and the same
 * hand-derived backward as estimators/relaxed_topk.py, one row at a time, so that a row of n
 * keys stays in cache for all k steps instead of making k round trips through memory.
 *
 * Built at run time by estimators/native.py and called through ctypes; each call handles the
 * rows [row_lo, row_hi), and the caller splits rows across threads. Plain C99 with no
 * dependency but libm. On x86-64 glibc the exp/log1p calls in the row loops are vectorised
 * through libmvec (declared below; glibc itself only declares them under -ffast-math, which
 * we do not use because the kernel relies on IEEE infinities).
 */
#include <math.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

#if defined(ESTIBENCH_LIBMVEC) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__FAST_MATH__)
__attribute__((simd("notinbranch"))) float expf(float);
__attribute__((simd("notinbranch"))) float logf(float);
__attribute__((simd("notinbranch"))) float log1pf(float);
__attribute__((simd("notinbranch"))) double exp(double);
__attribute__((simd("notinbranch"))) double log(double);
__attribute__((simd("notinbranch"))) double log1p(double);
#endif

/* log(1 − a) for 0 <= a <= 1/2, float: 2 atanh(s) with s = −a/(2 − a) in [−1/3, 0], by its
 * series to s^15 (truncation below 2^-26 relative; measured error at most 3.5 ulp). Two to
 * three times faster than a vectorised log1pf, and log(1 − α) of every item but the top is the
 * kernel's most frequent operation. Double precision uses log1p. */
static inline float log1m_f32(float a) {
    const float s = -a / (2.0f - a), z = s * s;
    float p = 1.0f / 15;
    p = p * z + 1.0f / 13;
    p = p * z + 1.0f / 11;
    p = p * z + 1.0f / 9;
    p = p * z + 1.0f / 7;
    p = p * z + 1.0f / 5;
    p = p * z + 1.0f / 3;
    p = p * z + 1.0f;
    return 2.0f * s * p;
}

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

#define REAL float
#define SFX f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#define LOG1M(a) log1m_f32(a)
#define TINY FLT_MIN
#include "relaxed_topk_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef LOG
#undef LOG1P
#undef LOG1M
#undef TINY

#define REAL double
#define SFX f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#define LOG1M(a) log1p(-(a))
#define TINY DBL_MIN
#include "relaxed_topk_impl.h"

/* The caller checks this against the version it was written for. */
int64_t estibench_relaxed_topk_abi(void) { return 4; }
