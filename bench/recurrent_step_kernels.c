/* Candidate per-step kernels for Recurrent(LSTM), measured on their own (not built into the
   package): a time-major, batch-major layout in which each step is ONE product over the
   concatenated [x(t), h(t-1)] rows, so that the input projection, the step product, the input
   gradient and dh(t-1) need no GEMM over the whole sequence and no strided columns.

     forward, step t:  Z (B x 4H) = [x(t) h(t-1)] (B x (I+H)) @ [W_ih W_hh].T + b
     backward, step t: [dx(t) dh(t-1)] (B x (I+H)) = dG(t) (B x 4H) @ [W_ih W_hh]
     weights, once:    d[W_ih W_hh] += dG.T (4H x TB) @ [x h(t-1)] (TB x (I+H))   (one GEMM)

   The weights are packed once per call into panels (k-major, 24 or 32 columns), so no step
   repacks them as BLAS does. `bwd` is the 4 rows x 3 vectors kernel (12 accumulators, K in
   chunks of 128 so that a panel chunk stays in L1 across the batch's row tiles); `fwd` is a
   3 rows x 4 vectors kernel whose columns are the i, g, f, o gates of 8 units and which applies
   the gates in its epilogue (ROWS=2: 2 rows; NOEPI: stores the sums instead).

   Build and run (B I H T repetitions):
       gcc -O3 -march=haswell -mno-avx512f bench/recurrent_step_kernels.c -o /tmp/rsk -lm
       /tmp/rsk 16 64 128 32 50

   One run on the 2-core AMD EPYC (Zen 3, AVX2, about 96 GFLOPS float32 peak per core, under
   load), B16 I64 H128 T32: the 4x3 product as the whole forward product (projection included,
   N = 504) 1.17-1.39 ms (72-85 GFLOPS), as the whole backward product (dx and dh) 1.08-1.33 ms
   (76-93 GFLOPS); the fused 3x4 forward 1.93-2.16 ms (47-52 GFLOPS: its 16 live vectors spill,
   and the epilogue's exp and divisions cost about 10%). The present kernels for the same
   work: projection GEMM 0.59 ms + step products 0.98 ms forward, step products 0.98 ms +
   gradInput GEMM 0.71 ms backward. B128 I256 H256: 4x3 forward product 58 ms (73 GFLOPS),
   backward 55 ms (78 GFLOPS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#pragma GCC optimize ("fp-contract=fast")
#ifndef ROWS
#define ROWS 3
#endif
#ifdef NOEPI
#define EPI 0
#else
#define EPI 1
#endif
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32)));
static double now(){struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec*1e-9;}
static inline v8 bc(float x){ return (v8){x,x,x,x,x,x,x,x}; }
static inline v8 vexp(v8 x){
  v8i m = x < bc(-87.f); x = (v8)(((v8i)bc(-87.f) & m) | ((v8i)x & ~m)); m = x > bc(88.f); x = (v8)(((v8i)bc(88.f) & m) | ((v8i)x & ~m));
  v8 t = x * bc(1.44269504088896341f) + bc(12582912.0f);
  v8 kf = t - bc(12582912.0f);
  v8i k = (v8i)t - (v8i)bc(12582912.0f);
  v8 r = (x - kf * bc(0.693359375f)) - kf * bc(-2.12194440e-4f);
  v8 p = bc(1.0f) + r * (bc(1.00000003804f) + r * (bc(0.500000004753f) + r * (bc(0.166664140602f)
              + r * (bc(0.0416663510802f) + r * (bc(0.00837524732689f) + r * bc(0.00139412594688f))))));
  return p * (v8)((k + 127) << 23);
}
static inline v8 vsig(v8 x){ return bc(1.f) / (bc(1.f) + vexp(-x)); }
static inline v8 vtanh(v8 x){ /* 1 - 2/(exp(2x)+1): cheap version for the timing */
  return bc(1.f) - bc(2.f) / (vexp(x + x) + bc(1.f)); }

/* forward fused: A (B x K) rows lda; P packed [u][k][32]; bias [u][32]; cprev (B x Hp) or NULL;
   act (B x 4Hp) ; c, tc (B x Hp); h out rows ldh */
