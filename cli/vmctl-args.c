/* Binds PowerShell-style parameters to a verb's table; every failure names the parameter. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmctl-args.h"

static const struct {
        const char *suffix;
        uint64_t factor;
} size_units[] = {
        {"", 1},
        {"B", 1},
        {"KB", 1ull << 10},
        {"KiB", 1ull << 10},
        {"MB", 1ull << 20},
        {"MiB", 1ull << 20},
        {"GB", 1ull << 30},
        {"GiB", 1ull << 30},
        {"TB", 1ull << 40},
        {"TiB", 1ull << 40},
};

int vmctl_parse_size(const char *text, uint64_t *ret_bytes)
{
        char *end;
        unsigned long long value;

        if (!text || !g_ascii_isdigit(text[0]))
                return -EINVAL;
        errno = 0;
        value = strtoull(text, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        for (size_t i = 0; i < G_N_ELEMENTS(size_units); i++) {
                if (g_ascii_strcasecmp(end, size_units[i].suffix) != 0)
                        continue;
                if (value > UINT64_MAX / size_units[i].factor)
                        return -ERANGE;
                *ret_bytes = value * size_units[i].factor;
                return 0;
        }
        return -EINVAL;
}

int vmctl_parse_bool(const char *text, bool *ret_value)
{
        static const char *const truths[] = {"$true", "true", "1"};
        static const char *const falsehoods[] = {"$false", "false", "0"};

        if (!text)
                return -EINVAL;
        for (size_t i = 0; i < G_N_ELEMENTS(truths); i++) {
                if (g_ascii_strcasecmp(text, truths[i]) == 0) {
                        *ret_value = true;
                        return 0;
                }
                if (g_ascii_strcasecmp(text, falsehoods[i]) == 0) {
                        *ret_value = false;
                        return 0;
                }
        }
        return -EINVAL;
}

char *vmctl_format_size(uint64_t bytes)
{
        static const struct {
                const char *suffix;
                unsigned shift;
        } units[] = {{"TB", 40}, {"GB", 30}, {"MB", 20}, {"KB", 10}};

        for (size_t i = 0; i < G_N_ELEMENTS(units); i++)
                if (bytes && bytes % (1ull << units[i].shift) == 0)
                        return g_strdup_printf("%" G_GUINT64_FORMAT "%s", bytes >> units[i].shift,
                                               units[i].suffix);
        return g_strdup_printf("%" G_GUINT64_FORMAT, bytes);
}

void vmctl_args_free(VmctlArgs *args)
{
        if (!args)
                return;
        for (size_t i = 0; args->values && i < args->n_params; i++)
                if (args->values[i].list)
                        g_ptr_array_unref(args->values[i].list);
        g_free(args->values);
        g_free(args);
}

const VmctlValue *vmctl_args_get(const VmctlArgs *args, const char *name)
{
        static const VmctlValue unset = {0};

        for (size_t i = 0; i < args->n_params; i++)
                if (strcmp(args->params[i].name, name) == 0)
                        return &args->values[i];
        g_return_val_if_reached(&unset);
}

bool vmctl_args_has(const VmctlArgs *args, const char *name)
{
        return vmctl_args_get(args, name)->set;
}

static int fail(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                *ret_error = g_strdup_vprintf(fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* A parameter is '-' (or '--') and a letter, or '-?'; '-5' is a value. */
static bool is_param_token(const char *token)
{
        if (token[0] != '-')
                return false;
        if (token[1] == '?')
                return true;
        if (token[1] == '-')
                return g_ascii_isalpha(token[2]);
        return g_ascii_isalpha(token[1]);
}

