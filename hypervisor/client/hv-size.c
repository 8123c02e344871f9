/* Parses byte sizes with Hyper-V's binary units. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <strings.h>

#include "hv-size.h"

static const struct {
        const char *suffix;
        uint64_t factor;
} size_units[] = {
        {"", 1},
        {"B", 1},
        {"KB", 1ull << 10},
        {"KiB", 1ull << 10},
        {"K", 1ull << 10},
        {"MB", 1ull << 20},
        {"MiB", 1ull << 20},
        {"M", 1ull << 20},
        {"GB", 1ull << 30},
        {"GiB", 1ull << 30},
        {"G", 1ull << 30},
        {"TB", 1ull << 40},
        {"TiB", 1ull << 40},
        {"T", 1ull << 40},
};

int hv_size_parse(const char *text, uint64_t *ret_bytes)
{
        char *end;
        unsigned long long value;

        if (!text || !isdigit((unsigned char)text[0]))
                return -EINVAL;
        errno = 0;
        value = strtoull(text, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        for (size_t i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
                if (strcasecmp(end, size_units[i].suffix) != 0)
                        continue;
                if (value > UINT64_MAX / size_units[i].factor)
                        return -ERANGE;
                *ret_bytes = value * size_units[i].factor;
                return 0;
        }
        return -EINVAL;
}
