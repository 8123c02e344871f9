/* Byte sizes as operators write them: 512MB, 2GB, 1GiB, 4096 (Hyper-V's MB is MiB). */
#pragma once

#include <stdint.h>

int hv_size_parse(const char *text, uint64_t *ret_bytes);
