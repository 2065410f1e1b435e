/* The switch of a header's 64-byte kernels. They are built for the AVX-512 of x86-64-v4 (F,
   VL, BW, DQ and CD), and a core runs them where it has all of it. PM_WIDE_SWITCH(on, wide,
   allow) defines the flag on and the functions wide(), whether this core runs them (asked
   once; 0 where the compiler builds none), and allow(a): 0 makes every core run the
   header's narrower kernels (tests), 1 gives the core its choice back. */

#ifndef PM_WIDE_H
#define PM_WIDE_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_WIDE_CPU() (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") \
                       && __builtin_cpu_supports("avx512bw")                                  \
                       && __builtin_cpu_supports("avx512dq")                                  \
                       && __builtin_cpu_supports("avx512cd"))
#else
#define PM_WIDE_CPU() 0
#endif

#define PM_WIDE_SWITCH(ON, WIDE, ALLOW)                                                       \
static int ON = -1;                                                                           \
                                                                                              \
static int WIDE(void) {                                                                       \
    if (ON < 0)                                                                               \
        ON = PM_WIDE_CPU();                                                                   \
    return ON;                                                                                \
}                                                                                             \
                                                                                              \
static void ALLOW(int allow) {                                                                \
    ON = allow ? -1 : 0;                                                                      \
}

#endif
