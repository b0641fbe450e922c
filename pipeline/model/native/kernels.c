/* The training step and the feature gather in one call each (pipeline/model/native/__init__.py).
 *
 * The arithmetic is FusedTrainer's (pipeline/model/fused_trainer.py): the same five matrix products,
 * each through torch's own operator (aten_matmul.cpp: at::mm_out, what torch.mm(out=) calls) with the
 * same operand orientations, so the same BLAS routine gives the same bits (in MKL's strict
 * reproducibility mode, set by the entry points, on any thread count); everything between the
 * products runs here on one thread in a fixed order, and Adam is torch.optim.Adam(fused=True)'s
 * update written out (float arithmetic, no contraction: built with -ffp-contract=off). A step that
 * took ~25 torch calls from Python and their passes over memory is one call here.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { DONE = -1, MATMUL_FAILED = -2 }; /* what train_step and train_batch return (or a bad row's position) */

int aten_gemm(int a_t, int b_t, int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
              int ldc);

/* Row-major C[m×n] = op(A) op(B): a_t means A is stored k×m (op(A) = Aᵀ), b_t that B is stored n×k.
 * Nonzero when the product failed (native_last_error says why). */
static inline int gemm(int a_t, int b_t, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                       float *c, int ldc) {
    return aten_gemm(a_t, b_t, m, n, k, a, lda, b, ldb, c, ldc);
}

/* Mirrored by pipeline.model.native.Trainer, which checks itself against trainer_layout at load. */
typedef struct {
    int64_t h1, h2, width;                              /* width: the model inputs and a ones column */
    float *flat, *grad, *exp_avg, *exp_avg_sq, *step;   /* step: the optimizer's step count (one float) */
    float *x, *h, *dz, *wb_t, *g_t;                     /* x: rows × width, h: rows × h2, wb_t, g_t: width × h2 */
    double lr, beta1, beta2, eps;
    const float *users, *restaurants;                   /* the feature tables train_batch gathers from */
    int64_t n_users, user_width, n_restaurants, restaurant_width;
} Trainer;

/* Each field of Trainer in order: its name, its kind ('i' int64_t, 'd' double, 'p' a pointer), its
 * offset; then a row with no name and sizeof(Trainer). */
typedef struct {
    const char *name;
    char kind;
    int64_t offset;
} Field;

#define FIELD(f) {#f, _Generic(((Trainer *)0)->f, int64_t: 'i', double: 'd', default: 'p'), offsetof(Trainer, f)}
const Field trainer_layout[] = {
    FIELD(h1), FIELD(h2), FIELD(width), FIELD(flat), FIELD(grad), FIELD(exp_avg), FIELD(exp_avg_sq), FIELD(step),
    FIELD(x), FIELD(h), FIELD(dz), FIELD(wb_t), FIELD(g_t), FIELD(lr), FIELD(beta1), FIELD(beta2), FIELD(eps),
    FIELD(users), FIELD(restaurants), FIELD(n_users), FIELD(user_width), FIELD(n_restaurants),
    FIELD(restaurant_width), {NULL, 0, sizeof(Trainer)}};

/* out[i, :uw] = users[user_rows[k]], out[i, uw:uw + rw] = restaurants[restaurant_rows[k]] with
 * k = order[i] (k = i when order is NULL), rows `out_stride` floats apart. Returns -1, or the first
 * position whose row is out of range (the rows before it are written). Prefetching ahead (the
 * row numbers two distances ahead, their feature rows one distance ahead) hides most of the cache
 * misses on the 120 MB user table and on a shuffled pool's row numbers. */
