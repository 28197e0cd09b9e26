/* One precision of the relaxed top-k kernel; included by relaxed_topk.c with REAL = float
 * and REAL = double. Notation as in estimators/relaxed_topk.py: keys r, x = r / τ, step j:
 * α = softmax(x), total += α and, except after the last step, x += log(1 − α) / τ.
 *
 * log(1 − α_i) is log1p(−α_i) for every item but the row's largest when its α exceeds 1/2
 * (the "top"); for the top it is log Σ_{i≠top} α_i, and a log-sum-exp of the others' log α
 * when that sum is near the underflow threshold.
 *
 * Cost per item and step: one exp (the softmax, whose normaliser is summed in the same pass)
 * and one log(1 − α) (the update, in one pass with α and the next maximum) forward; the
 * backward reuses the recomputed α and needs neither. EXPNEG and LOG1M are the kernel's own
 * (relaxed_topk.c); EXP and LOG, libm's, are called only outside the row loops. */

#define F(name) CAT(name, SFX)

/* The softmax of a row in two parts: e = exp(x − m), m = max x, and what follows from it. */
typedef struct {
    REAL m;      /* max x */
    REAL lse;    /* log Σ exp(x) */
    REAL inv_s;  /* 1 / Σ e, so that α = e · inv_s */
    REAL rest;   /* Σ α over the items below the max: 1 − α_max without cancellation */
    int has_top; /* α_max > 1/2, i.e. Σ e < 2 (e_max = exp(0) = 1; a tie makes Σ e ≥ 2) */
} F(softmax_t);

static F(softmax_t) F(softmax)(const REAL *restrict x, REAL *restrict e, int64_t n, REAL m) {
    F(softmax_t) out;
    REAL s = 0, low = 0;
#pragma omp simd reduction(+ : s, low)
    for (int64_t i = 0; i < n; i++) {
        REAL v = EXPNEG(x[i] - m);
        e[i] = v;
        s += v;
        low += x[i] < m ? v : (REAL)0;
    }
    out.m = m;
    out.lse = m + LOG(s);
    out.inv_s = 1 / s;
    out.rest = low / s;
    out.has_top = s < 2;
    return out;
}

static REAL F(row_max)(const REAL *restrict x, int64_t n) {
    REAL m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* What the backward of a step needs besides its α. */
typedef struct {
    int64_t top;   /* the item whose log(1 − α) is log Σ_{i≠top} α_i, or −1 */
    REAL log_rest; /* that log(1 − α_top) */
    int is_log;    /* the step's row holds log α instead of α (others' α near underflow) */
} F(record_t);

/* One step on the row x with softmax *sm.
 *   alpha: on entry e (from the softmax), on exit α; or log α when the record says so.
 *   total: if not NULL, total += α.
 *   update: another step follows (x moves); if rec is not NULL, fill it.
 *   advance: move x to x + log(1 − α)/τ and write its softmax to next_e and *sm (which may
 *   be alpha: it is written after alpha is read). Without advance, x is left as it was. */
static void F(step)(REAL *restrict x, int64_t n, F(softmax_t) *sm, REAL invtau,
                    REAL *restrict total, REAL *alpha, REAL *next_e, int update, int advance,
                    F(record_t) *rec) {
    const REAL inv_s = sm->inv_s, lse = sm->lse, m = sm->m;
    if (rec) {
        rec->top = -1;
        rec->log_rest = 0;
        rec->is_log = 0;
    }
    const int has_top = update && sm->has_top;
    const int tiny = has_top && !(sm->rest >= TINY * (REAL)1048576.0);
    REAL lr = 0;
    if (has_top && !tiny) {
        lr = LOG(sm->rest);
    } else if (tiny) { /* every other α is near or below underflow: log-sum-exp of their log α */
        REAL m2 = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            if (x[i] < m && x[i] > m2) m2 = x[i];
        REAL s = 0;
        for (int64_t i = 0; i < n; i++)
            if (x[i] < m) s += EXPNEG(x[i] - m2);
        lr = m2 + LOG(s) - lse;
    }
    const REAL topv = has_top ? m : (REAL)NAN; /* x == topv marks the top; NaN marks none */
    int64_t t = -1;
    REAL next_m = -INFINITY;
    if (tiny) { /* rare: keep log α for the backward, whose α/(1 − α_top) needs it */
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i] * inv_s;
            if (total) total[i] += ai;
            if (x[i] == topv) t = i;
            alpha[i] = rec ? x[i] - lse : ai;
            if (advance) {
                x[i] += (x[i] == topv ? lr : LOG1M(ai)) * invtau;
                next_m = x[i] > next_m ? x[i] : next_m;
            }
        }
        if (rec) rec->is_log = 1;
    } else if (advance && total) {
#pragma omp simd reduction(max : next_m)
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i] * inv_s;
            alpha[i] = ai;
            total[i] += ai;
            REAL xi = x[i] + (x[i] == topv ? lr : LOG1M(ai)) * invtau;
            x[i] = xi;
            next_m = xi > next_m ? xi : next_m;
        }
    } else if (advance) {
#pragma omp simd reduction(max : next_m, t)
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i] * inv_s;
            alpha[i] = ai;
            t = x[i] == topv ? i : t;
            REAL xi = x[i] + (x[i] == topv ? lr : LOG1M(ai)) * invtau;
            x[i] = xi;
            next_m = xi > next_m ? xi : next_m;
        }
    } else {
#pragma omp simd reduction(max : t)
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i] * inv_s;
            alpha[i] = ai;
            t = x[i] == topv ? i : t;
            if (total) total[i] += ai;
        }
    }
    if (rec && has_top) {
        rec->top = t;
        rec->log_rest = lr;
    }
    if (advance) *sm = F(softmax)(x, next_e, n, next_m);
}

