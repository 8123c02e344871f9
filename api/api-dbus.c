/* D-Bus service. The interface XML is the contract and drives everything: at start
 * each method is bound to its operation in the table (by name or its
 * org.vmms.Operation annotation) and each argument to a request or response field by
 * name, with the types checked against the protobuf descriptors, so a method cannot
 * exist that the op table does not serve, and no method has code of its own.
 *
 * A call asks the bus for the caller's uid, once per client connection, builds the
 * request from the arguments, hands the op and a D-Bus caller to the core's access
 * decision (vmms-access.h), and answers from its reply, which may come later (StartVm
 * waits for the worker).
 *
 * VM objects follow the core through the op table too: a WatchEvents stream started
 * at once exports a VM when it is created (over any API), refreshes its state and
 * settings on every event (GetVm), removes it with its last event, and re-sends every
 * event as the Manager1.Event signal. A 1 s tick (ListVms) refreshes the live figures,
 * so those change at most once a second. Properties are served from what was last
 * announced, so a Get never disagrees with the signals a client has seen. */
#include <errno.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

#include "api-dbus-message.h"
#include "api-dbus-resources.h"
#include "api-dbus.h"
#include "vmms-ops.h"

#define MANAGER_INTERFACE "org.vmms.Manager1"
#define VM_INTERFACE "org.vmms.VM1"
#define ERROR_PREFIX "org.vmms.Error."
#define FIGURES_INTERVAL_MS 1000

typedef enum InKind {
        IN_FIELD,   /* sets the request field of its name */
        IN_OPTIONS, /* an a{sv} of request fields (and of update_mask, if the request has one) */
} InKind;

typedef enum OutKind {
        OUT_PATH,    /* the object of the VM whose id the response holds */
        OUT_MESSAGE, /* the whole response */
        OUT_FIELD,   /* the response field of its name */
} OutKind;

typedef struct InArg {
        InKind kind;
        const ProtobufCFieldDescriptor *field;
        bool fills_mask; /* its keys are also the request's update_mask */
} InArg;

typedef struct OutArg {
        OutKind kind;
        const ProtobufCFieldDescriptor *field;
} OutArg;

typedef struct Method {
        const GDBusMethodInfo *info;
        const VmmsOp *op;
        InArg *in;
        OutArg *out;
        size_t n_in, n_out;
        const ProtobufCFieldDescriptor *target; /* VM1: the request field naming the VM */
        const ProtobufCFieldDescriptor *mask;   /* the request's update_mask */
} Method;

typedef struct Property {
        const GDBusPropertyInfo *info;
        const ProtobufCFieldDescriptor **path; /* from the Vm message down to the value */
        size_t depth;
        bool figure; /* announced by the 1 s tick only */
} Property;

typedef struct Interface {
        GDBusNodeInfo *node;
        GDBusInterfaceInfo *info;
        Method *methods;
        size_t n_methods;
        Property *properties;
        size_t n_properties;
} Interface;

typedef struct _ApiDbusSkeleton ApiDbusSkeleton;

struct ApiDbus {
        VmmsManager *manager;
        VmmsAccess *access;
        GDBusConnection *connection;
        GDBusObjectManagerServer *objects;
        Interface manager_iface, vm_iface;
        const VmmsOp *get_vm, *list_vms, *watch_events;
        const ProtobufCMessageDescriptor *vm_type;
        ApiDbusSkeleton *manager_skeleton;
        GHashTable *vms; /* VM id → ApiDbusSkeleton (owned) */
        VmmsCall *watch;
        guint figures_timer;
        GCancellable *cancellable;
        GHashTable *pending;     /* PendingCall set, answered at shutdown */
        GHashTable *caller_uids; /* unique bus name → uid */
        guint name_owner_changed;
};

/* ---- Interfaces bound to the operation table ---- */

static void interface_clear(Interface *iface)
{
        for (size_t i = 0; i < iface->n_methods; i++) {
                g_free(iface->methods[i].in);
                g_free(iface->methods[i].out);
        }
        for (size_t i = 0; i < iface->n_properties; i++)
                g_free(iface->properties[i].path);
        g_free(iface->methods);
        g_free(iface->properties);
        g_clear_pointer(&iface->node, g_dbus_node_info_unref);
        memset(iface, 0, sizeof(*iface));
}

/* The length of one of GDBus's NULL-terminated info arrays. */
static size_t n_items(void *const *items)
{
        size_t n = 0;

        while (items && items[n])
                n++;
        return n;
}

static const char *operation_name(const char *member, GDBusAnnotationInfo **annotations)
{
        const char *name = g_dbus_annotation_info_lookup(annotations, "org.vmms.Operation");

        return name ? name : member;
}

