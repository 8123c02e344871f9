/* Who may do what: every API hands the core a caller, and the core decides once,
 * for every operation, from the operation's role (vmms-ops.h). */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "vmms-call.h"
#include "vmms-error.h"

typedef enum VmmsRole {
        VMMS_ROLE_NONE,     /* may open no call */
        VMMS_ROLE_READER,   /* Get-*, counters, events */
        VMMS_ROLE_OPERATOR, /* everything else */
} VmmsRole;

#define VMMS_ACCESS_DEFAULT_GROUP "vmms"

typedef struct VmmsManager VmmsManager;
typedef struct VmmsAccess VmmsAccess;

/* The policy. Local callers (unix socket, D-Bus) are operators when they are root,
 * vmmsd's own user or in `operator_group` (NULL: "vmms"; a group that does not exist
 * makes nobody an operator by group). Other local users on the unix socket get
 * `socket_others` (READER or NONE); on D-Bus they are readers, as the bus policy
 * (api/org.vmms.Manager1.conf) lets anyone read. A TLS client's role comes only from
 * the subject map; a certificate not in it gets NONE. A plain HTTP client on a loopback
 * address (the metrics exporter) could be any local user: READER. */
VmmsAccess *vmms_access_new(const char *operator_group, VmmsRole socket_others);
void vmms_access_free(VmmsAccess *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsAccess, vmms_access_free)

/* Maps a certificate to a role: `subject` is either a whole subject as TLS reports it
 * (RFC 2253, "CN=ops1,O=Example") or "CN=<name>", which matches any subject with that
 * common name. A subject mapped twice keeps the higher role. */
void vmms_access_map_subject(VmmsAccess *a, const char *subject, VmmsRole role);
/* Reads vmms.conf's [access] group: operator-group, operators, readers, migration-peers (lists
 * separated by ';'). Missing keys keep what is set. -EINVAL with a message naming the
 * key on a malformed value. */
int vmms_access_load(VmmsAccess *a, GKeyFile *kf, char **ret_error);
const char *vmms_access_operator_group(const VmmsAccess *a);
/* The operator group's gid; false if the group does not exist. */
bool vmms_access_operator_gid(const VmmsAccess *a, gid_t *ret_gid);

VmmsRole vmms_access_role(VmmsAccess *a, const VmmsCaller *caller);
/* Whether `caller` (a verified TLS client certificate) is a host listed in [access]
 * migration-peers, which may move VMs to this one. Roles play no part. */
bool vmms_access_migration_peer(VmmsAccess *a, const VmmsCaller *caller);
/* The value of the first CN in an RFC 4514 subject ("CN=ops1,O=Example"), unescaped;
 * NULL if it has none. */
char *vmms_subject_common_name(const char *subject);
/* Whether `caller` may run `op`; if not, a PERMISSION_DENIED error naming the caller,
 * the operation and the role it needs ("uid 1000 may not StartVm: it needs the
 * operator role (root or group vmms)"). */
bool vmms_access_check(VmmsAccess *a, const VmmsCaller *caller, const VmmsOp *op, VmmsError *error);
/* The one entry point of every API: runs `op` for the call's caller, or ends the call
 * with PERMISSION_DENIED and records the refusal as an event. `request` is valid only
 * during this call, as for op->run. */
void vmms_access_dispatch(VmmsAccess *a, VmmsManager *m, const VmmsOp *op, const ProtobufCMessage *request,
                          VmmsCall *call);