/* PowerShell's rule: an exact name wins, otherwise the prefix must match one parameter only. */
static int lookup_param(const VmctlParam *params, size_t n_params, const char *name, size_t len,
                        size_t *ret_index, char **ret_error)
{
        g_autoptr(GString) candidates = g_string_new(NULL);
        size_t matches = 0, found = 0;

        for (size_t i = 0; i < n_params; i++) {
                if (strlen(params[i].name) == len && g_ascii_strncasecmp(params[i].name, name, len) == 0) {
                        *ret_index = i;
                        return 0;
                }
        }
        for (size_t i = 0; i < n_params; i++) {
                if (g_ascii_strncasecmp(params[i].name, name, len) != 0)
                        continue;
                g_string_append_printf(candidates, "%s-%s", matches ? ", " : "", params[i].name);
                found = i;
                matches++;
        }
        if (matches == 0)
                return fail(ret_error, "unknown parameter -%.*s", (int)len, name);
        if (matches > 1)
                return fail(ret_error, "parameter -%.*s is ambiguous: it could be %s", (int)len, name,
                            candidates->str);
        *ret_index = found;
        return 0;
}

static int bind_number(const VmctlParam *p, VmctlValue *v, const char *text, char **ret_error)
{
        char *end;
        long long number;

        errno = 0;
        number = g_ascii_strtoll(text, &end, 10);
        if (text[0] == '\0' || *end != '\0' || errno == ERANGE) {
                if (p->max)
                        return fail(ret_error,
                                    "-%s expects a whole number from %" G_GUINT64_FORMAT
                                    " to %" G_GUINT64_FORMAT " (got '%s')",
                                    p->name, p->min, p->max, text);
                return fail(ret_error,
                            "-%s expects a whole number of at least %" G_GUINT64_FORMAT " (got '%s')",
                            p->name, p->min, text);
        }
        if (number < 0 || (uint64_t)number < p->min || (p->max && (uint64_t)number > p->max) ||
            (uint64_t)number > UINT32_MAX) {
                if (p->max)
                        return fail(ret_error,
                                    "-%s must be between %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT
                                    " (got %s)",
                                    p->name, p->min, p->max, text);
                return fail(ret_error, "-%s must be at least %" G_GUINT64_FORMAT " (got %s)", p->name, p->min,
                            text);
        }
        v->number = (uint64_t)number;
        return 0;
}

static int bind_size(const VmctlParam *p, VmctlValue *v, const char *text, char **ret_error)
{
        g_autofree char *min = vmctl_format_size(p->min), *max = vmctl_format_size(p->max);
        uint64_t bytes;
        int r;

        r = vmctl_parse_size(text, &bytes);
        if (r == -ERANGE)
                return fail(ret_error, "-%s is too large (got %s)", p->name, text);
        if (r < 0)
                return fail(ret_error, "-%s expects a size such as 512MB, 2GB or a byte count (got '%s')",
                            p->name, text);
        if (bytes < p->min || (p->max && bytes > p->max)) {
                if (p->max)
                        return fail(ret_error, "-%s must be between %s and %s (got %s)", p->name, min, max,
                                    text);
                return fail(ret_error, "-%s must be at least %s (got %s)", p->name, min, text);
        }
        v->number = bytes;
        return 0;
}

static int bind_choice(const VmctlParam *p, VmctlValue *v, const char *text, char **ret_error)
{
        g_autofree char *choices = g_strjoinv(", ", (char **)p->choices);

        for (size_t i = 0; p->choices[i]; i++) {
                if (g_ascii_strcasecmp(p->choices[i], text) == 0) {
                        v->text = p->choices[i];
                        return 0;
                }
        }
        return fail(ret_error, "-%s must be one of %s (got '%s')", p->name, choices, text);
}

static int bind_value(const VmctlParam *p, VmctlValue *v, const char *text, char **ret_error)
{
        int r = 0;

        v->text = text;
        switch (p->type) {
        case VMCTL_PARAM_STRING:
                if (text[0] == '\0' && !p->allow_empty)
                        return fail(ret_error, "-%s must not be empty", p->name);
                if (p->max && strlen(text) > p->max)
                        return fail(ret_error,
                                    "-%s must be at most %" G_GUINT64_FORMAT " bytes long (got %zu)", p->name,
                                    p->max, strlen(text));
                break;
        case VMCTL_PARAM_LIST:
                if (text[0] == '\0')
                        return fail(ret_error, "-%s must not be empty", p->name);
                if (!v->list)
                        v->list = g_ptr_array_new();
                g_ptr_array_add(v->list, (gpointer)text);
                break;
        case VMCTL_PARAM_CHOICE:
                r = bind_choice(p, v, text, ret_error);
                break;
        case VMCTL_PARAM_UINT:
                r = bind_number(p, v, text, ret_error);
                break;
        case VMCTL_PARAM_SIZE:
                r = bind_size(p, v, text, ret_error);
                break;
        case VMCTL_PARAM_BOOL:
        case VMCTL_PARAM_SWITCH:
                if (vmctl_parse_bool(text, &v->flag) < 0)
                        return fail(ret_error, "-%s expects $true or $false (got '%s')", p->name, text);
                break;
        }
        if (r < 0)
                return r;
        v->set = true;
        return 0;
}

