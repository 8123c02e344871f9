/* The management service's error contract: a code every API maps to its own (gRPC
 * status, D-Bus error name) and a message naming what was wrong. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum VmmsErrorCode {
        VMMS_OK = 0,
        VMMS_ERROR_INVALID_ARGUMENT,
        VMMS_ERROR_NOT_FOUND,
        VMMS_ERROR_ALREADY_EXISTS,
        VMMS_ERROR_FAILED_PRECONDITION, /* not allowed in the VM's state, or busy */
        VMMS_ERROR_RESOURCE_EXHAUSTED,  /* pool or reservation capacity */
        VMMS_ERROR_UNAVAILABLE,         /* hvd or the worker cannot be reached */
        VMMS_ERROR_INTERNAL,
        VMMS_ERROR_PERMISSION_DENIED, /* the caller's role does not allow the operation */
} VmmsErrorCode;

typedef struct VmmsError {
        VmmsErrorCode code;
        char *message;
} VmmsError;

void vmms_error_set(VmmsError *error, VmmsErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
void vmms_error_clear(VmmsError *error);
const char *vmms_error_code_name(VmmsErrorCode code);
/* Text from a client, fit to quote in a message: at most 64 characters (then "…"),
 * invalid UTF-8 and control or format characters shown as U+FFFD. */
char *vmms_quote(const char *text);

/* Whether a character may not appear in a name or note: controls (but those in
 * `allowed`), format characters such as U+202E RIGHT-TO-LEFT OVERRIDE, line and
 * paragraph separators, surrogates and noncharacters. */
bool vmms_unichar_hidden(gunichar c, const char *allowed);

/* A size as people write it: "512 KB", "64 MB", "1.5 GB" (binary units). */
char *vmms_format_bytes(uint64_t bytes);

/* The one map from the internal contract (a negative errno) to an error code. */
VmmsErrorCode vmms_error_code_from_errno(int negative_errno);
