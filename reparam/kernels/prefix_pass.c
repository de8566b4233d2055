/* The sample-space pass of reparam.fit.PrefixSpaceTerms, fused into one loop over samples per fit.
 *
 * The math is the docstring of PrefixSpaceTerms._prefix_terms. Here every block of the Hessian is written as
 *     sum over samples t of coefficient_t(fit) * feature_t(data),
 * with features a = [1, x] (gate-value blocks, gate gradient) and the products a_p a_p' (p <= p', gate-gate
 * blocks), so each unique entry costs one multiply-add per sample, instead of a row of J J^T.
 * Samples go in blocks of NB: the per-sample quantities of a block (softmax weights, residuals, coefficients)
 * live in small arrays that stay in L1; the sums over the block are row-times-row products whose partial sums
 * stay in registers (V lanes, one AVX-512 vector of doubles). Every inner loop runs over samples, so the
 * compiler vectorises it, exp included (glibc's libmvec: `declare simd` below). Built and loaded by
 * reparam.kernels (compiled on first use with the machine's C compiler, -march=native); without a compiler the
 * package uses the tensor pass, which computes the same sums.
 *
 * No -ffast-math: NaN and inf propagate exactly as in the tensor pass (the solver relies on that to flag
 * non-finite fits); sums are reassociated only by the explicit blocking, so results agree with the tensor pass
 * to rounding (about 1e-16 relative).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef REPARAM_NO_MVEC
#pragma omp declare simd notinbranch
extern double exp(double);
#endif

#define V 8   /* lanes of the partial sums: one AVX-512 register of doubles */
#define NB 32 /* samples per block */

/* Doubles written per fit: loss sum; gate gradient (L, q); value gradient (L, m); J^T J gate-gate (TL atom
 * pairs i <= j, Tq feature pairs p <= p'); R gate-gate (same); J^T J gate-value (L, L, m, q); R gate-value
 * (same); sum_t w_i w_j (TL pairs). No 1/n factors. R parts stay zero unless what == 2. */

int64_t prefix_pass_width(int64_t L, int64_t q, int64_t m)
{
    int64_t TL = L * (L + 1) / 2, Tq = q * (q + 1) / 2;
    return 1 + L * q + L * m + 2 * TL * Tq + 2 * L * L * m * q + TL;
}

/* acc[i * nf + j][s] += sum over the block of C[i][t] F[j][t] (lanes s kept apart until the end) */
static inline void outer_acc(double (*restrict acc)[V], const double (*C)[NB], int64_t nc,
                             const double (*F)[NB], int64_t nf)
{
    for (int64_t i = 0; i < nc; i++)
        for (int64_t j = 0; j < nf; j++) {
            double sv[V];
            for (int s = 0; s < V; s++) sv[s] = acc[i * nf + j][s];
            for (int t = 0; t < NB; t += V)
                for (int s = 0; s < V; s++) sv[s] += C[i][t + s] * F[j][t + s];
            for (int s = 0; s < V; s++) acc[i * nf + j][s] = sv[s];
        }
}

