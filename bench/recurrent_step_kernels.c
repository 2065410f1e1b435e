/* engine/_recurrent.h's float32 LSTM kernels, two versions side by side in one process: A
   (a committed version) and B (the working tree), each renamed so that both link, timed in
   interleaved blocks (shuffled order, process CPU time, medians), so that a phase of the
   machine in which memory-bound code slows down hits both alike. Each version runs the
   whole-sequence calls of engine/recurrent.pyx's lstm_xh_forward (packing + steps),
   lstm_xh_backward (packing + steps) and lstm_xh_acc (pm_rec_wgrad), on buffers laid out as
   pymodules' LSTM keeps them; the outputs of B are compared with A's.

   Build and run (B I H T blocks; A from git's HEAD unless REV says otherwise):
       REV=HEAD; git show $REV:engine/_recurrent.h | sed 's/pm_rec_/pmA_rec_/g;
           s/PM_REC_/PMA_REC_/g; s/PM_RECURRENT_H/PMA_RECURRENT_H/' > /tmp/rec_A.h
       sed 's/pm_rec_/pmB_rec_/g; s/PM_REC_/PMB_REC_/g; s/PM_RECURRENT_H/PMB_RECURRENT_H/' \
           engine/_recurrent.h > /tmp/rec_B.h
       gcc -O3 -ffp-contract=off -I/tmp -Iengine bench/recurrent_step_kernels.c -o /tmp/rsk -lm
       /tmp/rsk 16 64 128 32 41 [offset A] [offset B] [panel width]

   (the offsets, in floats past a 64-byte boundary, of the state buffers of each: NumPy's
   arrays start 16 bytes past one or at any multiple of 16; the width 24 or 48, by default
   the core's, pm_rec_width)

   It prints, per call, the median CPU ms of A and B and B / A, and the largest difference
   of B's outputs from A's relative to the largest magnitude of each. A revision older than
   the panel width argument of the calls (pm_rec_width) runs on neither side: the calls here
   name it.

   Runs on the 2-core AMD EPYC (Zen 3, AVX2; shared, so phases of 20-30% either way; both
   sides at offset 4, as NumPy places them), B16 I64 H128 T32, each change against the one
   before: the panel across W_ih / W_hh stored by vectors in pm_rec_wgrad, weight gradients
   B/A 0.94; the backward's panels and dxh on 64-byte boundaries, backward 0.96; the
   forward's last panel 8 columns wide and its panels and gate rows aligned, forward 0.96;
   exp with 2^k in one factor and sigmoid without the sign select, forward 0.965. Tried and
   left: prefetching pm_rec_wgrad's next output rows (1.02-1.05), its chunks of 256 rows or
   passes of 512 gates (0.99, 1.015: noise), a forward K chunk of 96 (1.02). Alone, with
   operands in cache, the step product runs at 93-96 GFLOPS, the gate pass in 0.25-0.31 ms,
   the backward's row pass in 0.15 ms. On a Zen 5 core (AVX-512), the working tree on both
   sides, width 24 then 48: sum 3.21 then 1.56 ms; forward 88 then 184 GFLOPS, backward 93
   then 194, weight gradients 103 then 206 (the same numbers either way). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rec_A.h"
#include "rec_B.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int OFFSET = 0;  /* floats past a 64-byte boundary at which make()'s buffers start */

static float *buf(size_t n, float scale) {
    float *p = (float *) aligned_alloc(64, ((n * 4 + 127) / 64) * 64) + OFFSET;
    for (size_t i = 0; i < n; i++) p[i] = scale * ((float) rand() / (float) RAND_MAX - 0.5f);
    return p;
}

typedef struct {
    float *pk, *pb, *xh, *z, *c, *tc, *y, *pkb, *dg, *dxh, *dc, *gi, *gw, *gu, *gb;
} state;

static int NB, NT, NI, NH, PF, PB, GW, PW;
static float *X, *WI, *WH, *BI, *GO;

static state make(void) {
    state s;
    int k = NI + NH;
    s.pk = buf((size_t) PF * k * PW, 0); s.pb = buf(PW * PF, 0);
    s.xh = buf((size_t) NT * NB * k, 0); s.z = buf((size_t) NT * NB * GW, 0);
    s.c = buf((size_t) NT * NB * NH, 0); s.tc = buf((size_t) NT * NB * NH, 0);
    s.y = buf((size_t) NB * NT * NH, 0); s.pkb = buf((size_t) (PB + 1) * 4 * NH * PW, 0);
    s.dg = buf((size_t) NT * NB * GW, 0); s.dxh = buf((size_t) NB * PW * (PB + 1), 0);
    s.dc = buf((size_t) NB * NH, 0); s.gi = buf((size_t) NB * NT * NI, 0);
    s.gw = buf((size_t) 4 * NH * NI, 0); s.gu = buf((size_t) 4 * NH * NH, 0);
    s.gb = buf((size_t) 4 * NH, 0);
    return s;
}

