/* Access is judged once, in the core: a table of callers (unix socket, D-Bus, TLS, none)
 * against operations of both roles, each allowed or refused with the message that names
 * the caller, the operation and who holds the role. */
#include <errno.h>
#include <glib.h>
#include <grp.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "vmms-access.h"
#include "vmms-ops.h"

#define OTHER_UID 4243
#define MEMBER_UID 4242

/* A group that exists here stands in for "vmms"; its gid is a member's primary group. */
static const char *operator_group(gid_t *ret_gid)
{
        static const char *const candidates[] = {"daemon", "bin", "sys", "adm", "users", "nogroup"};

        for (size_t i = 0; i < G_N_ELEMENTS(candidates); i++) {
                struct group *gr = getgrnam(candidates[i]);

                if (gr && gr->gr_gid != 0) {
                        *ret_gid = gr->gr_gid;
                        return candidates[i];
                }
        }
        return NULL;
}

typedef enum CallerKind {
        ROOT,
        GROUP_MEMBER,
        OTHER_UID_,
        DBUS_OTHER,
        DBUS_MEMBER,
        TLS_OPERATOR,
        TLS_READER,
        TLS_UNKNOWN,
        TLS_NO_CERT,
        UNIDENTIFIED,
        SELF,
} CallerKind;

static void make_caller(CallerKind kind, gid_t group, VmmsCaller *ret)
{
        switch (kind) {
        case ROOT:
                vmms_caller_init_unix(ret, 0, 0);
                break;
        case GROUP_MEMBER:
                vmms_caller_init_unix(ret, MEMBER_UID, group);
                break;
        case OTHER_UID_:
                vmms_caller_init_unix(ret, OTHER_UID, OTHER_UID);
                break;
        case DBUS_OTHER:
                vmms_caller_init_dbus(ret, OTHER_UID, OTHER_UID);
                break;
        case DBUS_MEMBER:
                vmms_caller_init_dbus(ret, MEMBER_UID, group);
                break;
        case TLS_OPERATOR: /* mapped by its CN */
                vmms_caller_init_tls(ret, "CN=ops1,O=vmms test", "ops1");
                break;
        case TLS_READER: /* mapped by its whole subject */
                vmms_caller_init_tls(ret, "CN=monitor,O=vmms test", "monitor");
                break;
        case TLS_UNKNOWN:
                vmms_caller_init_tls(ret, "CN=stranger,O=vmms test", "stranger");
                break;
        case TLS_NO_CERT:
                vmms_caller_init_tls(ret, NULL, NULL);
                break;
        case UNIDENTIFIED:
                vmms_caller_init_unknown(ret, "ipv4:10.0.0.1:5000");
                break;
        case SELF:
                vmms_caller_init_self(ret);
                break;
        }
}

typedef struct Case {
        CallerKind caller;
        bool shared_socket; /* --socket-mode 0666: other local users read */
        const char *op;
        const char *refusal; /* NULL: allowed; "%G" stands for the operator group */
} Case;

