/* The D-Bus API: vmmsd's operation table served as org.vmms.Manager1 on the system or
 * session bus, with one org.vmms.VM1 object per VM under an ObjectManager. The
 * interfaces are api/org.vmms.Manager1.xml and api/org.vmms.VM1.xml, compiled in. */
#pragma once

#include <gio/gio.h>

#include "vmms-access.h"
#include "vmms-manager.h"

#define API_DBUS_NAME "org.vmms.Manager1"
#define API_DBUS_MANAGER_PATH "/org/vmms/Manager1"
#define API_DBUS_OBJECTS_PATH "/org/vmms"
#define API_DBUS_VM_PATH_PREFIX "/org/vmms/vm/"

typedef struct ApiDbus ApiDbus;

/* Connects to `bus`, exports the objects and owns API_DBUS_NAME. Errors: -EPROTO when
 * the interface XML and the operation table disagree (a build defect), -ECONNREFUSED
 * when the bus cannot be reached, -EADDRINUSE when another process owns the name,
 * -EACCES when the bus's policy does not let us own it; each with a message. Every
 * method call goes through vmms_access_dispatch with `access`, which must outlive it. */
int api_dbus_new(VmmsManager *m, VmmsAccess *access, GBusType bus, ApiDbus **ret, char **ret_error);
void api_dbus_free(ApiDbus *api);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ApiDbus, api_dbus_free)

/* /org/vmms/vm/<uuid with '-' as '_'>; free with g_free. */
char *api_dbus_vm_path(const char *vm_id);
