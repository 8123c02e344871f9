/* The guest console: a small printf that buffers one line per VP and sends each
 * complete line with a single CONSOLE_WRITE hypercall. */
#include "guest.h"
#include "hypercall.h"

#define GUEST_CONSOLE_LINE_MAX 512

/* Lines from different VPs never interleave because each line is one hypercall and
 * each VP has its own buffer: no lock shared by VPs is needed (and under the Unicorn
 * engine, lock-prefixed instructions are not atomic between VPs; see spinlock.c). */
struct guest_console_line {
        uint32_t len;
        bool continued; /* flushed before its newline: the rest gets no new prefix */
        char buf[GUEST_CONSOLE_LINE_MAX];
};

static struct guest_console_line guest_console_lines[HV_MAX_VPS_PER_PARTITION];

static void guest_console_send(const char *buf, uint64_t len)
{
        while (len > 0) {
                uint64_t chunk = len < HV_CONSOLE_WRITE_MAX ? len : HV_CONSOLE_WRITE_MAX;
                int64_t r = guest_hv_console_write(buf, chunk);

                /* A refusing or broken console must not hang the guest. */
                if (r <= 0 || (uint64_t)r > chunk)
                        return;
                buf += r;
                len -= (uint64_t)r;
        }
}

void guest_console_write_raw(const char *s)
{
        guest_console_send(s, strlen(s));
}

static void guest_console_flush(struct guest_console_line *line)
{
        guest_console_send(line->buf, line->len);
        line->len = 0;
}

static void guest_console_start_line(struct guest_console_line *line, uint32_t vp)
{
        char prefix[16];
        int n = 0;

        if (vp == 0 || line->continued)
                return;
        /* "vpN: " without recursing into the formatter. */
        prefix[n++] = ' ';
        prefix[n++] = ':';
        do {
                prefix[n++] = (char)('0' + vp % 10);
                vp /= 10;
        } while (vp);
        prefix[n++] = 'p';
        prefix[n++] = 'v';
        while (n > 0)
                line->buf[line->len++] = prefix[--n];
}

static void guest_console_append(struct guest_console_line *line, char c)
{
        if (line->len == 0)
                guest_console_start_line(line, (uint32_t)(line - guest_console_lines));
        line->buf[line->len++] = c;
        if (c == '\n') {
                guest_console_flush(line);
                line->continued = false;
        } else if (line->len == GUEST_CONSOLE_LINE_MAX) {
                guest_console_flush(line);
                line->continued = true;
        }
}

struct guest_format_spec {
        bool left;
        bool zero;
        int width;
        int precision; /* -1: none */
};

static void guest_format_pad(struct guest_console_line *line, int n, char c)
{
        while (n-- > 0)
                guest_console_append(line, c);
}

static void guest_format_string(struct guest_console_line *line, const char *s,
                                const struct guest_format_spec *spec)
{
        size_t len;

        if (!s)
                s = "(null)";
        len = spec->precision >= 0 ? strnlen(s, (size_t)spec->precision) : strlen(s);
        if (!spec->left)
                guest_format_pad(line, spec->width - (int)len, ' ');
        for (size_t i = 0; i < len; i++)
                guest_console_append(line, s[i]);
        if (spec->left)
                guest_format_pad(line, spec->width - (int)len, ' ');
}

static void guest_format_number(struct guest_console_line *line, uint64_t v, bool negative, unsigned base,
                                const char *prefix, const struct guest_format_spec *spec)
{
        static const char digits[] = "0123456789abcdef";
        char tmp[24];
        int n = 0, len;
        size_t prefix_len = strlen(prefix);

        do {
                tmp[n++] = digits[v % base];
                v /= base;
        } while (v);
        len = n + (int)prefix_len + (negative ? 1 : 0);
        if (!spec->left && !spec->zero)
                guest_format_pad(line, spec->width - len, ' ');
        if (negative)
                guest_console_append(line, '-');
        for (size_t i = 0; i < prefix_len; i++)
                guest_console_append(line, prefix[i]);
        if (!spec->left && spec->zero)
                guest_format_pad(line, spec->width - len, '0');
        while (n > 0)
                guest_console_append(line, tmp[--n]);
        if (spec->left)
                guest_format_pad(line, spec->width - len, ' ');
}

static int guest_format_int(const char **fmt, va_list *ap)
{
        int v = 0;

        if (**fmt == '*') {
                (*fmt)++;
                return va_arg(*ap, int);
        }
        while (**fmt >= '0' && **fmt <= '9')
                v = v * 10 + (*(*fmt)++ - '0');
        return v;
}

/* %s %c %d %i %u %x %p %%, with flags '-' '0', width, precision (strings) and the
 * length modifiers l, ll, z. */
static void guest_format(struct guest_console_line *line, const char *fmt, va_list ap_in)
{
        va_list ap;

        va_copy(ap, ap_in);
        while (*fmt) {
                struct guest_format_spec spec = {.precision = -1};
                int longs = 0;
                char c = *fmt++;

                if (c != '%') {
                        guest_console_append(line, c);
                        continue;
                }
                for (;; fmt++) {
                        if (*fmt == '-')
                                spec.left = true;
                        else if (*fmt == '0')
                                spec.zero = true;
                        else
                                break;
                }
                spec.width = guest_format_int(&fmt, &ap);
                if (*fmt == '.') {
                        fmt++;
                        spec.precision = guest_format_int(&fmt, &ap);
                }
                while (*fmt == 'l' || *fmt == 'z') {
                        longs++;
                        fmt++;
                }
                switch (c = *fmt++) {
                case 'd':
                case 'i': {
                        int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);

                        guest_format_number(line, v < 0 ? -(uint64_t)v : (uint64_t)v, v < 0, 10, "", &spec);
                        break;
                }
                case 'u':
                case 'x': {
                        uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);

                        guest_format_number(line, v, false, c == 'u' ? 10 : 16, "", &spec);
                        break;
                }
                case 'p':
                        guest_format_number(line, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, "0x",
                                            &spec);
                        break;
                case 's':
                        guest_format_string(line, va_arg(ap, const char *), &spec);
                        break;
                case 'c':
                        guest_console_append(line, (char)va_arg(ap, int));
                        break;
                case '%':
                        guest_console_append(line, '%');
                        break;
                case '\0':
                        fmt--;
                        break;
                default: /* show what was not understood rather than drop it */
                        guest_console_append(line, '%');
                        guest_console_append(line, c);
                        break;
                }
        }
        va_end(ap);
}

void guest_vprintf(const char *fmt, va_list ap)
{
        uint32_t vp = guest_vp_index();

        if (vp >= HV_MAX_VPS_PER_PARTITION) {
                guest_console_write_raw(fmt);
                return;
        }
        guest_format(&guest_console_lines[vp], fmt, ap);
}

void guest_printf(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        guest_vprintf(fmt, ap);
        va_end(ap);
}

void guest_assert_failed(const char *expr, const char *file, int line)
{
        guest_printf("vmms-guest: assertion failed: %s (%s:%d)\n", expr, file, line);
        guest_hv_halt(GUEST_HALT_ASSERT);
}
