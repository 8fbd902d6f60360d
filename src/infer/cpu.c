/* cpu.c — what this CPU lets the kernels use, asked once per process.
 *
 * tensor.c, qgemm.c, bgemm.c and forward.c each pick their kernels at run time, so that one
 * binary runs on any x86-64 (and on anything else through the portable C). The answers here
 * are facts about the CPU, not state: each is computed on first use and the same every time
 * after. Callers on hot paths keep their own copy of an answer (tensor.c) rather than call
 * across files for every vector.
 *
 * AMX is the one that costs something to ask: Linux (5.16+) hands a process the tiles' 8 KiB
 * of state only after it requests them, so the request is made the first time a prompt product
 * asks, never by processes that only decode or serve.
 */
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <string.h>

#include "infer/internal.h"

#if defined(__x86_64__)

bool infer_cpu_has_avx2(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        /* F16C is not a name every compiler's builtin knows; every AVX2 CPU has it. */
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

bool infer_cpu_has_avx512(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    }
    return cached;
}

static bool have_vnni(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512vnni");
    }
    return cached;
}

/* CPUID leaf 7's EDX (bit 25 AMX-INT8, bit 22 AMX-BF16) where the CPU has AMX tiles (bit 24)
 * and the kernel lets this process use their 8 KiB of state (Linux 5.16+ asks each process to
 * request it once; refused, the CPU's AMX is as good as absent); 0 otherwise. Read once: every
 * prompt product asks, and CPUID is slow (a VM exit under a hypervisor). */
static unsigned amx_units(void)
{
    static long long edx = -1;
    if (edx < 0) {
        unsigned a, b, c, d;
        edx = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) &&
                      syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                              18 /* XFEATURE_XTILEDATA */) == 0
                  ? (long long)d
                  : 0;
    }
    return (unsigned)edx;
}

static bool have_amx(void) { return (amx_units() >> 25) & 1; }

bool infer_have_amx_bf16(void) { return (amx_units() >> 22) & 1; }

/* The 64 bytes ldtilecfg reads (palette 1). */
typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

__attribute__((target("amx-tile"))) void infer_amx_configure(int n, const uint8_t *rows,
                                                             const uint16_t *colsb)
{
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < n; i++) {
        c.rows[i] = rows[i];
        c.colsb[i] = colsb[i];
    }
    __asm__ volatile("" : : "r"(&c) : "memory");   /* ldtilecfg reads all 64 bytes: keep every store */
    _tile_loadconfig(&c);
}

#else
bool infer_cpu_has_avx2(void) { return false; }
bool infer_cpu_has_avx512(void) { return false; }
static bool have_vnni(void) { return false; }
static bool have_amx(void) { return false; }
bool infer_have_amx_bf16(void) { return false; }
void infer_amx_configure(int n, const uint8_t *rows, const uint16_t *colsb) {}
#endif

infer_qgemm_level infer_cpu_level(void)
{
    if (!infer_cpu_has_avx2())
        return INFER_QGEMM_PORTABLE;
    if (!infer_cpu_has_avx512())
        return INFER_QGEMM_AVX2;
    if (!have_vnni())
        return INFER_QGEMM_AVX512;
    return have_amx() ? INFER_QGEMM_AMX : INFER_QGEMM_AVX512_VNNI;
}