__attribute__((noinline)) void fwd(int B, int K, int nU, const float *A, int lda, const float *P, const float *bias,
  const float *cp, float *act, float *c, float *tc, float *h, int ldh){
  int Hp = nU*8;
  for (int u=0; u<nU; u++){
    const float *Pu = P + (size_t)u*K*32;
    v8 bi=*(v8*)(bias+u*32), bg=*(v8*)(bias+u*32+8), bf=*(v8*)(bias+u*32+16), bo=*(v8*)(bias+u*32+24);
    int r=0;
    for (; r<B; r+=ROWS){
      int nr = B-r<ROWS? B-r:ROWS;
      const float *a0=A+(size_t)r*lda, *a1=a0+(nr>1?lda:0), *a2=a0+(nr>2?2*lda:0);
      v8 s00=bi,s01=bg,s02=bf,s03=bo,s10=bi,s11=bg,s12=bf,s13=bo,s20=bi,s21=bg,s22=bf,s23=bo;
      const float *pk=Pu;
      for (int k=0;k<K;k++,pk+=32){
#if ROWS==3
        v8 x0=bc(a0[k]),x1=bc(a1[k]),x2=bc(a2[k]); v8 w;
        w=*(const v8*)pk; s00+=x0*w; s10+=x1*w; s20+=x2*w;
        w=*(const v8*)(pk+8); s01+=x0*w; s11+=x1*w; s21+=x2*w;
        w=*(const v8*)(pk+16); s02+=x0*w; s12+=x1*w; s22+=x2*w;
        w=*(const v8*)(pk+24); s03+=x0*w; s13+=x1*w; s23+=x2*w;
#else
        v8 w0=*(const v8*)pk,w1=*(const v8*)(pk+8),w2=*(const v8*)(pk+16),w3=*(const v8*)(pk+24); v8 x;
        x=bc(a0[k]); s00+=x*w0; s01+=x*w1; s02+=x*w2; s03+=x*w3;
        x=bc(a1[k]); s10+=x*w0; s11+=x*w1; s12+=x*w2; s13+=x*w3;
#endif
      }
      v8 S[3][4]={{s00,s01,s02,s03},{s10,s11,s12,s13},{s20,s21,s22,s23}};
      for (int j=0;j<nr;j++){
        int row=r+j;
        if(!EPI){ float *ar = act+(size_t)row*4*Hp+u*32; *(v8*)ar=S[j][0]; *(v8*)(ar+8)=S[j][1]; *(v8*)(ar+16)=S[j][2]; *(v8*)(ar+24)=S[j][3]; continue;}
        v8 i=vsig(S[j][0]), g=vtanh(S[j][1]), f=vsig(S[j][2]), o=vsig(S[j][3]);
        v8 cpv = cp? *(const v8*)(cp+(size_t)row*Hp+u*8) : bc(0);
        v8 cv = f*cpv + i*g, t = vtanh(cv);
        float *ar = act+(size_t)row*4*Hp+u*32;
        *(v8*)ar=i; *(v8*)(ar+8)=g; *(v8*)(ar+16)=f; *(v8*)(ar+24)=o;
        *(v8*)(c+(size_t)row*Hp+u*8)=cv; *(v8*)(tc+(size_t)row*Hp+u*8)=t;
        *(v8*)(h+(size_t)row*ldh+u*8)=o*t;
      }
    }
  }
}
/* backward product: Y (B x N) = D (B x K) @ W (K x N), W packed [panel of 24][k][24] */
__attribute__((noinline)) void bwd(int B, int K, int N, const float *D, int ldd, const float *P, float *Y, int ldy){
  int np = N/24;
  const int KC=128;
  for (int k0=0;k0<K;k0+=KC){
    int kc = K-k0<KC?K-k0:KC;
    for (int p=0;p<np;p++){
      const float *Pp = P + (size_t)p*K*24 + (size_t)k0*24;
      for (int r=0;r<B;r+=4){
        const float *a0=D+(size_t)r*ldd+k0,*a1=a0+ldd,*a2=a1+ldd,*a3=a2+ldd;
        float *y0=Y+(size_t)r*ldy+p*24,*y1=y0+ldy,*y2=y1+ldy,*y3=y2+ldy;
        v8 s00,s01,s02,s10,s11,s12,s20,s21,s22,s30,s31,s32;
        if(k0==0){s00=s01=s02=s10=s11=s12=s20=s21=s22=s30=s31=s32=bc(0);} else {
          s00=*(v8*)y0;s01=*(v8*)(y0+8);s02=*(v8*)(y0+16);
          s10=*(v8*)y1;s11=*(v8*)(y1+8);s12=*(v8*)(y1+16);
          s20=*(v8*)y2;s21=*(v8*)(y2+8);s22=*(v8*)(y2+16);
          s30=*(v8*)y3;s31=*(v8*)(y3+8);s32=*(v8*)(y3+16);}
        const float *pk=Pp;
        for(int k=0;k<kc;k++,pk+=24){
          v8 w0=*(const v8*)pk,w1=*(const v8*)(pk+8),w2=*(const v8*)(pk+16); v8 x;
          x=bc(a0[k]); s00+=x*w0; s01+=x*w1; s02+=x*w2;
          x=bc(a1[k]); s10+=x*w0; s11+=x*w1; s12+=x*w2;
          x=bc(a2[k]); s20+=x*w0; s21+=x*w1; s22+=x*w2;
          x=bc(a3[k]); s30+=x*w0; s31+=x*w1; s32+=x*w2;
        }
        *(v8*)y0=s00;*(v8*)(y0+8)=s01;*(v8*)(y0+16)=s02;
        *(v8*)y1=s10;*(v8*)(y1+8)=s11;*(v8*)(y1+16)=s12;
        *(v8*)y2=s20;*(v8*)(y2+8)=s21;*(v8*)(y2+16)=s22;
        *(v8*)y3=s30;*(v8*)(y3+8)=s31;*(v8*)(y3+16)=s32;
      }
    }
  }
}
static float *rnd(size_t n){ float *p=aligned_alloc(64,((n*4+63)/64)*64); for(size_t i=0;i<n;i++)p[i]=(rand()/(float)RAND_MAX-0.5f)*0.2f; return p;}
int main(int argc,char**argv){
  int B=atoi(argv[1]),I=atoi(argv[2]),H=atoi(argv[3]),T=atoi(argv[4]),reps=atoi(argv[5]);
  int K=I+H,nU=H/8,Hp=H;
  float *XH=rnd((size_t)(T+1)*B*K),*P=rnd((size_t)nU*K*32),*bias=rnd(4*Hp),*act=rnd((size_t)T*B*4*Hp),*c=rnd((size_t)T*B*Hp),*tc=rnd((size_t)T*B*Hp),*out=rnd((size_t)B*T*H);
  float *P2=rnd((size_t)4*H*K),*D=rnd((size_t)T*B*4*H),*Y=rnd((size_t)B*K);
  { /* check the 4x3 product against a plain loop (P2 read as the packed panels) */
    int N=K - K%24; float *Yc=rnd((size_t)B*K); double err=0;
    bwd(B,4*H,N,D,4*H,P2,Yc,K);
    for(int b=0;b<B;b++) for(int n=0;n<N;n++){ double s=0; for(int k=0;k<4*H;k++) s+=(double)D[(size_t)b*4*H+k]*P2[(size_t)(n/24)*4*H*24+(size_t)k*24+n%24];
      double e=fabs(s-Yc[(size_t)b*K+n]); if(e>err)err=e; }
    printf("4x3 product max abs error vs double loop: %.2e\n", err); free(Yc); }
  double best=1e9,bestb=1e9;
  for(int rr=0;rr<5;rr++){
    double s=now();
    for(int q=0;q<reps;q++) for(int t=0;t<T;t++)
      fwd(B, t?K:I, nU, XH+(size_t)t*B*K, K, P, bias, t?c+(size_t)(t-1)*B*Hp:NULL, act+(size_t)t*B*4*Hp, c+(size_t)t*B*Hp, tc+(size_t)t*B*Hp, XH+(size_t)(t+1)*B*K+I, K);
    double d=(now()-s)/reps; if(d<best)best=d;
    s=now();
    for(int q=0;q<reps;q++) for(int t=T-1;t>=0;t--) bwd(B,4*H,K,D+(size_t)t*B*4*H,4*H,P2,Y,K);
    d=(now()-s)/reps; if(d<bestb)bestb=d;
  }
  double bestf=1e9;
  for(int rr=0;rr<5;rr++){ double s=now(); for(int q=0;q<reps;q++) for(int t=0;t<T;t++) bwd(B,K,4*H-8,XH+(size_t)t*B*K,K,P2,D+(size_t)t*B*4*H,4*H); double d=(now()-s)/reps; if(d<bestf)bestf=d;}
  printf("fwd as plain 4x3 product (N=%d): %.3f ms (%.1f GFLOPS)\n", 4*H-8, bestf*1e3, 2.0*B*K*(4*H-8)*T/bestf/1e9);
  double fl=2.0*B*K*4*H*T;
  printf("B%d I%d H%d T%d: fwd fused (incl projection+gates) %.3f ms (%.1f GFLOPS); bwd products (dx+dh) %.3f ms (%.1f GFLOPS)\n",B,I,H,T,best*1e3,fl/best/1e9,bestb*1e3,fl/bestb/1e9);
}
