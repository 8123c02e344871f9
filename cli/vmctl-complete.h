/* `vmctl --complete`: vmctl's grammar as data, for shell completion generated from the
 * same tables the parser binds against (data/vmctl.bash-completion reads it). */
#pragma once

#include <stdio.h>

/* One line per verb: the verb, then each parameter as -Name, followed by what its value
 * is: =a|b|c (a choice or a boolean), =SWITCH (no value), =FILE, =VMNAME (an existing
 * VM) or =VERB; nothing for free text. Returns 0, or -1 if out cannot be written. */
int vmctl_complete_print(FILE *out);
