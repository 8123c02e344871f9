/* Access: the one place a caller is judged. An API establishes who the caller is
 * (SO_PEERCRED on the unix socket, the verified client certificate on TLS, the bus's
 * word on D-Bus) and hands it here with the operation; nothing else in vmmsd decides.
 *
 * Roles are ordered: NONE < READER < OPERATOR, and an op runs when the caller's role
 * is at least op->role. A refusal is an event, so an operator can see who tried. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "vmms-access.h"
#include "vmms-manager.h"
#include "vmms-ops.h"

#define GROUPS_MAX 65536

struct VmmsAccess {
        char *operator_group;
        gid_t operator_gid;
        bool operator_group_exists;
        uid_t owner; /* vmmsd's own user: a per-user vmmsd is its user's */
        VmmsRole socket_others;
        GHashTable *subjects;        /* subject or "CN=name" → VmmsRole */
        GHashTable *migration_peers; /* subject or "CN=name" → 1: hosts that may move VMs here */
};

static void set_operator_group(VmmsAccess *a, const char *name)
{
        long size = sysconf(_SC_GETGR_R_SIZE_MAX);
        size_t buflen = size > 0 ? (size_t)size * 4 : 16384;
        g_autofree char *buf = g_malloc(buflen);
        struct group gr, *grp = NULL;

        g_free(a->operator_group);
        a->operator_group = g_strdup(name);
        a->operator_group_exists = getgrnam_r(name, &gr, buf, buflen, &grp) == 0 && grp;
        a->operator_gid = a->operator_group_exists ? gr.gr_gid : (gid_t)-1;
}

VmmsAccess *vmms_access_new(const char *operator_group, VmmsRole socket_others)
{
        VmmsAccess *a = g_new0(VmmsAccess, 1);

        set_operator_group(a, operator_group ? operator_group : VMMS_ACCESS_DEFAULT_GROUP);
        a->owner = geteuid();
        a->socket_others = socket_others;
        a->subjects = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        a->migration_peers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        return a;
}

void vmms_access_free(VmmsAccess *a)
{
        if (!a)
                return;
        if (a->subjects)
                g_hash_table_unref(a->subjects);
        if (a->migration_peers)
                g_hash_table_unref(a->migration_peers);
        g_free(a->operator_group);
        g_free(a);
}

const char *vmms_access_operator_group(const VmmsAccess *a)
{
        return a->operator_group;
}

bool vmms_access_operator_gid(const VmmsAccess *a, gid_t *ret_gid)
{
        if (!a->operator_group_exists)
                return false;
        *ret_gid = a->operator_gid;
        return true;
}

void vmms_access_map_subject(VmmsAccess *a, const char *subject, VmmsRole role)
{
        VmmsRole old = GPOINTER_TO_INT(g_hash_table_lookup(a->subjects, subject));

        g_hash_table_replace(a->subjects, g_strdup(subject), GINT_TO_POINTER(MAX(old, role)));
}

/* Each subject of [access] `key` into `table` with `role`. */
static int load_subjects(GHashTable *table, GKeyFile *kf, const char *key, VmmsRole role, char **ret_error)
{
        g_auto(GStrv) subjects = NULL;
        gsize n = 0;

        if (!g_key_file_has_key(kf, "access", key, NULL))
                return 0;
        subjects = g_key_file_get_string_list(kf, "access", key, &n, NULL);
        for (gsize i = 0; i < n; i++) {
                const char *s = g_strstrip(subjects[i]);
                VmmsRole old;

                if (!*s)
                        continue;
                if (!strchr(s, '=')) {
                        *ret_error = g_strdup_printf("[access] %s: '%s' is not a certificate subject "
                                                     "(write CN=name or the whole subject)",
                                                     key, s);
                        return -EINVAL;
                }
                old = GPOINTER_TO_INT(g_hash_table_lookup(table, s));
                g_hash_table_replace(table, g_strdup(s), GINT_TO_POINTER(MAX(old, role)));
        }
        return 0;
}

int vmms_access_load(VmmsAccess *a, GKeyFile *kf, char **ret_error)
{
        g_autofree char *group = g_key_file_get_string(kf, "access", "operator-group", NULL);
        int r;

        if (group) {
                g_strstrip(group);
                if (!*group) {
                        *ret_error = g_strdup("[access] operator-group is empty");
                        return -EINVAL;
                }
                set_operator_group(a, group);
        }
        r = load_subjects(a->subjects, kf, "operators", VMMS_ROLE_OPERATOR, ret_error);
        if (r < 0)
                return r;
        r = load_subjects(a->subjects, kf, "readers", VMMS_ROLE_READER, ret_error);
        if (r < 0)
                return r;
        return load_subjects(a->migration_peers, kf, "migration-peers", VMMS_ROLE_READER, ret_error);
}

/* Whether `uid` (with the caller's primary `gid`) is in the operator group, as a member
 * listed in /etc/group or by its primary group. */
static bool in_operator_group(VmmsAccess *a, uid_t uid, gid_t gid)
{
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        size_t buflen = size > 0 ? (size_t)size * 4 : 16384;
        g_autofree char *buf = g_malloc(buflen);
        g_autofree gid_t *groups = NULL;
        struct passwd pw, *pwp = NULL;
        int n = 64;

        if (!a->operator_group_exists)
                return false;
        if (gid == a->operator_gid)
                return true;
        if (getpwuid_r(uid, &pw, buf, buflen, &pwp) != 0 || !pwp)
                return false;
        for (;;) {
                int want = n;

                groups = g_renew(gid_t, groups, n);
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &want) >= 0) {
                        n = want;
                        break;
                }
                if (want <= n || want > GROUPS_MAX)
                        return false;
                n = want;
        }
        for (int i = 0; i < n; i++)
                if (groups[i] == a->operator_gid)
                        return true;
        return false;
}