static int bind_refuse(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int bind_refuse(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return -EPROTO;
}

static bool signature_is(const ProtobufCFieldDescriptor *field, const char *signature)
{
        g_autofree char *natural = api_dbus_message_field_signature(field);

        return strcmp(natural, signature) == 0;
}

static int bind_method(Method *m, const GDBusMethodInfo *info, bool per_vm, char **ret_error)
{
        const char *op_name = operation_name(info->name, info->annotations);
        const ProtobufCMessageDescriptor *req, *resp;

        m->info = info;
        m->op = vmms_op_lookup(op_name);
        if (!m->op || m->op->streaming)
                return bind_refuse(ret_error, "method %s: '%s' is not a unary operation of the table",
                                   info->name, op_name);
        req = m->op->request_type;
        resp = m->op->response_type;
        m->mask = protobuf_c_message_descriptor_get_field_by_name(req, "update_mask");
        if (per_vm) {
                m->target = protobuf_c_message_descriptor_get_field_by_name(req, "vm");
                if (!m->target || !signature_is(m->target, "s"))
                        return bind_refuse(ret_error, "method %s: %s names no VM (no string field 'vm')",
                                           info->name, req->name);
        }
        m->n_in = n_items((void *const *)info->in_args);
        m->in = g_new0(InArg, m->n_in);
        for (size_t i = 0; i < m->n_in; i++) {
                const GDBusArgInfo *arg = info->in_args[i];
                const ProtobufCFieldDescriptor *field =
                        protobuf_c_message_descriptor_get_field_by_name(req, arg->name);

                if (field && field != m->target) {
                        g_autofree char *natural = api_dbus_message_field_signature(field);

                        if (strcmp(natural, arg->signature) != 0)
                                return bind_refuse(ret_error,
                                                   "method %s: argument %s is '%s' but %s.%s is '%s'",
                                                   info->name, arg->name, arg->signature, req->name,
                                                   field->name, natural);
                        m->in[i].kind = IN_FIELD;
                        m->in[i].field = field;
                        m->in[i].fills_mask = field->type == PROTOBUF_C_TYPE_MESSAGE && m->mask;
                } else if (strcmp(arg->name, "options") == 0 && strcmp(arg->signature, "a{sv}") == 0) {
                        m->in[i].kind = IN_OPTIONS;
                        m->in[i].fills_mask = m->mask != NULL;
                } else {
                        return bind_refuse(ret_error, "method %s: argument %s is no field of %s", info->name,
                                           arg->name, req->name);
                }
        }
        m->n_out = n_items((void *const *)info->out_args);
        m->out = g_new0(OutArg, m->n_out);
        for (size_t i = 0; i < m->n_out; i++) {
                const GDBusArgInfo *arg = info->out_args[i];
                const ProtobufCFieldDescriptor *field =
                        protobuf_c_message_descriptor_get_field_by_name(resp, arg->name);

                if (strcmp(arg->signature, "o") == 0) {
                        m->out[i].kind = OUT_PATH;
                        m->out[i].field = protobuf_c_message_descriptor_get_field_by_name(resp, "id");
                        if (!m->out[i].field || !signature_is(m->out[i].field, "s"))
                                return bind_refuse(ret_error, "method %s: result %s: %s has no VM id",
                                                   info->name, arg->name, resp->name);
                } else if (field) {
                        if (!signature_is(field, arg->signature))
                                return bind_refuse(ret_error, "method %s: result %s is '%s', unlike %s.%s",
                                                   info->name, arg->name, arg->signature, resp->name,
                                                   field->name);
                        m->out[i].kind = OUT_FIELD;
                        m->out[i].field = field;
                } else if (strcmp(arg->signature, "a{sv}") == 0) {
                        m->out[i].kind = OUT_MESSAGE;
                } else {
                        return bind_refuse(ret_error, "method %s: result %s is no field of %s", info->name,
                                           arg->name, resp->name);
                }
        }
        return 0;
}

static int bind_property(Property *p, const GDBusPropertyInfo *info,
                         const ProtobufCMessageDescriptor *vm_type, char **ret_error)
{
        const char *path = g_dbus_annotation_info_lookup(info->annotations, "org.vmms.Field");
        const char *figure = g_dbus_annotation_info_lookup(info->annotations, "org.vmms.Figure");
        g_auto(GStrv) names = NULL;
        const ProtobufCMessageDescriptor *type = vm_type;

        p->info = info;
        p->figure = g_strcmp0(figure, "true") == 0;
        if (!path)
                return bind_refuse(ret_error, "property %s has no org.vmms.Field", info->name);
        names = g_strsplit(path, ".", -1);
        p->depth = g_strv_length(names);
        p->path = g_new0(const ProtobufCFieldDescriptor *, p->depth);
        for (size_t i = 0; i < p->depth; i++) {
                const ProtobufCFieldDescriptor *field =
                        type ? protobuf_c_message_descriptor_get_field_by_name(type, names[i]) : NULL;
                bool last = i + 1 == p->depth;

                if (!field || field->label == PROTOBUF_C_LABEL_REPEATED ||
                    (!last && field->type != PROTOBUF_C_TYPE_MESSAGE))
                        return bind_refuse(ret_error, "property %s: %s is no single field of %s", info->name,
                                           path, vm_type->name);
                if (last && !signature_is(field, info->signature))
                        return bind_refuse(ret_error, "property %s is '%s', unlike %s", info->name,
                                           info->signature, path);
                p->path[i] = field;
                type = field->type == PROTOBUF_C_TYPE_MESSAGE ? field->descriptor : NULL;
        }
        return 0;
}

static int bind_interface(Interface *iface, const char *file, const char *name, bool per_vm,
                          const ProtobufCMessageDescriptor *vm_type, char **ret_error)
{
        g_autofree char *resource = g_strconcat("/org/vmms/dbus/", file, NULL);
        g_autoptr(GBytes) xml = NULL;
        g_autoptr(GError) error = NULL;
        int r;

        xml = g_resource_lookup_data(api_dbus_get_resource(), resource, G_RESOURCE_LOOKUP_FLAGS_NONE, &error);
        if (xml)
                iface->node = g_dbus_node_info_new_for_xml(g_bytes_get_data(xml, NULL), &error);
        if (!iface->node)
                return bind_refuse(ret_error, "%s: %s", file, error->message);
        iface->info = g_dbus_node_info_lookup_interface(iface->node, name);
        if (!iface->info)
                return bind_refuse(ret_error, "%s declares no interface %s", file, name);
        iface->n_methods = n_items((void *const *)iface->info->methods);
        iface->methods = g_new0(Method, iface->n_methods);
        for (size_t i = 0; i < iface->n_methods; i++) {
                r = bind_method(&iface->methods[i], iface->info->methods[i], per_vm, ret_error);
                if (r < 0)
                        return r;
        }
        iface->n_properties = n_items((void *const *)iface->info->properties);
        iface->properties = g_new0(Property, iface->n_properties);
        for (size_t i = 0; i < iface->n_properties; i++) {
                r = bind_property(&iface->properties[i], iface->info->properties[i], vm_type, ret_error);
                if (r < 0)
                        return r;
        }
        for (GDBusSignalInfo **s = iface->info->signals; s && *s; s++) {
                const VmmsOp *op = vmms_op_lookup(operation_name((*s)->name, (*s)->annotations));

                if (!op || !op->streaming || n_items((void *const *)(*s)->args) != 1 ||
                    strcmp((*s)->args[0]->signature, "a{sv}") != 0)
                        return bind_refuse(ret_error,
                                           "signal %s: not one a{sv} item of a streaming operation",
                                           (*s)->name);
        }
        return 0;
}

static const Method *interface_method(const Interface *iface, const char *name)
{
        for (size_t i = 0; i < iface->n_methods; i++)
                if (strcmp(iface->methods[i].info->name, name) == 0)
                        return &iface->methods[i];
        return NULL;
}

/* ---- Interface skeletons (one per exported interface) ---- */

#define API_DBUS_TYPE_SKELETON (api_dbus_skeleton_get_type())
G_DECLARE_FINAL_TYPE(ApiDbusSkeleton, api_dbus_skeleton, API_DBUS, SKELETON, GDBusInterfaceSkeleton)

struct _ApiDbusSkeleton {
        GDBusInterfaceSkeleton parent;
        ApiDbus *api;
        const Interface *iface;
        char vm_id[37];    /* VM1: its VM; empty for the manager */
        GVariant **values; /* the properties as last announced */
};

G_DEFINE_TYPE(ApiDbusSkeleton, api_dbus_skeleton, G_TYPE_DBUS_INTERFACE_SKELETON)

static void method_call(GDBusConnection *connection, const char *sender, const char *object_path,
                        const char *interface_name, const char *method_name, GVariant *parameters,
                        GDBusMethodInvocation *invocation, gpointer userdata);

static GVariant *get_property(GDBusConnection *connection, const char *sender, const char *object_path,
                              const char *interface_name, const char *property_name, GError **error,
                              gpointer userdata)
{
        ApiDbusSkeleton *s = userdata;

        (void)connection, (void)sender, (void)object_path, (void)interface_name;
        for (size_t i = 0; i < s->iface->n_properties; i++)
                if (strcmp(s->iface->properties[i].info->name, property_name) == 0 && s->values[i])
                        return g_variant_ref(s->values[i]);
        g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property_name);
        return NULL;
}

