/* Error values of the management service. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "vmms-error.h"
#include "vmms-limits.h"

/* Keeps the first error: the cause, not what followed from it. */
void vmms_error_set(VmmsError *error, VmmsErrorCode code, const char *fmt, ...)
{
        va_list ap;

        if (!error || error->code != VMMS_OK)
                return;
        error->code = code;
        va_start(ap, fmt);
        error->message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
}

void vmms_error_clear(VmmsError *error)
{
        g_clear_pointer(&error->message, g_free);
        error->code = VMMS_OK;
}

const char *vmms_error_code_name(VmmsErrorCode code)
{
        static const char *const names[] = {
                [VMMS_OK] = "OK",
                [VMMS_ERROR_INVALID_ARGUMENT] = "InvalidArgument",
                [VMMS_ERROR_NOT_FOUND] = "NotFound",
                [VMMS_ERROR_ALREADY_EXISTS] = "AlreadyExists",
                [VMMS_ERROR_FAILED_PRECONDITION] = "NotAllowed",
                [VMMS_ERROR_RESOURCE_EXHAUSTED] = "ResourceExhausted",
                [VMMS_ERROR_UNAVAILABLE] = "Unavailable",
                [VMMS_ERROR_INTERNAL] = "Internal",
                [VMMS_ERROR_PERMISSION_DENIED] = "AccessDenied",
        };
        return code < G_N_ELEMENTS(names) ? names[code] : "Internal";
}

VmmsErrorCode vmms_error_code_from_errno(int negative_errno)
{
        switch (-negative_errno) {
        case 0:
                return VMMS_OK;
        case EINVAL:
        case ERANGE:
                return VMMS_ERROR_INVALID_ARGUMENT;
        case ENOENT:
                return VMMS_ERROR_NOT_FOUND;
        case EEXIST:
                return VMMS_ERROR_ALREADY_EXISTS;
        case EBUSY:
        case EPERM:
        case EOPNOTSUPP:
                return VMMS_ERROR_FAILED_PRECONDITION;
        case ENOSPC:
        case ENOMEM:
        case EDQUOT:
                return VMMS_ERROR_RESOURCE_EXHAUSTED;
        case ECONNRESET:
        case ENOTCONN:
        case ECONNREFUSED:
        case ETIMEDOUT:
        case EPIPE:
                return VMMS_ERROR_UNAVAILABLE;
        case EACCES:
                return VMMS_ERROR_PERMISSION_DENIED;
        default:
                return VMMS_ERROR_INTERNAL;
        }
}

char *vmms_format_bytes(uint64_t bytes)
{
        char text[48];

        vmms_limit_format_size(bytes, false, text, sizeof(text));
        return g_strdup(text);
}

bool vmms_unichar_hidden(gunichar c, const char *allowed)
{
        switch (g_unichar_type(c)) {
        case G_UNICODE_CONTROL:
                return !(c < 0x80 && allowed && strchr(allowed, (int)c));
        case G_UNICODE_FORMAT:
        case G_UNICODE_LINE_SEPARATOR:
        case G_UNICODE_PARAGRAPH_SEPARATOR:
        case G_UNICODE_SURROGATE:
                return true;
        default:
                return (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe;
        }
}

#define QUOTE_MAX_CHARS 64

char *vmms_quote(const char *text)
{
        g_autofree char *valid = g_utf8_make_valid(text ? text : "", -1);
        GString *out = g_string_new(NULL);
        glong n = 0;

        for (const char *p = valid; *p && n < QUOTE_MAX_CHARS; p = g_utf8_next_char(p), n++) {
                gunichar c = g_utf8_get_char(p);

                g_string_append_unichar(out, vmms_unichar_hidden(c, NULL) ? 0xfffd : c);
        }
        if (g_utf8_strlen(valid, -1) > QUOTE_MAX_CHARS)
                g_string_append(out, "…");
        return g_string_free(out, FALSE);
}
