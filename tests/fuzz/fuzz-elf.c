/* The guest image -> vmwp: the ELF loader (vmwp-elf.c) on any bytes, into a guest RAM
 * of 1 MiB that refuses loads below 64 KiB, as test-vmwp-elf.c drives it.
 *
 * Checks beyond the sanitizers: a refusal names its cause and leaves the entry point
 * alone; a load returns an entry point inside RAM, and nothing below min_gpa changes. */
#include <glib.h>

#include "fuzz.h"
#include "vmwp-elf.h"

#define RAM_BYTES (1u << 20)
#define MIN_GPA 0x10000u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t *ram;
        static const uint8_t zeros[MIN_GPA];
        g_autofree char *why = NULL;
        uint64_t entry = UINT64_MAX;
        int r;

        if (!ram)
                ram = g_malloc(RAM_BYTES);
        memset(ram, 0, RAM_BYTES);
        r = vmwp_elf_load(data, size, ram, RAM_BYTES, MIN_GPA, &entry, &why);
        if (r < 0) {
                FUZZ_CHECK(why && *why);
                FUZZ_CHECK(entry == UINT64_MAX);
        } else {
                FUZZ_CHECK(r == 0 && !why);
                FUZZ_CHECK(entry >= MIN_GPA && entry < RAM_BYTES);
        }
        FUZZ_CHECK(memcmp(ram, zeros, MIN_GPA) == 0);
        return 0;
}
