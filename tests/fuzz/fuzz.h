/* What every fuzz target defines and may use. A target is built two ways (meson.build):
 * with libFuzzer (-Dfuzzing=true, clang), or with fuzz-main.c, which replays the
 * committed corpus once under ASan and UBSan in the default test suite. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise of the code under test: abort, so libFuzzer saves the input and
 * the replay fails. Never compiled out (unlike assert). */
#define FUZZ_CHECK(cond)                                                                                     \
        do {                                                                                                 \
                if (!(cond)) {                                                                               \
                        fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);        \
                        abort();                                                                             \
                }                                                                                            \
        } while (0)

/* For the harness's own bulk loops (comparing guest RAM): neither checked by ASan nor
 * traced for coverage, which would make them most of the run time. */
#ifdef __clang__
#define FUZZ_UNINSTRUMENTED __attribute__((no_sanitize("address", "coverage")))
#else
#define FUZZ_UNINSTRUMENTED __attribute__((no_sanitize("address")))
#endif

/* Log lines of the code under test are dropped: a hostile input makes many, and the
 * fuzzer's output must stay readable. A critical (a g_return_if_fail) is a bug: abort. */
static inline GLogWriterOutput fuzz_log_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields,
                                               gpointer userdata)
{
        if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
                g_log_writer_standard_streams(level, fields, n_fields, userdata);
                abort();
        }
        return G_LOG_WRITER_HANDLED;
}

/* Once per process (GLib allows one writer); each input may call it. */
static inline void fuzz_quiet_logs(void)
{
        static bool quiet;

        if (!quiet)
                g_log_set_writer_func(fuzz_log_writer, NULL, NULL);
        quiet = true;
}

/* The input, taken from the front a piece at a time; past its end everything reads as
 * zeros, so a short input is still a complete program. */
typedef struct FuzzInput {
        const uint8_t *data;
        size_t size;
} FuzzInput;

static inline size_t fuzz_take(FuzzInput *in, void *dst, size_t len)
{
        size_t n = len < in->size ? len : in->size;

        if (n > 0)
                memcpy(dst, in->data, n);
        memset((uint8_t *)dst + n, 0, len - n);
        in->data += n;
        in->size -= n;
        return n;
}

static inline uint8_t fuzz_u8(FuzzInput *in)
{
        uint8_t v;

        fuzz_take(in, &v, sizeof(v));
        return v;
}

static inline uint16_t fuzz_u16(FuzzInput *in)
{
        uint16_t v;

        fuzz_take(in, &v, sizeof(v));
        return v;
}

static inline uint32_t fuzz_u32(FuzzInput *in)
{
        uint32_t v;

        fuzz_take(in, &v, sizeof(v));
        return v;
}

static inline uint64_t fuzz_u64(FuzzInput *in)
{
        uint64_t v;

        fuzz_take(in, &v, sizeof(v));
        return v;
}
