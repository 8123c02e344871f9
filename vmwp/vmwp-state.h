/* Device state for Save-VM (and migration): little-endian fields appended to a
 * GByteArray, read back by a reader that refuses to run past its end. A saved file is
 * untrusted, so every read is bounded and every value is checked by its user. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline void vmwp_state_put_u32(GByteArray *out, uint32_t v)
{
        uint32_t le = GUINT32_TO_LE(v);

        g_byte_array_append(out, (const guint8 *)&le, sizeof(le));
}

static inline void vmwp_state_put_u64(GByteArray *out, uint64_t v)
{
        uint64_t le = GUINT64_TO_LE(v);

        g_byte_array_append(out, (const guint8 *)&le, sizeof(le));
}

/* A length (u32) and the bytes. */
static inline void vmwp_state_put_blob(GByteArray *out, const void *data, uint32_t len)
{
        vmwp_state_put_u32(out, len);
        g_byte_array_append(out, data, len);
}

typedef struct VmwpStateReader {
        const uint8_t *data;
        size_t len;
        size_t pos;
        bool failed; /* a read ran past the end: every later read fails too */
} VmwpStateReader;

static inline VmwpStateReader vmwp_state_reader(const uint8_t *data, size_t len)
{
        return (VmwpStateReader){.data = data, .len = len};
}

static inline const uint8_t *vmwp_state_take(VmwpStateReader *r, size_t n)
{
        const uint8_t *p;

        if (r->failed || n > r->len - r->pos) {
                r->failed = true;
                return NULL;
        }
        p = r->data + r->pos;
        r->pos += n;
        return p;
}

static inline uint32_t vmwp_state_get_u32(VmwpStateReader *r)
{
        const uint8_t *p = vmwp_state_take(r, 4);
        uint32_t v = 0;

        if (p)
                memcpy(&v, p, 4);
        return GUINT32_FROM_LE(v);
}

static inline uint64_t vmwp_state_get_u64(VmwpStateReader *r)
{
        const uint8_t *p = vmwp_state_take(r, 8);
        uint64_t v = 0;

        if (p)
                memcpy(&v, p, 8);
        return GUINT64_FROM_LE(v);
}

/* A blob of at most `max` bytes; NULL (and *ret_len 0) when it does not fit. */
static inline const uint8_t *vmwp_state_get_blob(VmwpStateReader *r, uint32_t max, uint32_t *ret_len)
{
        uint32_t len = vmwp_state_get_u32(r);
        const uint8_t *p = len <= max ? vmwp_state_take(r, len) : NULL;

        if (!p)
                r->failed = true;
        *ret_len = p ? len : 0;
        return p;
}

/* Whole and used up: no read failed and nothing is left over. */
static inline bool vmwp_state_done(const VmwpStateReader *r)
{
        return !r->failed && r->pos == r->len;
}