static const GDBusInterfaceVTable skeleton_vtable = {.method_call = method_call,
                                                     .get_property = get_property};

static GDBusInterfaceInfo *skeleton_get_info(GDBusInterfaceSkeleton *skeleton)
{
        return API_DBUS_SKELETON(skeleton)->iface->info;
}

static GDBusInterfaceVTable *skeleton_get_vtable(GDBusInterfaceSkeleton *skeleton)
{
        (void)skeleton;
        return (GDBusInterfaceVTable *)&skeleton_vtable;
}

static GVariant *skeleton_get_properties(GDBusInterfaceSkeleton *skeleton)
{
        ApiDbusSkeleton *s = API_DBUS_SKELETON(skeleton);
        GVariantBuilder builder;

        g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT);
        for (size_t i = 0; i < s->iface->n_properties; i++)
                if (s->values[i])
                        g_variant_builder_add(&builder, "{sv}", s->iface->properties[i].info->name,
                                              s->values[i]);
        return g_variant_builder_end(&builder);
}

static void skeleton_flush(GDBusInterfaceSkeleton *skeleton)
{
        (void)skeleton; /* changes are announced when they happen */
}

static void skeleton_finalize(GObject *object)
{
        ApiDbusSkeleton *s = API_DBUS_SKELETON(object);

        for (size_t i = 0; s->values && i < s->iface->n_properties; i++)
                g_clear_pointer(&s->values[i], g_variant_unref);
        g_free(s->values);
        G_OBJECT_CLASS(api_dbus_skeleton_parent_class)->finalize(object);
}

