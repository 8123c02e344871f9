/* vmctl's verbs and parameters printed for shell completion (vmctl-complete.h). */
#include <glib.h>

#include "vmctl-complete.h"
#include "vmctl-verbs.h"

/* What a parameter's value is, for a shell to offer: NULL for free text. */
static const char *value_kind(const VmctlVerb *verb, const VmctlParam *p)
{
        if (p->type == VMCTL_PARAM_SWITCH)
                return "SWITCH";
        if (p->type == VMCTL_PARAM_STRING && g_str_has_suffix(p->name, "File"))
                return "FILE";
        if (p->type != VMCTL_PARAM_STRING || !p->positional || g_str_has_prefix(verb->name, "New-"))
                return NULL;
        /* The one verb that needs no server (Get-Help) names a verb; the others an existing VM. */
        return verb->needs_server ? "VMNAME" : "VERB";
}

int vmctl_complete_print(FILE *out)
{
        size_t n_verbs;
        const VmctlVerb *verbs = vmctl_verbs(&n_verbs);

        for (size_t i = 0; i < n_verbs; i++) {
                fputs(verbs[i].name, out);
                for (size_t j = 0; j < verbs[i].n_params; j++) {
                        const VmctlParam *p = &verbs[i].params[j];

                        fprintf(out, " -%s", p->name);
                        if (p->type == VMCTL_PARAM_CHOICE) {
                                for (size_t k = 0; p->choices[k]; k++)
                                        fprintf(out, "%c%s", k ? '|' : '=', p->choices[k]);
                        } else if (p->type == VMCTL_PARAM_BOOL) {
                                fputs("=$true|$false", out);
                        } else if (value_kind(&verbs[i], p)) {
                                fprintf(out, "=%s", value_kind(&verbs[i], p));
                        }
                }
                fputc('\n', out);
        }
        return fflush(out) == 0 ? 0 : -1;
}