/* what: 0 = loss only, 1 = loss, gradient and J^T J, 2 = also the residual curvature R */
void prefix_pass(int64_t B, int64_t n, int64_t L, int64_t q, int64_t m, int64_t what,
                 const double *restrict gate, const double *restrict values, const int64_t *restrict rep,
                 const double *restrict A, const double *restrict Yt, const double *restrict mu0,
                 const double *restrict s0, double *restrict out)
{
    const int64_t TL = L * (L + 1) / 2, Tq = q * (q + 1) / 2;
    const int64_t o_gv = 1 + L * q, o_gg = o_gv + L * m, o_rgg = o_gg + TL * Tq;
    const int64_t o_jv = o_rgg + TL * Tq, o_rjv = o_jv + L * L * m * q, o_vv = o_rjv + L * L * m * q;
    const int64_t K = o_vv + TL;
    double (*acc)[V] = malloc(sizeof(double) * K * V);  /* heap: K grows as L^2 d^2 */
    if (!acc) return;
    double a[q][NB], aa[Tq][NB], w[L][NB], wu[L * m][NB], rho[L][NB], r[m][NB], f[m][NB];
    double cE[TL][NB], cR[TL][NB], gvE[L * L * m][NB], gvR[L * L * m][NB];
    double top[NB], e0[NB], inv[NB], mask[NB], tmp[NB];
    const int exact = what == 2;

    for (int64_t b = 0; b < B; b++) {
        memset(acc, 0, sizeof(double) * K * V);
        const double *g = gate + b * L * q, *v = values + b * L * m;
        const int64_t R = rep[b];
        const double *Ar = A + R * q * n, *Yr = Yt + R * m * n, *Mr = mu0 + R * m * n, *Sr = s0 + R * n;
        for (int64_t t0 = 0; t0 < n; t0 += NB) {
            if (t0 + NB <= n) {
                for (int s = 0; s < NB; s++) mask[s] = 1.0;
                for (int64_t p = 0; p < q; p++) memcpy(a[p], Ar + p * n + t0, sizeof(double) * NB);
                for (int64_t c = 0; c < m; c++) { memcpy(r[c], Yr + c * n + t0, sizeof(double) * NB); memcpy(f[c], Mr + c * n + t0, sizeof(double) * NB); }
                memcpy(e0, Sr + t0, sizeof(double) * NB);
            } else {  /* the last, partial block: padded samples get zero weight */
                const int64_t k = n - t0;
                for (int s = 0; s < NB; s++) mask[s] = s < k ? 1.0 : 0.0;
                for (int64_t p = 0; p < q; p++) for (int s = 0; s < NB; s++) a[p][s] = s < k ? Ar[p * n + t0 + s] : 0.0;
                for (int64_t c = 0; c < m; c++) for (int s = 0; s < NB; s++) {
                    r[c][s] = s < k ? Yr[c * n + t0 + s] : 0.0; f[c][s] = s < k ? Mr[c * n + t0 + s] : 0.0; }
                for (int s = 0; s < NB; s++) e0[s] = s < k ? Sr[t0 + s] : 0.0;
            }
            /* softmax over [pretrained, prompts] with the log-sum-exp shift */
            for (int s = 0; s < NB; s++) top[s] = e0[s];
            for (int64_t i = 0; i < L; i++) {
                for (int s = 0; s < NB; s++) w[i][s] = 0.0;
                for (int64_t p = 0; p < q; p++) { const double gp = g[i * q + p]; for (int s = 0; s < NB; s++) w[i][s] += gp * a[p][s]; }
                for (int s = 0; s < NB; s++) top[s] = w[i][s] > top[s] ? w[i][s] : top[s];
            }
            for (int s = 0; s < NB; s++) { e0[s] = exp(e0[s] - top[s]); inv[s] = e0[s]; }
            for (int64_t i = 0; i < L; i++) for (int s = 0; s < NB; s++) { w[i][s] = exp(w[i][s] - top[s]); inv[s] += w[i][s]; }
            for (int s = 0; s < NB; s++) { inv[s] = 1.0 / inv[s]; e0[s] *= inv[s]; inv[s] *= mask[s]; }
            for (int64_t i = 0; i < L; i++) for (int s = 0; s < NB; s++) w[i][s] *= inv[s];  /* zero on padding */
            /* f = w0 mu0 + sum_i w_i v_i (mu0 enters unmasked: r is masked below); r = f - y */
            for (int64_t c = 0; c < m; c++) {
                for (int s = 0; s < NB; s++) f[c][s] *= e0[s];
                for (int64_t i = 0; i < L; i++) { const double vc = v[i * m + c]; for (int s = 0; s < NB; s++) f[c][s] += vc * w[i][s]; }
                for (int s = 0; s < NB; s++) r[c][s] = (f[c][s] - r[c][s]) * mask[s];
            }
            if (what == 0) {
                for (int64_t c = 0; c < m; c++) outer_acc(acc, (const double (*)[NB])r[c], 1, (const double (*)[NB])r[c], 1);
                continue;
            }
            for (int64_t i = 0; i < L; i++) {
                for (int s = 0; s < NB; s++) rho[i][s] = 0.0;
                for (int64_t c = 0; c < m; c++) {
                    const double vc = v[i * m + c];
                    for (int s = 0; s < NB; s++) { wu[i * m + c][s] = w[i][s] * (vc - f[c][s]); rho[i][s] += wu[i * m + c][s] * r[c][s]; }
                }
            }
            /* per-sample coefficients of the Hessian blocks */
            { int64_t k = 0; for (int64_t p = 0; p < q; p++) for (int64_t p2 = p; p2 < q; p2++, k++) for (int s = 0; s < NB; s++) aa[k][s] = a[p][s] * a[p2][s]; }
            { int64_t ij = 0;
              for (int64_t i = 0; i < L; i++) for (int64_t j = i; j < L; j++, ij++) {
                for (int s = 0; s < NB; s++) cE[ij][s] = 0.0;
                for (int64_t c = 0; c < m; c++) for (int s = 0; s < NB; s++) cE[ij][s] += wu[i * m + c][s] * wu[j * m + c][s];
                if (exact) for (int s = 0; s < NB; s++) cR[ij][s] = (i == j ? rho[i][s] : 0.0) - rho[i][s] * w[j][s] - w[i][s] * rho[j][s];
              } }
            for (int64_t i = 0; i < L; i++) for (int64_t j = 0; j < L; j++) for (int64_t c = 0; c < m; c++) {
                const int64_t row = (i * L + j) * m + c;
                for (int s = 0; s < NB; s++) gvE[row][s] = wu[i * m + c][s] * w[j][s];
                if (exact) for (int s = 0; s < NB; s++) gvR[row][s] = w[i][s] * r[c][s] * ((i == j ? 1.0 : 0.0) - w[j][s]);
            }
            /* sums over the block: every output is a row of coefficients times a row of features */
            for (int64_t c = 0; c < m; c++) outer_acc(acc, (const double (*)[NB])r[c], 1, (const double (*)[NB])r[c], 1);
            outer_acc(acc + 1, (const double (*)[NB])rho, L, (const double (*)[NB])a, q);
            outer_acc(acc + o_gv, (const double (*)[NB])w, L, (const double (*)[NB])r, m);
            outer_acc(acc + o_gg, (const double (*)[NB])cE, TL, (const double (*)[NB])aa, Tq);
            outer_acc(acc + o_jv, (const double (*)[NB])gvE, L * L * m, (const double (*)[NB])a, q);
            if (exact) {
                outer_acc(acc + o_rgg, (const double (*)[NB])cR, TL, (const double (*)[NB])aa, Tq);
                outer_acc(acc + o_rjv, (const double (*)[NB])gvR, L * L * m, (const double (*)[NB])a, q);
            }
            { int64_t ij = 0;
              for (int64_t i = 0; i < L; i++) for (int64_t j = i; j < L; j++, ij++) {
                for (int s = 0; s < NB; s++) tmp[s] = w[i][s] * w[j][s];
                for (int t = 0; t < NB; t += V) for (int s = 0; s < V; s++) acc[o_vv + ij][s] += tmp[t + s];
              } }
        }
        double *o = out + b * K;
        for (int64_t k = 0; k < K; k++) { double t = 0.0; for (int s = 0; s < V; s++) t += acc[k][s]; o[k] = t; }
    }
    free(acc);
}
