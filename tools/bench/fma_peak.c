/* Single-core clock and fp32 FMA throughput, for BENCHMARKS.md's "physical limit" line.
 *
 *   gcc -O2 -mavx2 -mfma -mavx512f tools/bench/fma_peak.c -o build/bench/fma_peak && taskset -c 0 build/bench/fma_peak
 *
 * Times are this thread's CPU time (CLOCK_THREAD_CPUTIME_ID): other processes competing for the core
 * do not inflate them. Best of several runs. Prints one JSON object.
 * - clock_ghz: a chain of dependent register-register 64-bit adds (1-cycle latency; recent Intel cores
 *   fold add-immediate chains at rename, so the chain uses a register operand) -> core cycles per second
 *   while running scalar code (turbo included, whatever the TSC says). clock_ghz_imul cross-checks
 *   with dependent imul (3-cycle latency).
 * - fma256_gflops / fma512_gflops: 12 independent accumulators of vfmadd213ps on ymm / zmm registers
 *   (covers 4-cycle latency x 2 FMA ports), written in inline asm so the compiler adds nothing to the
 *   loop -> the fp32 FLOP/s one core sustains. fma512 / (32 x clock) estimates the number of 512-bit
 *   FMA units (times the AVX-512 frequency ratio).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static double clock_ghz(long iters) {
    long x = 0, one = 1, n = iters;
    double t0 = now();
    __asm__ volatile(
        "1:\n\t"
        "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
        "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
        "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
        "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
        "dec %1\n\tjnz 1b\n\t"
        : "+r"(x), "+r"(n) : "r"(one));
    return (double)iters * 16.0 / (now() - t0) / 1e9;
}

static double imul_ghz(long iters) {
    long x = 1, m = 1, n = iters;
    double t0 = now();
    __asm__ volatile(
        "1:\n\t"
        "imul %2, %0\n\timul %2, %0\n\timul %2, %0\n\timul %2, %0\n\t"
        "imul %2, %0\n\timul %2, %0\n\timul %2, %0\n\timul %2, %0\n\t"
        "dec %1\n\tjnz 1b\n\t"
        : "+r"(x), "+r"(n) : "r"(m));
    return (double)iters * 8.0 * 3.0 / (now() - t0) / 1e9;
}

#define FMA12(R) \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "0\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "1\n\t" \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "2\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "3\n\t" \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "4\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "5\n\t" \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "6\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "7\n\t" \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "8\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "9\n\t" \
    "vfmadd213ps %%" R "15, %%" R "14, %%" R "10\n\t" "vfmadd213ps %%" R "15, %%" R "14, %%" R "11\n\t"
#define CLOBBER "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm14","xmm15"

static double fma256(long iters) {
    long n = iters;
    double t0 = now();
    __asm__ volatile(
        "vxorps %%ymm14, %%ymm14, %%ymm14\n\t" "vxorps %%ymm15, %%ymm15, %%ymm15\n\t"
        "1:\n\t" FMA12("ymm") "dec %0\n\tjnz 1b\n\t" "vzeroupper\n\t"
        : "+r"(n) :: CLOBBER);
    return (double)iters * 12 * 8 * 2 / (now() - t0) / 1e9;
}

static double fma512(long iters) {
    long n = iters;
    double t0 = now();
    __asm__ volatile(
        "vpxord %%zmm14, %%zmm14, %%zmm14\n\t" "vpxord %%zmm15, %%zmm15, %%zmm15\n\t"
        "1:\n\t" FMA12("zmm") "dec %0\n\tjnz 1b\n\t" "vzeroupper\n\t"
        : "+r"(n) :: CLOBBER);
    return (double)iters * 12 * 16 * 2 / (now() - t0) / 1e9;
}

static double best(double (*f)(long), long iters, int runs) {
    double b = 0;
    for (int r = 0; r < runs; r++) { double v = f(iters); if (v > b) b = v; }
    return b;
}

int main(int argc, char **argv) {
    int avx512 = argc > 1 && strcmp(argv[1], "avx512") == 0;   /* only run zmm code if the CPU has it */
    double ghz = best(clock_ghz, 100000000L, 7);
    double ghz_imul = best(imul_ghz, 50000000L, 5);
    double g256 = best(fma256, 50000000L, 7);
    if (avx512) {
        double g512 = best(fma512, 50000000L, 7);
        printf("{\"clock_ghz\": %.3f, \"clock_ghz_imul\": %.3f, \"fma256_gflops\": %.2f, \"fma512_gflops\": %.2f}\n",
               ghz, ghz_imul, g256, g512);
    } else {
        printf("{\"clock_ghz\": %.3f, \"clock_ghz_imul\": %.3f, \"fma256_gflops\": %.2f, \"fma512_gflops\": null}\n",
               ghz, ghz_imul, g256);
    }
    return 0;
}