/* the calls of engine/recurrent.pyx (the buffers of the backward with one panel of room) */
#define VERSION(P)                                                                            \
    static void P##_fwd(state *s) {                                                           \
        P##_rec_xh_forward(NB, NT, NI, NH, PF, PW, X, WI, WH, BI, s->pk, (size_t) PF          \
                           * (NI + NH) * PW, s->pb, s->xh, s->z, s->c, s->tc, s->y);          \
    }                                                                                         \
    static void P##_bwd(state *s) {                                                           \
        P##_rec_xh_backward(NB, NT, NI, NH, PB, PW, GW, GO, WI, WH, s->pkb, (size_t) (PB + 1) \
                            * 4 * NH * PW, s->z, s->c, s->tc, s->dg, s->dxh, (size_t) NB * PW \
                            * (PB + 1), s->dc, s->gi);                                        \
    }                                                                                         \
    static void P##_acc(state *s) {                                                           \
        memset(s->gw, 0, (size_t) 4 * NH * NI * 4);                                           \
        memset(s->gu, 0, (size_t) 4 * NH * NH * 4);                                           \
        memset(s->gb, 0, (size_t) 4 * NH * 4);                                                \
        P##_rec_wgrad_w(PW, NT * NB, 4 * NH, NI, NH, P##_rec_gate_rows(s->dg, (size_t) NT     \
                        * NB, GW, NH, PW), GW, s->xh, NI + NH, 1.0f, s->gw, NI, s->gu, NH,    \
                        s->gb, 1.0f, NB);                                                     \
    }

VERSION(pmA)
VERSION(pmB)

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(a[i]) > m) m = fabs(a[i]);
        if (fabs((double) a[i] - b[i]) > d || a[i] != a[i] || b[i] != b[i])
            d = fabs((double) a[i] - b[i]);
    }
    return m > 0 ? d / m : d;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s B I H T blocks [offset A] [offset B] [width]\n", argv[0]);
        return 2;
    }
    NB = atoi(argv[1]); NI = atoi(argv[2]); NH = atoi(argv[3]); NT = atoi(argv[4]);
    int blocks = atoi(argv[5]), k = NI + NH;
    PW = argc > 8 ? atoi(argv[8]) : pmB_rec_width();  /* 24, or 48 on a core with AVX-512 */
    PF = (4 * NH + PW - 1) / PW; PB = (k + PW - 1) / PW; GW = PW * PF;
    srand(1);
    X = buf((size_t) NB * NT * NI, 2.0f); WI = buf((size_t) 4 * NH * NI, 0.2f);
    WH = buf((size_t) 4 * NH * NH, 0.2f); BI = buf(4 * NH, 0.2f);
    GO = buf((size_t) NB * NT * NH, 2.0f);
    OFFSET = argc > 6 ? atoi(argv[6]) : 0;  /* A's buffers at OFFSET, B's at argv[7] */
    state a = make();
    OFFSET = argc > 7 ? atoi(argv[7]) : 0;
    state b = make();
    void (*fn[6])(state *) = {pmA_fwd, pmB_fwd, pmA_bwd, pmB_bwd, pmA_acc, pmB_acc};
    const char *names[3] = {"forward (pack + steps)", "backward (pack + steps)",
                            "weight gradients"};
    state *st[2] = {&a, &b};
    for (int q = 0; q < 6; q += 2) {
        fn[q](&a);
        fn[q + 1](&b);
    }
    printf("B%d I%d H%d T%d: B vs A, largest difference / largest |A|: y %.1e, "
           "gradInput %.1e, gW %.1e, gU %.1e, gb %.1e\n", NB, NI, NH, NT,
           maxdiff(a.y, b.y, (size_t) NB * NT * NH), maxdiff(a.gi, b.gi, (size_t) NB * NT * NI),
           maxdiff(a.gw, b.gw, (size_t) 4 * NH * NI), maxdiff(a.gu, b.gu, (size_t) 4 * NH * NH),
           maxdiff(a.gb, b.gb, (size_t) 4 * NH));
    int calls = NB * NT * k * NH < (1 << 22) ? 4 : 1;
    double *t[6];
    for (int q = 0; q < 6; q++) t[q] = malloc(sizeof(double) * blocks);
    for (int r = 0; r < blocks; r++) {
        int order[6] = {0, 1, 2, 3, 4, 5};
        for (int q = 5; q > 0; q--) {
            int j = rand() % (q + 1), x = order[q];
            order[q] = order[j];
            order[j] = x;
        }
        for (int q = 0; q < 6; q++) {
            int f = order[q];
            double s0 = now();
            for (int c = 0; c < calls; c++) fn[f](st[f & 1]);
            t[f][r] = (now() - s0) / calls;
        }
    }
    double flop = 2.0 * NB * NT * k * 4 * NH, sa = 0, sb = 0;
    for (int q = 0; q < 6; q += 2) {
        qsort(t[q], blocks, sizeof(double), cmp);
        qsort(t[q + 1], blocks, sizeof(double), cmp);
        double ma = t[q][blocks / 2], mb = t[q + 1][blocks / 2];
        sa += ma; sb += mb;
        printf("  %-24s A %7.3f ms (%5.1f GF)  B %7.3f ms (%5.1f GF)  B/A %.3f\n", names[q / 2],
               ma * 1e3, flop / ma * 1e-9, mb * 1e3, flop / mb * 1e-9, mb / ma);
    }
    printf("  %-24s A %7.3f ms             B %7.3f ms             B/A %.3f\n", "sum", sa * 1e3,
           sb * 1e3, sb / sa);
    return 0;
}