/* The role `table` gives the caller's whole subject or its "CN=name". */
static VmmsRole subject_lookup(GHashTable *table, const VmmsCaller *caller)
{
        g_autofree char *cn = NULL;
        VmmsRole by_subject, by_cn = VMMS_ROLE_NONE;

        if (!caller->subject)
                return VMMS_ROLE_NONE;
        by_subject = GPOINTER_TO_INT(g_hash_table_lookup(table, caller->subject));
        if (caller->common_name) {
                cn = g_strconcat("CN=", caller->common_name, NULL);
                by_cn = GPOINTER_TO_INT(g_hash_table_lookup(table, cn));
        }
        return MAX(by_subject, by_cn);
}

static VmmsRole subject_role(VmmsAccess *a, const VmmsCaller *caller)
{
        return subject_lookup(a->subjects, caller);
}

bool vmms_access_migration_peer(VmmsAccess *a, const VmmsCaller *caller)
{
        return caller->transport == VMMS_TRANSPORT_TLS &&
               subject_lookup(a->migration_peers, caller) != VMMS_ROLE_NONE;
}

char *vmms_subject_common_name(const char *subject)
{
        const char *p = subject;

        while (p && *p) {
                bool is_cn = g_ascii_strncasecmp(p, "CN=", 3) == 0;
                g_autoptr(GString) value = g_string_new(NULL);

                p = strchr(p, '=');
                if (!p)
                        return NULL;
                for (p++; *p && *p != ',' && *p != '+'; p++) {
                        if (*p == '\\' && g_ascii_isxdigit(p[1]) && g_ascii_isxdigit(p[2])) {
                                g_string_append_c(value, (char)(g_ascii_xdigit_value(p[1]) * 16 +
                                                                g_ascii_xdigit_value(p[2])));
                                p += 2;
                        } else if (*p == '\\' && p[1]) {
                                g_string_append_c(value, *++p);
                        } else {
                                g_string_append_c(value, *p);
                        }
                }
                if (is_cn)
                        return g_string_free(g_steal_pointer(&value), FALSE);
                if (*p)
                        p++;
        }
        return NULL;
}

VmmsRole vmms_access_role(VmmsAccess *a, const VmmsCaller *caller)
{
        switch (caller->transport) {
        case VMMS_TRANSPORT_SELF:
                return VMMS_ROLE_OPERATOR;
        case VMMS_TRANSPORT_UNIX:
        case VMMS_TRANSPORT_DBUS:
                if (caller->uid == 0 || caller->uid == a->owner ||
                    in_operator_group(a, caller->uid, caller->gid))
                        return VMMS_ROLE_OPERATOR;
                return caller->transport == VMMS_TRANSPORT_UNIX ? a->socket_others : VMMS_ROLE_READER;
        case VMMS_TRANSPORT_TLS:
                return subject_role(a, caller);
        case VMMS_TRANSPORT_LOOPBACK:
                /* Any local user can connect to a loopback port: reading, never more. */
                return VMMS_ROLE_READER;
        case VMMS_TRANSPORT_UNKNOWN:
        default:
                return VMMS_ROLE_NONE;
        }
}

static const char *role_name(VmmsRole role)
{
        return role == VMMS_ROLE_OPERATOR ? "operator" : role == VMMS_ROLE_READER ? "reader" : "no";
}

/* Who holds `role` on the caller's transport: the remedy a refusal names. */
static char *holders(VmmsAccess *a, const VmmsCaller *caller, VmmsRole role)
{
        if (caller->transport == VMMS_TRANSPORT_TLS)
                return g_strdup(role == VMMS_ROLE_OPERATOR
                                        ? "a client certificate listed in [access] operators"
                                        : "a client certificate listed in [access] readers or operators");
        if (caller->transport == VMMS_TRANSPORT_UNKNOWN)
                return g_strdup("a caller vmmsd can identify");
        if (caller->transport == VMMS_TRANSPORT_LOOPBACK)
                return g_strdup("a caller on the unix socket, D-Bus or TLS");
        if (role == VMMS_ROLE_OPERATOR)
                return g_strdup_printf("root or group %s", a->operator_group);
        return g_strdup_printf("root or group %s; other local users only when the socket is shared "
                               "(vmmsd --socket-mode 0666)",
                               a->operator_group);
}

bool vmms_access_check(VmmsAccess *a, const VmmsCaller *caller, const VmmsOp *op, VmmsError *error)
{
        g_autofree char *who = NULL;

        if (vmms_access_role(a, caller) >= op->role)
                return true;
        who = holders(a, caller, op->role);
        vmms_error_set(error, VMMS_ERROR_PERMISSION_DENIED, "%s may not %s: it needs the %s role (%s)",
                       caller->description, op->name, role_name(op->role), who);
        return false;
}

void vmms_access_dispatch(VmmsAccess *a, VmmsManager *m, const VmmsOp *op, const ProtobufCMessage *request,
                          VmmsCall *call)
{
        VmmsError error = {0};

        if (vmms_access_check(a, vmms_call_caller(call), op, &error)) {
                op->run(m, request, call);
                return;
        }
        vmms_manager_record_host_event(m, "access-denied", error.message);
        vmms_call_fail_with(call, &error);
        vmms_error_clear(&error);
}
