/* The freestanding C library of the vmms guest: the memory and string functions the
 * compiler may call, and a number parser. */
#include "guest.h"

/* Word stores where possible: every guest store is slow under the Unicorn engine. */
typedef uint64_t __attribute__((may_alias)) guest_word_t;

void *memset(void *dst, int c, size_t n)
{
        unsigned char *d = dst;
        uint64_t pattern = 0x0101010101010101ull * (unsigned char)c;

        for (; n && ((uintptr_t)d & 7); n--)
                *d++ = (unsigned char)c;
        for (; n >= 8; n -= 8, d += 8)
                *(guest_word_t *)d = pattern;
        while (n--)
                *d++ = (unsigned char)c;
        return dst;
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
        unsigned char *d = dst;
        const unsigned char *s = src;

        if ((((uintptr_t)d ^ (uintptr_t)s) & 7) == 0) {
                for (; n && ((uintptr_t)d & 7); n--)
                        *d++ = *s++;
                for (; n >= 8; n -= 8, d += 8, s += 8)
                        *(guest_word_t *)d = *(const guest_word_t *)s;
        }
        while (n--)
                *d++ = *s++;
        return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
        unsigned char *d = dst;
        const unsigned char *s = src;

        if (d <= s || d >= s + n)
                return memcpy(dst, src, n);
        while (n--)
                d[n] = s[n];
        return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
        const unsigned char *x = a, *y = b;

        for (; n; n--, x++, y++)
                if (*x != *y)
                        return *x < *y ? -1 : 1;
        return 0;
}

size_t strlen(const char *s)
{
        size_t n = 0;

        while (s[n])
                n++;
        return n;
}

size_t strnlen(const char *s, size_t max)
{
        size_t n = 0;

        while (n < max && s[n])
                n++;
        return n;
}

/* Decimal only, no sign, no leading or trailing junk, no overflow. */
int guest_parse_u64(const char *s, size_t len, uint64_t *ret_value)
{
        uint64_t v = 0;

        if (len == 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                unsigned d = (unsigned)(s[i] - '0');

                if (d > 9)
                        return -EINVAL;
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret_value = v;
        return 0;
}