static const Case cases[] = {
        {ROOT, false, "StartVm", NULL},
        {ROOT, false, "RemoveVm", NULL},
        {ROOT, false, "GetVm", NULL},
        {GROUP_MEMBER, false, "StartVm", NULL},
        {GROUP_MEMBER, false, "CreateVm", NULL},
        {GROUP_MEMBER, false, "WatchEvents", NULL},
        {OTHER_UID_, true, "GetVm", NULL},
        {OTHER_UID_, true, "ListEvents", NULL},
        {OTHER_UID_, true, "StartVm",
         "uid 4243 may not StartVm: it needs the operator role (root or group %G)"},
        {OTHER_UID_, true, "RemoveVm",
         "uid 4243 may not RemoveVm: it needs the operator role (root or group %G)"},
        {OTHER_UID_, false, "GetVm",
         "uid 4243 may not GetVm: it needs the reader role (root or group %G; other local users only when "
         "the "
         "socket is shared (vmmsd --socket-mode 0666))"},
        {DBUS_OTHER, false, "GetVm", NULL},
        {DBUS_OTHER, false, "StartVm",
         "uid 4243 may not StartVm: it needs the operator role (root or group %G)"},
        {DBUS_MEMBER, false, "StartVm", NULL},
        {TLS_OPERATOR, false, "StartVm", NULL},
        {TLS_OPERATOR, false, "GetVm", NULL},
        {TLS_READER, false, "GetVm", NULL},
        {TLS_READER, false, "GetCounters", NULL},
        {TLS_READER, false, "CreateVm",
         "certificate CN=monitor,O=vmms test may not CreateVm: it needs the operator role (a client "
         "certificate "
         "listed in [access] operators)"},
        {TLS_READER, false, "RemoveVm",
         "certificate CN=monitor,O=vmms test may not RemoveVm: it needs the operator role (a client "
         "certificate "
         "listed in [access] operators)"},
        {TLS_UNKNOWN, true, "GetVm",
         "certificate CN=stranger,O=vmms test may not GetVm: it needs the reader role (a client certificate "
         "listed in [access] readers or operators)"},
        {TLS_NO_CERT, true, "ListVms",
         "a TLS client without a certificate may not ListVms: it needs the reader role (a client certificate "
         "listed in [access] readers or operators)"},
        {UNIDENTIFIED, true, "GetVm",
         "unidentified peer ipv4:10.0.0.1:5000 may not GetVm: it needs the reader role (a caller vmmsd can "
         "identify)"},
        {SELF, false, "StartVm", NULL},
};

/* Every case is tried; each wrong one is named. */
static void G_GNUC_PRINTF(2, 3) fail_case(size_t i, const char *fmt, ...)
{
        g_autofree char *text = NULL;
        va_list ap;

        va_start(ap, fmt);
        text = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_test_message("case %zu: %s", i, text);
        g_test_fail();
}

static VmmsAccess *policy(const char *group, bool shared_socket)
{
        VmmsAccess *a = vmms_access_new(group, shared_socket ? VMMS_ROLE_READER : VMMS_ROLE_NONE);

        vmms_access_map_subject(a, "CN=ops1", VMMS_ROLE_OPERATOR);
        vmms_access_map_subject(a, "CN=monitor,O=vmms test", VMMS_ROLE_READER);
        return a;
}

static void test_callers_by_operation(void)
{
        gid_t gid;
        const char *group = operator_group(&gid);

        if (!group) {
                g_test_skip("no non-root group in /etc/group to stand in for vmms");
                return;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const Case *c = &cases[i];
                g_autoptr(VmmsAccess) a = policy(group, c->shared_socket);
                g_auto(VmmsCaller) caller = {0};
                const VmmsOp *op = vmms_op_lookup(c->op);
                VmmsError error = {0};
                bool allowed;

                g_assert_nonnull(op);
                make_caller(c->caller, gid, &caller);
                allowed = vmms_access_check(a, &caller, op, &error);
                if (!c->refusal) {
                        if (!allowed)
                                fail_case(i, "%s was refused %s: %s", caller.description, c->op,
                                          error.message);
                } else {
                        g_autoptr(GString) want = g_string_new(c->refusal);

                        g_string_replace(want, "%G", group, 0);
                        if (allowed)
                                fail_case(i, "%s was allowed %s; wanted \"%s\"", caller.description, c->op,
                                          want->str);
                        else if (error.code != VMMS_ERROR_PERMISSION_DENIED ||
                                 strcmp(error.message, want->str))
                                fail_case(i, "%s refused %s with %s \"%s\"; wanted PermissionDenied \"%s\"",
                                          caller.description, c->op, vmms_error_code_name(error.code),
                                          error.message, want->str);
                }
                vmms_error_clear(&error);
        }
}