static void api_dbus_skeleton_class_init(ApiDbusSkeletonClass *klass)
{
        GDBusInterfaceSkeletonClass *skeleton_class = G_DBUS_INTERFACE_SKELETON_CLASS(klass);

        G_OBJECT_CLASS(klass)->finalize = skeleton_finalize;
        skeleton_class->get_info = skeleton_get_info;
        skeleton_class->get_vtable = skeleton_get_vtable;
        skeleton_class->get_properties = skeleton_get_properties;
        skeleton_class->flush = skeleton_flush;
}

static void api_dbus_skeleton_init(ApiDbusSkeleton *s)
{
        (void)s;
}

static ApiDbusSkeleton *skeleton_new(ApiDbus *api, const Interface *iface, const char *vm_id)
{
        ApiDbusSkeleton *s = g_object_new(API_DBUS_TYPE_SKELETON, NULL);

        s->api = api;
        s->iface = iface;
        s->values = g_new0(GVariant *, MAX(iface->n_properties, 1));
        g_strlcpy(s->vm_id, vm_id ? vm_id : "", sizeof(s->vm_id));
        return s;
}

/* The property's value in `vm`; a missing sub-message reads as its zero. */
static GVariant *property_value(const Property *p, const ProtobufCMessage *vm)
{
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        const ProtobufCMessage *at = vm;

        for (size_t i = 0; i + 1 < p->depth; i++) {
                const ProtobufCMessage *sub =
                        *(const ProtobufCMessage *const *)((const uint8_t *)at + p->path[i]->offset);

                at = sub ? sub : api_dbus_message_new(p->path[i]->descriptor, arena);
        }
        return g_variant_ref_sink(api_dbus_message_field_to_variant(at, p->path[p->depth - 1]));
}

/* Takes the values of `vm` (the figures too when `figures`) and announces the ones that
 * changed. */
static void skeleton_update(ApiDbusSkeleton *s, const ProtobufCMessage *vm, bool figures)
{
        GDBusInterfaceSkeleton *skeleton = G_DBUS_INTERFACE_SKELETON(s);
        const char *path = g_dbus_interface_skeleton_get_object_path(skeleton);
        GVariantBuilder changed;
        bool any = false;

        g_variant_builder_init(&changed, G_VARIANT_TYPE_VARDICT);
        for (size_t i = 0; i < s->iface->n_properties; i++) {
                const Property *p = &s->iface->properties[i];
                g_autoptr(GVariant) value = NULL;

                if (p->figure && !figures && s->values[i])
                        continue;
                value = property_value(p, vm);
                if (s->values[i] && g_variant_equal(s->values[i], value))
                        continue;
                g_clear_pointer(&s->values[i], g_variant_unref);
                s->values[i] = g_variant_ref(value);
                g_variant_builder_add(&changed, "{sv}", p->info->name, value);
                any = true;
        }
        if (!any || !path) {
                g_variant_builder_clear(&changed);
                return;
        }
        {
                g_autoptr(GVariant) signal =
                        g_variant_ref_sink(g_variant_new("(sa{sv}as)", s->iface->info->name, &changed, NULL));
                GList *connections = g_dbus_interface_skeleton_get_connections(skeleton);

                for (GList *l = connections; l; l = l->next)
                        g_dbus_connection_emit_signal(l->data, NULL, path, "org.freedesktop.DBus.Properties",
                                                      "PropertiesChanged", signal, NULL);
                g_list_free_full(connections, g_object_unref);
        }
}

/* ---- Reading the core through the operation table ---- */

typedef void (*QueryFn)(ApiDbus *api, const ProtobufCMessage *response, void *userdata);

typedef struct Query {
        ApiDbus *api;
        QueryFn fn;
        void *userdata;
        bool done, abandoned;
        VmmsErrorCode code;
} Query;

static void on_query_reply(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                           void *userdata)
{
        Query *q = userdata;

        (void)call;
        if (q->abandoned) {
                g_free(q);
                return;
        }
        q->done = true;
        q->code = error->code;
        if (error->code == VMMS_OK)
                q->fn(q->api, response, q->userdata);
}

/* Runs a read-only op as the daemon itself; `fn` sees the response. The core answers
 * reads at once; one that did not would be dropped when it answers. 0, -ENOENT for
 * NotFound, -EIO for any other refusal, -EINPROGRESS. */