/* Forward over rows [row_lo, row_hi) of keys [rows, n]: total [rows, n] = Σ_j α^j.
 * If ckpt is not NULL it receives, for row r and segment c = 1 .. nseg − 1, the row x at the
 * start of step c·segment ([rows, nseg − 1, n]); segment 0 starts from the keys themselves.
 * scratch: 2n. */
void F(estibench_relaxed_topk_forward)(const REAL *keys, REAL *total, REAL *ckpt,
                                       int64_t row_lo, int64_t row_hi, int64_t n, int64_t k,
                                       double tau, int64_t segment, REAL *scratch) {
    const REAL invtau = (REAL)(1.0 / tau);
    const int64_t nseg = (k + segment - 1) / segment;
    REAL *x = scratch, *a = scratch + n;
    for (int64_t r = row_lo; r < row_hi; r++) {
        const REAL *key = keys + r * n;
        REAL *tot = total + r * n;
        for (int64_t i = 0; i < n; i++) {
            x[i] = key[i] * invtau;
            tot[i] = 0;
        }
        F(softmax_t) sm = F(softmax)(x, a, n, F(row_max)(x, n));
        for (int64_t j = 0; j < k; j++) {
            if (ckpt && j > 0 && j % segment == 0)
                memcpy(ckpt + (r * (nseg - 1) + j / segment - 1) * n, x, n * sizeof(REAL));
            F(step)(x, n, &sm, invtau, tot, a, a, j < k - 1, j < k - 1, NULL);
        }
    }
}

/* Backward of one step, in place on u: on entry ∂L/∂r after the step (ignored for the last
 * step, update = 0, which nothing follows), on exit ∂L/∂r before it. g = ∂L/∂total. With
 * β_i = α_i/(1 − α_i) and W = Σ_{i≠top} u_i β_i (every β bounded: α ≤ 1/2 off the top):
 *   v_l = u_l + (α_l (g_l − ⟨α, g⟩) + U_l) / τ,
 *   U_l = α_l W − u_l β_l + u_top α_top · α_l/(1 − α_top)   (l ≠ top; last term 0 without a top)
 *   U_top = α_top (W − u_top)
 * and α_l/(1 − α_top) = exp(log α_l − log(1 − α_top)) ∈ [0, 1]. No update part after the
 * last step. row: the step's α (or log α, rec->is_log); spare, beta: scratch rows (spare
 * receives α when the row holds log α). */