/* The op table's contract: what only looks is for readers, everything else for operators. */
static void test_every_changing_operation_needs_the_operator_role(void)
{
        for (size_t i = 0; i < vmms_ops_count; i++) {
                const VmmsOp *op = &vmms_ops[i];
                bool looks = g_str_has_prefix(op->name, "Get") || g_str_has_prefix(op->name, "List") ||
                             g_str_has_prefix(op->name, "Watch");
                VmmsRole want = looks ? VMMS_ROLE_READER : VMMS_ROLE_OPERATOR;

                if (op->role != want) {
                        g_test_message("vmms_ops[%zu] %s has role %d; it needs %s", i, op->name, op->role,
                                       want == VMMS_ROLE_OPERATOR ? "VMMS_ROLE_OPERATOR"
                                                                  : "VMMS_ROLE_READER");
                        g_test_fail();
                }
        }
}

static void test_a_group_that_does_not_exist_makes_no_operators(void)
{
        g_autoptr(VmmsAccess) a = vmms_access_new("vmms-no-such-group-here", VMMS_ROLE_READER);
        g_auto(VmmsCaller) caller = {0};
        gid_t gid;

        g_assert_false(vmms_access_operator_gid(a, &gid));
        vmms_caller_init_unix(&caller, OTHER_UID, (gid_t)-1);
        g_assert_cmpint(vmms_access_role(a, &caller), ==, VMMS_ROLE_READER);
}

static void test_config_maps_subjects_and_names_a_bad_entry(void)
{
        g_autoptr(VmmsAccess) a = vmms_access_new(NULL, VMMS_ROLE_NONE);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GKeyFile) bad = g_key_file_new();
        g_auto(VmmsCaller) alice = {0}, ops = {0}, monitor = {0}, both = {0};
        g_autofree char *why = NULL;

        g_assert_true(g_key_file_load_from_data(kf,
                                                "[access]\noperator-group=wheel\n"
                                                "operators=CN=alice;CN=ops\nreaders=CN=monitor;CN=ops\n",
                                                -1, G_KEY_FILE_NONE, NULL));
        g_assert_cmpint(vmms_access_load(a, kf, &why), ==, 0);
        g_assert_cmpstr(vmms_access_operator_group(a), ==, "wheel");
        vmms_caller_init_tls(&alice, "CN=alice,OU=x", "alice");
        vmms_caller_init_tls(&ops, "CN=ops", "ops");
        vmms_caller_init_tls(&monitor, "CN=monitor,O=y", "monitor");
        vmms_caller_init_tls(&both, "CN=monitor-2,O=y", "monitor-2");
        g_assert_cmpint(vmms_access_role(a, &alice), ==, VMMS_ROLE_OPERATOR);
        g_assert_cmpint(vmms_access_role(a, &ops), ==, VMMS_ROLE_OPERATOR); /* listed twice: the higher */
        g_assert_cmpint(vmms_access_role(a, &monitor), ==, VMMS_ROLE_READER);
        g_assert_cmpint(vmms_access_role(a, &both), ==, VMMS_ROLE_NONE); /* a CN prefix is not a match */

        g_assert_true(g_key_file_load_from_data(bad, "[access]\nreaders=CN=ok;monitor\n", -1, G_KEY_FILE_NONE,
                                                NULL));
        g_assert_cmpint(vmms_access_load(a, bad, &why), ==, -EINVAL);
        g_assert_nonnull(strstr(why, "[access] readers: 'monitor'"));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/access/callers_by_operation", test_callers_by_operation);
        g_test_add_func("/access/every_changing_operation_needs_the_operator_role",
                        test_every_changing_operation_needs_the_operator_role);
        g_test_add_func("/access/a_group_that_does_not_exist_makes_no_operators",
                        test_a_group_that_does_not_exist_makes_no_operators);
        g_test_add_func("/access/config_maps_subjects_and_names_a_bad_entry",
                        test_config_maps_subjects_and_names_a_bad_entry);
        return g_test_run();
}