static int64_t gather_rows(const float *users, int64_t n_users, int64_t uw, const float *restaurants,
                           int64_t n_restaurants, int64_t rw, const int32_t *user_rows, const int32_t *restaurant_rows,
                           const int64_t *order, int64_t n, float *out, int64_t out_stride) {
    enum { AHEAD = 12 };
    for (int64_t i = 0; i < n; i++) {
        if (order && i + 2 * AHEAD < n) {
            __builtin_prefetch(user_rows + order[i + 2 * AHEAD]);
            __builtin_prefetch(restaurant_rows + order[i + 2 * AHEAD]);
        }
        if (i + AHEAD < n) {
            int64_t k = order ? order[i + AHEAD] : i + AHEAD, u = user_rows[k], r = restaurant_rows[k];
            if (u >= 0 && u < n_users) {
                __builtin_prefetch(users + u * uw);
                __builtin_prefetch(users + u * uw + uw - 1);
            }
            if (r >= 0 && r < n_restaurants) __builtin_prefetch(restaurants + r * rw);
        }
        int64_t k = order ? order[i] : i, u = user_rows[k], r = restaurant_rows[k];
        if (u < 0 || u >= n_users || r < 0 || r >= n_restaurants) return i;
        float *row = out + i * out_stride;
        memcpy(row, users + u * uw, sizeof(float) * uw);
        memcpy(row + uw, restaurants + r * rw, sizeof(float) * rw);
    }
    return DONE;
}

int64_t gather(const float *users, int64_t n_users, int64_t uw, const float *restaurants, int64_t n_restaurants,
               int64_t rw, const int32_t *user_rows, const int32_t *restaurant_rows, int64_t n, float *out,
               int64_t out_stride) {
    return gather_rows(users, n_users, uw, restaurants, n_restaurants, rw, user_rows, restaurant_rows, NULL, n, out,
                       out_stride);
}

/* One Adam step on t->x[:n] (its last column 1) with labels `clicks`; writes the n logits to
 * logged_z and the labels to logged_y (the trainer computes the loss from them later). DONE, or
 * MATMUL_FAILED (the parameters may then be partly updated). */