static int query(ApiDbus *api, const VmmsOp *op, const char *vm_id, QueryFn fn, void *userdata)
{
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        ProtobufCMessage *request = api_dbus_message_new(op->request_type, arena);
        Query *q = g_new0(Query, 1);
        g_auto(VmmsCaller) self = {0};
        int r;

        if (vm_id) {
                const ProtobufCFieldDescriptor *field =
                        protobuf_c_message_descriptor_get_field_by_name(op->request_type, "vm");
                g_autofree char *why = NULL;

                if (api_dbus_message_set_field(request, field, g_variant_new_string(vm_id), "vm", arena,
                                               &why) < 0) {
                        g_free(q);
                        return -EINVAL;
                }
        }
        q->api = api;
        q->fn = fn;
        q->userdata = userdata;
        vmms_caller_init_self(&self);
        vmms_access_dispatch(api->access, api->manager, op, request,
                             vmms_call_new(op, &self, on_query_reply, NULL, q));
        if (!q->done) {
                q->abandoned = true;
                return -EINPROGRESS;
        }
        r = q->code == VMMS_OK ? 0 : q->code == VMMS_ERROR_NOT_FOUND ? -ENOENT : -EIO;
        g_free(q);
        return r;
}

/* ---- VM objects ---- */

char *api_dbus_vm_path(const char *vm_id)
{
        g_autofree char *escaped = g_strdup(vm_id);

        g_strdelimit(escaped, "-", '_');
        return g_strconcat(API_DBUS_VM_PATH_PREFIX, escaped, NULL);
}

static const char *message_string(const ProtobufCMessage *message, const char *name)
{
        const ProtobufCFieldDescriptor *field =
                protobuf_c_message_descriptor_get_field_by_name(message->descriptor, name);
        const char *value;

        if (!field || field->type != PROTOBUF_C_TYPE_STRING || field->label == PROTOBUF_C_LABEL_REPEATED)
                return "";
        value = *(char *const *)((const uint8_t *)message + field->offset);
        return value ? value : "";
}

static void vm_export(ApiDbus *api, const ProtobufCMessage *vm)
{
        const char *id = message_string(vm, "id");
        g_autofree char *path = NULL;
        g_autoptr(GDBusObjectSkeleton) object = NULL;
        ApiDbusSkeleton *s;

        if (!*id || strlen(id) >= sizeof(s->vm_id))
                return;
        path = api_dbus_vm_path(id);
        if (!g_variant_is_object_path(path))
                return;
        s = skeleton_new(api, &api->vm_iface, id);
        skeleton_update(s, vm, true); /* values first: InterfacesAdded carries them */
        object = g_dbus_object_skeleton_new(path);
        g_dbus_object_skeleton_add_interface(object, G_DBUS_INTERFACE_SKELETON(s));
        g_hash_table_replace(api->vms, g_strdup(id), s);
        g_dbus_object_manager_server_export(api->objects, object);
}

static void vm_unexport(ApiDbus *api, const char *id)
{
        g_autofree char *path = NULL;

        if (!g_hash_table_contains(api->vms, id))
                return;
        path = api_dbus_vm_path(id);
        g_dbus_object_manager_server_unexport(api->objects, path);
        g_hash_table_remove(api->vms, id);
}

static void vm_refresh_settings(ApiDbus *api, const ProtobufCMessage *vm, void *userdata)
{
        ApiDbusSkeleton *s = g_hash_table_lookup(api->vms, message_string(vm, "id"));

        (void)userdata;
        if (s)
                skeleton_update(s, vm, false);
        else
                vm_export(api, vm);
}

static void vm_refresh_all(ApiDbus *api, const ProtobufCMessage *response, void *userdata)
{
        GHashTable *seen = userdata;
        const ProtobufCFieldDescriptor *field =
                protobuf_c_message_descriptor_get_field_by_name(response->descriptor, "vms");
        size_t n = *(const size_t *)((const uint8_t *)response + field->quantifier_offset);
        ProtobufCMessage *const *vms =
                *(ProtobufCMessage *const *const *)((const uint8_t *)response + field->offset);

        for (size_t i = 0; i < n; i++) {
                const char *id = message_string(vms[i], "id");
                ApiDbusSkeleton *s = g_hash_table_lookup(api->vms, id);

                g_hash_table_add(seen, g_strdup(id));
                if (s)
                        skeleton_update(s, vms[i], true);
                else
                        vm_export(api, vms[i]);
        }
}

/* Every VM as ListVms has it: figures announced, strays (none, unless an event was
 * missed) reconciled. */
static void vms_sync(ApiDbus *api)
{
        g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        GHashTableIter iter;
        gpointer id;
        g_autoptr(GPtrArray) gone = g_ptr_array_new_with_free_func(g_free);

        if (query(api, api->list_vms, NULL, vm_refresh_all, seen) < 0)
                return;
        g_hash_table_iter_init(&iter, api->vms);
        while (g_hash_table_iter_next(&iter, &id, NULL))
                if (!g_hash_table_contains(seen, id))
                        g_ptr_array_add(gone, g_strdup(id));
        for (guint i = 0; i < gone->len; i++)
                vm_unexport(api, gone->pdata[i]);
}

static gboolean on_figures_tick(gpointer userdata)
{
        vms_sync(userdata);
        return G_SOURCE_CONTINUE;
}

/* An event of the WatchEvents stream: re-sent as a signal, and the VM's object follows
 * at once. */