static const VmctlParam *find_positional(const VmctlParam *params, size_t n_params)
{
        for (size_t i = 0; i < n_params; i++)
                if (params[i].positional)
                        return &params[i];
        return NULL;
}

static int bind_loose(VmctlArgs *args, const char *text, char **ret_error)
{
        const VmctlParam *p = find_positional(args->params, args->n_params);
        VmctlValue *v;

        if (!p)
                return fail(ret_error, "unexpected argument '%s'", text);
        v = &args->values[p - args->params];
        if (v->set && p->type != VMCTL_PARAM_LIST)
                return fail(ret_error, "unexpected argument '%s' (-%s is already given)", text, p->name);
        return bind_value(p, v, text, ret_error);
}

static int bind_named(VmctlArgs *args, int argc, char **argv, int *index, char **ret_error)
{
        const char *token = argv[*index], *name = token + (token[1] == '-' ? 2 : 1);
        const char *colon = strchr(name, ':');
        size_t len = colon ? (size_t)(colon - name) : strlen(name);
        const VmctlParam *p;
        VmctlValue *v;
        size_t i = 0;
        int r;

        r = lookup_param(args->params, args->n_params, name, len, &i, ret_error);
        if (r < 0)
                return r;
        p = &args->params[i];
        v = &args->values[i];
        if (v->set && p->type != VMCTL_PARAM_LIST)
                return fail(ret_error, "-%s is given more than once", p->name);
        if (colon)
                return bind_value(p, v, colon + 1, ret_error);
        if (p->type == VMCTL_PARAM_SWITCH) {
                v->set = v->flag = true;
                v->text = token;
                return 0;
        }
        if (*index + 1 >= argc || is_param_token(argv[*index + 1])) {
                if (p->type == VMCTL_PARAM_BOOL)
                        return fail(ret_error,
                                    "missing value for -%s (write $true or $false; quote '$true' in a shell)",
                                    p->name);
                return fail(ret_error, "missing value for -%s", p->name);
        }
        *index += 1;
        return bind_value(p, v, argv[*index], ret_error);
}

static bool is_help_token(const char *token)
{
        return strcmp(token, "-?") == 0 || g_ascii_strcasecmp(token, "-help") == 0 ||
               g_ascii_strcasecmp(token, "--help") == 0;
}

int vmctl_args_parse(const VmctlParam *params, size_t n_params, int argc, char **argv,
                     bool stop_at_positional, VmctlArgs **ret_args, int *ret_consumed, char **ret_error)
{
        g_autoptr(VmctlArgs) args = g_new0(VmctlArgs, 1);
        int consumed = argc, r;

        args->params = params;
        args->n_params = n_params;
        args->values = g_new0(VmctlValue, n_params);
        for (int i = 0; i < argc; i++) {
                if (is_help_token(argv[i])) {
                        args->help = true;
                        continue;
                }
                if (is_param_token(argv[i])) {
                        r = bind_named(args, argc, argv, &i, ret_error);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (stop_at_positional) {
                        consumed = i;
                        break;
                }
                r = bind_loose(args, argv[i], ret_error);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; !stop_at_positional && !args->help && i < n_params; i++)
                if (params[i].required && !args->values[i].set)
                        return fail(ret_error, "missing required parameter -%s", params[i].name);
        if (ret_consumed)
                *ret_consumed = consumed;
        *ret_args = g_steal_pointer(&args);
        return 0;
}