int64_t train_step(const Trainer *t, const float *clicks, int64_t n, float *logged_z, float *logged_y) {
    const int h1 = (int)t->h1, h2 = (int)t->h2, w = (int)t->width, rows = (int)n;
    float *w1b = t->flat, *w2 = w1b + h1 * w, *b2 = w2 + h2 * h1, *w3 = b2 + h2, *b3 = w3 + h2;
    float *g1b = t->grad, *gw2 = g1b + h1 * w, *gb2 = gw2 + h2 * h1, *gw3 = gb2 + h2, *gb3 = gw3 + h2;
    float *wb_t = t->wb_t, *g_t = t->g_t, *h = t->h, *dz = t->dz, *z = logged_z;

    if (gemm(1, 1, w, h2, h1, w1b, w, w2, h1, wb_t, h2)) return MATMUL_FAILED; /* [W1 b1]ᵀ W2ᵀ = [W2 W1 | W2 b1]ᵀ */
    for (int j = 0; j < h2; j++) wb_t[(w - 1) * h2 + j] += b2[j];
    if (gemm(0, 0, rows, h2, w, t->x, w, wb_t, h2, h, h2)) return MATMUL_FAILED; /* [x 1] [W b]ᵀ, before the ReLU */

    /* z = relu(h) w3 + b3, row by row; LANES partial sums in a fixed order (they vectorize) */
    enum { LANES = 16 };
    for (int i = 0; i < rows; i++) {
        const float *a = h + (int64_t)i * h2;
        float acc[LANES] = {0};
        int j = 0;
        for (; j + LANES <= h2; j += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += (a[j + l] > 0.0f ? a[j + l] : 0.0f) * w3[j + l];
        for (int half = LANES / 2; half > 0; half /= 2)
            for (int l = 0; l < half; l++) acc[l] += acc[l + half];
        float s = acc[0];
        for (; j < h2; j++) s += (a[j] > 0.0f ? a[j] : 0.0f) * w3[j];
        z[i] = s + *b3;
    }
    double dz_sum = 0.0;
    for (int i = 0; i < rows; i++) {  /* dL/dz of the mean BCE-with-logits loss */
        float e = expf(-fabsf(z[i])), p = z[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dz[i] = (p - clicks[i]) / (float)rows;
        dz_sum += dz[i];
        logged_y[i] = clicks[i];
    }
    *gb3 = (float)dz_sum;
    for (int i = 0; i < rows; i++) {  /* h becomes dz_i 1[a_i > 0] */
        float *a = h + (int64_t)i * h2, d = dz[i];
        for (int j = 0; j < h2; j++) a[j] = a[j] > 0.0f ? d : 0.0f;
    }
    if (gemm(1, 0, w, h2, rows, t->x, w, h, h2, g_t, h2)) return MATMUL_FAILED; /* g = Σ_i [x_i 1]ᵀ dz_i 1[a_i > 0] */
    /* dL/dw3_j = Σ_i a_ij dz_i = [W b]_j · g_j, since a_ij = 1[a_ij > 0] [x_i 1]·[W b]_j */
    for (int j = 0; j < h2; j++) gw3[j] = 0.0f;
    for (int k = 0; k < w; k++)
        for (int j = 0; j < h2; j++) gw3[j] += wb_t[k * h2 + j] * g_t[k * h2 + j];
    for (int k = 0; k < w; k++)  /* dL/d[W b] = w3 ⊙ g */
        for (int j = 0; j < h2; j++) g_t[k * h2 + j] *= w3[j];
    memcpy(gb2, g_t + (int64_t)(w - 1) * h2, sizeof(float) * h2);
    if (gemm(1, 1, h1, w, h2, w2, h1, g_t, h2, g1b, w)) return MATMUL_FAILED;  /* dL/d[W1 b1] = W2ᵀ dL/d[W b] */
    if (gemm(1, 1, h2, h1, w, g_t, h2, w1b, w, gw2, h1)) return MATMUL_FAILED; /* dL/dW2 = dL/d[W b] [W1 b1]ᵀ */

    /* Adam, as torch's fused CPU kernel computes it (bias corrections in double, the update in float) */
    const float step = *t->step + 1.0f;
    *t->step = step;
    const double bc1 = 1.0 - pow(t->beta1, step), bc2 = 1.0 - pow(t->beta2, step);
    const float beta1 = (float)t->beta1, beta2 = (float)t->beta2, c1 = (float)(1.0 - t->beta1),
                c2 = (float)(1.0 - t->beta2), step_size = (float)(t->lr / bc1), bc2_sqrt = (float)sqrt(bc2),
                eps = (float)t->eps;
    const int64_t size = (int64_t)h1 * w + (int64_t)h2 * h1 + 2 * (int64_t)h2 + 1;
    float *p = t->flat, *g = t->grad, *m = t->exp_avg, *v = t->exp_avg_sq;
    for (int64_t d = 0; d < size; d++) {
        const float md = m[d] * beta1 + g[d] * c1, vd = v[d] * beta2 + g[d] * g[d] * c2;
        m[d] = md;
        v[d] = vd;
        p[d] = p[d] - step_size * md / (sqrtf(vd) / bc2_sqrt + eps);
    }
    return DONE;
}

/* gather_rows, then train_step, for one batch of a pool: pairs k = order[i] of the pool's rows
 * and labels (order NULL: the pointers are the batch's own rows). Returns train_step's DONE or
 * MATMUL_FAILED, or gather_rows' bad position (nothing trained then). */
int64_t train_batch(const Trainer *t, const int32_t *user_rows, const int32_t *restaurant_rows, const float *clicks,
                    const int64_t *order, int64_t n, float *logged_z, float *logged_y) {
    int64_t bad = gather_rows(t->users, t->n_users, t->user_width, t->restaurants, t->n_restaurants,
                              t->restaurant_width, user_rows, restaurant_rows, order, n, t->x, t->width);
    if (bad != DONE) return bad;
    if (order) {  /* the batch's labels, in order, where train_step logs them anyway */
        for (int64_t i = 0; i < n; i++) logged_y[i] = clicks[order[i]];
        clicks = logged_y;
    }
    return train_step(t, clicks, n, logged_z, logged_y);
}