static void on_event(VmmsCall *call, const ProtobufCMessage *event, void *userdata)
{
        ApiDbus *api = userdata;
        const char *vm_id = message_string(event, "vm_id");
        const char *kind = message_string(event, "kind");

        (void)call;
        g_dbus_connection_emit_signal(api->connection, NULL, API_DBUS_MANAGER_PATH, MANAGER_INTERFACE,
                                      "Event", g_variant_new("(@a{sv})", api_dbus_message_to_variant(event)),
                                      NULL);
        if (!*vm_id)
                return;
        if (strcmp(kind, "removed") == 0 ||
            query(api, api->get_vm, vm_id, vm_refresh_settings, NULL) == -ENOENT)
                vm_unexport(api, vm_id);
}

static void on_events_end(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                          void *userdata)
{
        ApiDbus *api = userdata;

        (void)call, (void)response;
        api->watch = NULL;
        g_warning("dbus: the event stream ended (%s); VM objects now follow the 1 s tick only",
                  error->message ? error->message : "no reason");
}

/* ---- Method calls ---- */

typedef struct PendingCall {
        ApiDbus *api; /* NULL once the API is gone (the invocation was answered then) */
        const Method *method;
        GDBusMethodInvocation *invocation;
        char vm_id[37];
} PendingCall;

static void pending_free(PendingCall *pc)
{
        if (pc->api)
                g_hash_table_remove(pc->api->pending, pc);
        g_free(pc);
}

/* The bus names only the uid; the core also weighs the user's primary group. */
static gid_t primary_gid(uid_t uid)
{
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        size_t buflen = size > 0 ? (size_t)size * 4 : 16384;
        g_autofree char *buf = g_malloc(buflen);
        struct passwd pw, *pwp = NULL;

        if (getpwuid_r(uid, &pw, buf, buflen, &pwp) != 0 || !pwp)
                return (gid_t)-1;
        return pw.pw_gid;
}

static void return_error(PendingCall *pc, const char *name, const char *message)
{
        g_autofree char *error_name = g_strconcat(ERROR_PREFIX, name, NULL);

        g_dbus_method_invocation_return_dbus_error(pc->invocation, error_name, message);
        pc->invocation = NULL;
}

static void on_method_reply(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                            void *userdata)
{
        PendingCall *pc = userdata;
        const Method *m = pc->method;
        GVariantBuilder results;

        (void)call;
        if (!pc->api) {
                g_free(pc);
                return;
        }
        if (error->code != VMMS_OK) {
                return_error(pc, vmms_error_code_name(error->code), error->message ? error->message : "");
                pending_free(pc);
                return;
        }
        g_variant_builder_init(&results, G_VARIANT_TYPE_TUPLE);
        for (size_t i = 0; i < m->n_out; i++) {
                switch (m->out[i].kind) {
                case OUT_PATH: {
                        g_autofree char *path = api_dbus_vm_path(message_string(response, "id"));

                        g_variant_builder_add_value(&results, g_variant_new_object_path(path));
                        break;
                }
                case OUT_MESSAGE:
                        g_variant_builder_add_value(&results, api_dbus_message_to_variant(response));
                        break;
                case OUT_FIELD:
                        g_variant_builder_add_value(
                                &results, api_dbus_message_field_to_variant(response, m->out[i].field));
                        break;
                }
        }
        g_dbus_method_invocation_return_value(pc->invocation, g_variant_builder_end(&results));
        pc->invocation = NULL;
        pending_free(pc);
}

static int request_from_args(const Method *m, GVariant *args, const char *vm_id, GPtrArray *arena,
                             ProtobufCMessage **ret, char **ret_error)
{
        ProtobufCMessage *request = api_dbus_message_new(m->op->request_type, arena);
        int r;

        for (size_t i = 0; i < m->n_in; i++) {
                g_autoptr(GVariant) arg = g_variant_get_child_value(args, i);
                const char *name = m->info->in_args[i]->name;

                if (m->in[i].kind == IN_OPTIONS)
                        r = api_dbus_message_set_fields(request, arg, "", arena, ret_error);
                else
                        r = api_dbus_message_set_field(request, m->in[i].field, arg, name, arena, ret_error);
                if (r < 0)
                        return r;
                if (m->in[i].fills_mask) {
                        GVariantBuilder keys;
                        GVariantIter iter;
                        const char *key;

                        g_variant_builder_init(&keys, G_VARIANT_TYPE_STRING_ARRAY);
                        g_variant_iter_init(&iter, arg);
                        while (g_variant_iter_next(&iter, "{&sv}", &key, NULL))
                                g_variant_builder_add(&keys, "s", key);
                        r = api_dbus_message_set_field(request, m->mask, g_variant_builder_end(&keys),
                                                       m->mask->name, arena, ret_error);
                        if (r < 0)
                                return r;
                }
        }
        if (m->target) {
                r = api_dbus_message_set_field(request, m->target, g_variant_new_string(vm_id), "vm", arena,
                                               ret_error);
                if (r < 0)
                        return r;
        }
        *ret = request;
        return 0;
}

