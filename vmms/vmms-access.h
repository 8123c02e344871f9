/* Who may do what: every API hands the core a caller, and the core decides once,
 * for every operation, from the operation's role (vmms-ops.h). */
#pragma once

typedef enum VmmsRole {
        VMMS_ROLE_NONE,     /* may open no call */
        VMMS_ROLE_READER,   /* Get-*, counters, events */
        VMMS_ROLE_OPERATOR, /* everything else */
} VmmsRole;