static void F(backward_step)(const REAL *restrict row, const F(record_t) *rec, int update,
                             const REAL *restrict g, REAL *restrict u, REAL *restrict spare,
                             REAL *restrict beta, int64_t n, REAL invtau) {
    const REAL *alpha = row;
    if (rec->is_log) {
        for (int64_t i = 0; i < n; i++) spare[i] = EXPNEG(row[i]);
        alpha = spare;
    }
    REAL dot = 0, w = 0;
    const int64_t top = rec->top;
    if (update) {
#pragma omp simd reduction(+ : dot, w)
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i];
            REAL bi = ai / (1 - ai);
            beta[i] = bi;
            dot += ai * g[i];
            w += i == top ? (REAL)0 : u[i] * bi;
        }
    } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < n; i++) dot += alpha[i] * g[i];
#pragma omp simd
        for (int64_t i = 0; i < n; i++) u[i] = alpha[i] * (g[i] - dot) * invtau;
        return;
    }
    if (top < 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i];
            u[i] += (ai * (g[i] - dot) + ai * w - u[i] * beta[i]) * invtau;
        }
        return;
    }
    const REAL a_top = alpha[top], u_top = u[top];
    const REAL c = u_top * a_top;
    const REAL v_top = u_top + (a_top * (g[top] - dot) + a_top * (w - u_top)) * invtau;
    if (!rec->is_log) { /* 1 − α_top is not near underflow: α_l/(1 − α_top) is a product */
        const REAL inv_rest = EXP(-rec->log_rest);
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i];
            REAL ratio = ai * inv_rest;
            ratio = ratio < 1 ? ratio : 1;
            u[i] += (ai * (g[i] - dot) + ai * w - u[i] * beta[i] + c * ratio) * invtau;
        }
    } else {
        const REAL log_rest = rec->log_rest;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            REAL ai = alpha[i];
            REAL ratio = EXPNEG(row[i] - log_rest);
            ratio = ratio < 1 ? ratio : 1;
            u[i] += (ai * (g[i] - dot) + ai * w - u[i] * beta[i] + c * ratio) * invtau;
        }
    }
    u[top] = v_top;
}

/* Backward over rows [row_lo, row_hi): grad_keys = ∂L/∂keys given grad_total = ∂L/∂total.
 * Recomputes one segment of steps at a time from the keys (segment 0) or the checkpoints of
 * the forward, keeping each step's α. scratch: (segment + 2) n reals; records: space for
 * `segment` records, as bytes (estibench_relaxed_topk_record_bytes). */
void F(estibench_relaxed_topk_backward)(const REAL *keys, const REAL *ckpt,
                                        const REAL *grad_total, REAL *grad_keys,
                                        int64_t row_lo, int64_t row_hi, int64_t n, int64_t k,
                                        double tau, int64_t segment, REAL *scratch,
                                        void *records) {
    const REAL invtau = (REAL)(1.0 / tau);
    const int64_t nseg = (k + segment - 1) / segment;
    REAL *x = scratch, *a = scratch + n, *rows = scratch + 2 * n;
    F(record_t) *recs = (F(record_t) *)records;
    for (int64_t r = row_lo; r < row_hi; r++) {
        const REAL *g = grad_total + r * n;
        REAL *u = grad_keys + r * n;
        for (int64_t c = nseg - 1; c >= 0; c--) {
            const int64_t start = c * segment, end = start + segment < k ? start + segment : k;
            if (c == 0) {
                const REAL *key = keys + r * n;
                for (int64_t i = 0; i < n; i++) x[i] = key[i] * invtau;
            } else {
                memcpy(x, ckpt + (r * (nseg - 1) + c - 1) * n, n * sizeof(REAL));
            }
            F(softmax_t) sm = F(softmax)(x, rows, n, F(row_max)(x, n));
            for (int64_t j = start; j < end; j++) { /* the segment's last x is not needed */
                REAL *row = rows + (j - start) * n;
                F(step)(x, n, &sm, invtau, NULL, row, row + n, j < k - 1, j < end - 1,
                        recs + (j - start));
            }
            for (int64_t j = end - 1; j >= start; j--)
                F(backward_step)(rows + (j - start) * n, recs + (j - start), j < k - 1, g, u,
                                 x, a, n, invtau);
        }
    }
}

int64_t F(estibench_relaxed_topk_record_bytes)(void) { return (int64_t)sizeof(F(record_t)); }

#undef F