/* Builds the request and hands it, with the caller, to the core's access decision. */
static void dispatch(PendingCall *pc, uid_t uid)
{
        ApiDbus *api = pc->api;
        const Method *m = pc->method;
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *why = NULL;
        g_auto(VmmsCaller) caller = {0};
        ProtobufCMessage *request;

        if (request_from_args(m, g_dbus_method_invocation_get_parameters(pc->invocation), pc->vm_id, arena,
                              &request, &why) < 0) {
                return_error(pc, vmms_error_code_name(VMMS_ERROR_INVALID_ARGUMENT), why);
                pending_free(pc);
                return;
        }
        /* The request is valid only during dispatch; the call answers now or later. */
        vmms_caller_init_dbus(&caller, uid, primary_gid(uid));
        vmms_access_dispatch(api->access, api->manager, m->op, request,
                             vmms_call_new(m->op, &caller, on_method_reply, NULL, pc));
}

static void on_caller_uid(GObject *source, GAsyncResult *result, gpointer userdata)
{
        PendingCall *pc = userdata;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
        guint32 uid;

        if (!pc->api) {
                g_free(pc);
                return;
        }
        if (!reply) {
                g_autofree char *message = g_strdup_printf("%s: cannot identify the caller: %s",
                                                           pc->method->info->name, error->message);

                return_error(pc, "Internal", message);
                pending_free(pc);
                return;
        }
        g_variant_get(reply, "(u)", &uid);
        g_hash_table_insert(pc->api->caller_uids,
                            g_strdup(g_dbus_method_invocation_get_sender(pc->invocation)),
                            GUINT_TO_POINTER(uid));
        dispatch(pc, uid);
}

/* A unique name is never given out again, so its uid holds until it leaves the bus. */
static void on_name_owner_changed(GDBusConnection *connection, const char *sender, const char *object_path,
                                  const char *interface_name, const char *signal_name, GVariant *parameters,
                                  gpointer userdata)
{
        ApiDbus *api = userdata;
        const char *name, *old_owner, *new_owner;

        (void)connection, (void)sender, (void)object_path, (void)interface_name, (void)signal_name;
        g_variant_get(parameters, "(&s&s&s)", &name, &old_owner, &new_owner);
        if (name[0] == ':' && !*new_owner)
                g_hash_table_remove(api->caller_uids, name);
}

static void method_call(GDBusConnection *connection, const char *sender, const char *object_path,
                        const char *interface_name, const char *method_name, GVariant *parameters,
                        GDBusMethodInvocation *invocation, gpointer userdata)
{
        ApiDbusSkeleton *s = userdata;
        ApiDbus *api = s->api;
        const Method *m = interface_method(s->iface, method_name);
        gpointer cached_uid;
        PendingCall *pc;

        (void)object_path, (void)interface_name, (void)parameters;
        if (!m) { /* GDBus checks names against the XML, so only a defect leads here */
                g_dbus_method_invocation_return_dbus_error(
                        invocation, "org.freedesktop.DBus.Error.UnknownMethod", method_name);
                return;
        }
        pc = g_new0(PendingCall, 1);
        pc->api = api;
        pc->method = m;
        pc->invocation = invocation;
        g_strlcpy(pc->vm_id, s->vm_id, sizeof(pc->vm_id));
        g_hash_table_add(api->pending, pc);
        if (g_hash_table_lookup_extended(api->caller_uids, sender, NULL, &cached_uid)) {
                dispatch(pc, GPOINTER_TO_UINT(cached_uid));
                return;
        }
        g_dbus_connection_call(connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "GetConnectionUnixUser", g_variant_new("(s)", sender),
                               G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, -1, api->cancellable,
                               on_caller_uid, pc);
}

/* ---- Setup ---- */

static int bind_contract(ApiDbus *api, char **ret_error)
{
        int r;

        api->get_vm = vmms_op_lookup("GetVm");
        api->list_vms = vmms_op_lookup("ListVms");
        api->watch_events = vmms_op_lookup("WatchEvents");
        if (!api->get_vm || !api->list_vms || !api->watch_events ||
            !protobuf_c_message_descriptor_get_field_by_name(api->list_vms->response_type, "vms"))
                return bind_refuse(ret_error, "the operation table lacks GetVm, ListVms or WatchEvents");
        api->vm_type = api->get_vm->response_type;
        r = bind_interface(&api->manager_iface, "org.vmms.Manager1.xml", MANAGER_INTERFACE, false,
                           api->vm_type, ret_error);
        if (r < 0)
                return r;
        return bind_interface(&api->vm_iface, "org.vmms.VM1.xml", VM_INTERFACE, true, api->vm_type,
                              ret_error);
}

static void on_connection_closed(GDBusConnection *connection, gboolean remote_peer_vanished, GError *error,
                                 gpointer userdata)
{
        (void)connection, (void)remote_peer_vanished, (void)userdata;
        g_warning("dbus: the bus connection closed (%s); the D-Bus API is gone until vmmsd restarts",
                  error ? error->message : "no reason");
}

static int connect_bus(ApiDbus *api, GBusType bus, char **ret_error)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *address = g_dbus_address_get_for_bus_sync(bus, NULL, &error);

        if (address)
                api->connection = g_dbus_connection_new_for_address_sync(
                        address,
                        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                        NULL, NULL, &error);
        if (!api->connection) {
                *ret_error = g_strdup_printf("cannot reach the %s bus: %s",
                                             bus == G_BUS_TYPE_SYSTEM ? "system" : "session", error->message);
                return -ECONNREFUSED;
        }
        /* vmmsd outlives its bus: VMs stay manageable over gRPC. */
        g_dbus_connection_set_exit_on_close(api->connection, FALSE);
        g_signal_connect(api->connection, "closed", G_CALLBACK(on_connection_closed), api);
        return 0;
}

