/* Loads a guest kernel ELF image into guest RAM, refusing a malformed one with a reason. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Copies every PT_LOAD segment of `image` to its physical address in `ram` and zeroes
 * the rest of its memory size. Each segment must lie inside [min_gpa, ram_bytes) and
 * the entry point inside an executable segment. On failure returns a negative errno,
 * sets *ret_error to a sentence naming what was wrong, and leaves *ret_entry alone
 * (guest RAM may hold part of the image). */
int vmwp_elf_load(const uint8_t *image, size_t image_size, uint8_t *ram, uint64_t ram_bytes, uint64_t min_gpa,
                  uint64_t *ret_entry, char **ret_error);