static int own_name(ApiDbus *api, char **ret_error)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint32 result;

        /* DO_NOT_QUEUE (4): a second vmmsd must fail, not wait. */
        reply = g_dbus_connection_call_sync(api->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", "RequestName",
                                            g_variant_new("(su)", API_DBUS_NAME, 4u), G_VARIANT_TYPE("(u)"),
                                            G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
        if (!reply) {
                g_autofree char *remote = g_dbus_error_get_remote_error(error);
                bool denied = g_strcmp0(remote, "org.freedesktop.DBus.Error.AccessDenied") == 0;

                g_dbus_error_strip_remote_error(error);
                *ret_error = g_strdup_printf("cannot own %s: %s%s", API_DBUS_NAME, error->message,
                                             denied ? " (is org.vmms.Manager1.conf in share/dbus-1/system.d?)"
                                                    : "");
                return denied ? -EACCES : -ECONNREFUSED;
        }
        g_variant_get(reply, "(u)", &result);
        if (result != 1 && result != 4) {
                *ret_error =
                        g_strdup_printf("%s is owned by another process (another vmmsd?)", API_DBUS_NAME);
                return -EADDRINUSE;
        }
        return 0;
}

int api_dbus_new(VmmsManager *m, VmmsAccess *access, GBusType bus, ApiDbus **ret, char **ret_error)
{
        g_autoptr(ApiDbus) api = g_new0(ApiDbus, 1);
        g_autoptr(GDBusObjectSkeleton) manager_object = NULL;
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        g_auto(VmmsCaller) self = {0};
        int r;

        api->manager = m;
        api->access = access;
        api->vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
        api->pending = g_hash_table_new(NULL, NULL);
        api->caller_uids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        api->cancellable = g_cancellable_new();
        r = bind_contract(api, ret_error);
        if (r < 0)
                return r;
        r = connect_bus(api, bus, ret_error);
        if (r < 0)
                return r;
        api->name_owner_changed = g_dbus_connection_signal_subscribe(
                api->connection, "org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged",
                "/org/freedesktop/DBus", NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_name_owner_changed, api, NULL);
        api->objects = g_dbus_object_manager_server_new(API_DBUS_OBJECTS_PATH);
        api->manager_skeleton = skeleton_new(api, &api->manager_iface, NULL);
        manager_object = g_dbus_object_skeleton_new(API_DBUS_MANAGER_PATH);
        g_dbus_object_skeleton_add_interface(manager_object,
                                             G_DBUS_INTERFACE_SKELETON(api->manager_skeleton));
        g_dbus_object_manager_server_export(api->objects, manager_object);
        /* Objects first, then the stream, so no VM is missed or announced twice. */
        vms_sync(api);
        vmms_caller_init_self(&self);
        api->watch = vmms_call_new(api->watch_events, &self, on_events_end, on_event, api);
        vmms_access_dispatch(access, m, api->watch_events,
                             api_dbus_message_new(api->watch_events->request_type, arena), api->watch);
        api->figures_timer = g_timeout_add(FIGURES_INTERVAL_MS, on_figures_tick, api);
        g_dbus_object_manager_server_set_connection(api->objects, api->connection);
        r = own_name(api, ret_error);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&api);
        return 0;
}

void api_dbus_free(ApiDbus *api)
{
        GHashTableIter iter;
        gpointer key;

        if (!api)
                return;
        if (api->watch)
                vmms_call_cancel(api->watch);
        if (api->figures_timer)
                g_source_remove(api->figures_timer);
        if (api->cancellable)
                g_cancellable_cancel(api->cancellable);
        /* Calls still waiting for the core or the bus are answered now; their owners
         * free them when they end. */
        if (api->pending) {
                g_hash_table_iter_init(&iter, api->pending);
                while (g_hash_table_iter_next(&iter, &key, NULL)) {
                        PendingCall *pc = key;

                        if (pc->invocation)
                                return_error(pc, "Unavailable", "vmmsd is shutting down");
                        pc->api = NULL;
                }
                g_hash_table_unref(api->pending);
        }
        g_clear_object(&api->objects);
        g_clear_pointer(&api->vms, g_hash_table_unref);
        g_clear_object(&api->manager_skeleton);
        g_clear_pointer(&api->caller_uids, g_hash_table_unref);
        if (api->connection) {
                if (api->name_owner_changed)
                        g_dbus_connection_signal_unsubscribe(api->connection, api->name_owner_changed);
                g_signal_handlers_disconnect_by_data(api->connection, api);
                g_dbus_connection_flush_sync(api->connection, NULL, NULL);
                g_dbus_connection_close_sync(api->connection, NULL, NULL);
                g_object_unref(api->connection);
        }
        g_clear_object(&api->cancellable);
        interface_clear(&api->manager_iface);
        interface_clear(&api->vm_iface);
        g_free(api);
}
