/* Tables for people, JSON for machines. */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "proto-util.h"
#include "vmctl-args.h"
#include "vmctl-format.h"

struct VmctlTable {
        const VmctlColumn *columns;
        size_t n_columns;
        GPtrArray *cells; /* row-major, n_columns per row */
};

VmctlTable *vmctl_table_new(const VmctlColumn *columns, size_t n_columns)
{
        VmctlTable *table = g_new0(VmctlTable, 1);

        table->columns = columns;
        table->n_columns = n_columns;
        table->cells = g_ptr_array_new_with_free_func(g_free);
        return table;
}

void vmctl_table_free(VmctlTable *table)
{
        if (!table)
                return;
        if (table->cells)
                g_ptr_array_unref(table->cells);
        g_free(table);
}

/* A cell on one line: control characters (a newline in an event message) become spaces. */
static char *one_line(char *text)
{
        if (!g_utf8_validate(text, -1, NULL)) {
                char *valid = g_utf8_make_valid(text, -1);

                g_free(text);
                text = valid;
        }
        for (char *p = text; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = ' ';
        return text;
}

void vmctl_table_add(VmctlTable *table, ...)
{
        va_list ap;

        va_start(ap, table);
        for (size_t i = 0; i < table->n_columns; i++) {
                char *cell = va_arg(ap, char *);

                g_ptr_array_add(table->cells, one_line(cell ? cell : g_strdup("")));
        }
        va_end(ap);
}

size_t vmctl_table_rows(const VmctlTable *table)
{
        return table->cells->len / table->n_columns;
}

static void append_cell(GString *out, const char *text, size_t width, bool right, bool last)
{
        size_t len = g_utf8_strlen(text, -1);

        if (right)
                for (size_t i = len; i < width; i++)
                        g_string_append_c(out, ' ');
        g_string_append(out, text);
        if (!right && !last)
                for (size_t i = len; i < width; i++)
                        g_string_append_c(out, ' ');
        g_string_append_c(out, last ? '\n' : ' ');
}

void vmctl_table_render(const VmctlTable *table, GString *out)
{
        size_t rows = vmctl_table_rows(table), n = table->n_columns;
        g_autofree size_t *widths = g_new0(size_t, n);

        if (rows == 0)
                return;
        for (size_t c = 0; c < n; c++) {
                widths[c] = strlen(table->columns[c].header);
                for (size_t r = 0; r < rows; r++)
                        widths[c] = MAX(widths[c], (size_t)g_utf8_strlen(table->cells->pdata[r * n + c], -1));
        }
        for (size_t c = 0; c < n; c++)
                append_cell(out, table->columns[c].header, widths[c], table->columns[c].right, c + 1 == n);
        for (size_t c = 0; c < n; c++) {
                g_autofree char *dashes = g_strnfill(strlen(table->columns[c].header), '-');

                append_cell(out, dashes, widths[c], table->columns[c].right, c + 1 == n);
        }
        for (size_t r = 0; r < rows; r++)
                for (size_t c = 0; c < n; c++)
                        append_cell(out, table->cells->pdata[r * n + c], widths[c], table->columns[c].right,
                                    c + 1 == n);
}

char *vmctl_json_name(const char *proto_name)
{
        GString *name = g_string_new(NULL);
        bool upper = false;

        for (const char *p = proto_name; *p; p++) {
                if (*p == '_') {
                        upper = true;
                        continue;
                }
                g_string_append_c(name, upper ? g_ascii_toupper(*p) : *p);
                upper = false;
        }
        return g_string_free(name, FALSE);
}

/* JSON through json-glib: a message becomes a JsonNode tree, json-glib's generator writes it (string
 * escaping, layout). proto3's JSON mapping where json-glib can say it: NaN and the infinities as the
 * strings "NaN", "Infinity", "-Infinity"; a uint64 past int64's range as a double (json-glib has no
 * unsigned numbers). */
static JsonNode *json_double_node(double value)
{
        if (isnan(value))
                return json_node_init_string(json_node_alloc(), "NaN");
        if (isinf(value))
                return json_node_init_string(json_node_alloc(), value > 0 ? "Infinity" : "-Infinity");
        return json_node_init_double(json_node_alloc(), value);
}

static JsonNode *json_string_node(const char *text)
{
        g_autofree char *valid = g_utf8_validate(text, -1, NULL) ? NULL : g_utf8_make_valid(text, -1);

        return json_node_init_string(json_node_alloc(), valid ? valid : text);
}

static JsonNode *json_message_node(const ProtobufCMessage *message);

static JsonNode *json_value_node(const ProtobufCFieldDescriptor *f, const void *p)
{
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                return json_node_init_int(json_node_alloc(), *(const int32_t *)p);
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                return json_node_init_int(json_node_alloc(), *(const uint32_t *)p);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                return json_node_init_int(json_node_alloc(), *(const int64_t *)p);
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64: {
                uint64_t value = *(const uint64_t *)p;

                if (value > G_MAXINT64)
                        return json_node_init_double(json_node_alloc(), (double)value);
                return json_node_init_int(json_node_alloc(), (gint64)value);
        }
        case PROTOBUF_C_TYPE_FLOAT:
                return json_double_node(*(const float *)p);
        case PROTOBUF_C_TYPE_DOUBLE:
                return json_double_node(*(const double *)p);
        case PROTOBUF_C_TYPE_BOOL:
                return json_node_init_boolean(json_node_alloc(), *(const protobuf_c_boolean *)p);
        case PROTOBUF_C_TYPE_ENUM: {
                const ProtobufCEnumValue *value =
                        protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);

                if (value)
                        return json_string_node(value->name);
                return json_node_init_int(json_node_alloc(), *(const int *)p);
        }
        case PROTOBUF_C_TYPE_STRING: {
                const char *text = *(char *const *)p;

                return json_string_node(text ? text : "");
        }
        case PROTOBUF_C_TYPE_BYTES: {
                const ProtobufCBinaryData *data = p;
                g_autofree char *base64 = g_base64_encode(data->data, data->len);

                return json_string_node(base64);
        }
        case PROTOBUF_C_TYPE_MESSAGE:
                return json_message_node(*(ProtobufCMessage *const *)p);
        }
        return json_node_init_null(json_node_alloc());
}

static JsonNode *json_field_node(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *f)
{
        const char *member = (const char *)message + f->offset;
        g_autoptr(JsonArray) array = NULL;
        size_t n, size;

        if (f->label != PROTOBUF_C_LABEL_REPEATED)
                return json_value_node(f, member);
        n = *(const size_t *)((const char *)message + f->quantifier_offset);
        size = proto_field_element_size(f->type);
        array = json_array_sized_new((guint)n);
        for (size_t i = 0; i < n; i++)
                json_array_add_element(array, json_value_node(f, *(const char *const *)member + i * size));
        return json_node_init_array(json_node_alloc(), array);
}

static JsonNode *json_message_node(const ProtobufCMessage *message)
{
        g_autoptr(JsonObject) object = NULL;
        const ProtobufCMessageDescriptor *d;

        if (!message)
                return json_node_init_null(json_node_alloc());
        d = message->descriptor;
        object = json_object_new();
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                g_autofree char *name = NULL;

                /* Of a oneof, only the member that is set. */
                if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    *(const uint32_t *)((const char *)message + f->quantifier_offset) != f->id)
                        continue;
                name = vmctl_json_name(f->name);
                json_object_set_member(object, name, json_field_node(message, f));
        }
        return json_node_init_object(json_node_alloc(), object);
}

void vmctl_json_append_node(GString *out, JsonNode *root, bool pretty)
{
        g_autoptr(JsonGenerator) generator = json_generator_new();

        json_generator_set_root(generator, root);
        json_generator_set_pretty(generator, pretty);
        json_generator_set_indent(generator, 2);
        json_generator_to_gstring(generator, out);
        g_string_append_c(out, '\n');
}

void vmctl_json_append_message(GString *out, const ProtobufCMessage *message, bool pretty)
{
        g_autoptr(JsonNode) root = json_message_node(message);

        vmctl_json_append_node(out, root, pretty);
}

void vmctl_json_append_array(GString *out, ProtobufCMessage *const *messages, size_t n_messages, bool pretty)
{
        g_autoptr(JsonArray) array = json_array_sized_new((guint)n_messages);
        g_autoptr(JsonNode) root = NULL;

        for (size_t i = 0; i < n_messages; i++)
                json_array_add_element(array, json_message_node(messages[i]));
        root = json_node_init_array(json_node_alloc(), array);
        vmctl_json_append_node(out, root, pretty);
}

const char *vmctl_vm_state_name(Vmms__V1__VmState state)
{
        switch (state) {
        case VMMS__V1__VM_STATE__VM_STATE_OFF:
                return "Off";
        case VMMS__V1__VM_STATE__VM_STATE_STARTING:
                return "Starting";
        case VMMS__V1__VM_STATE__VM_STATE_RUNNING:
                return "Running";
        case VMMS__V1__VM_STATE__VM_STATE_PAUSED:
                return "Paused";
        case VMMS__V1__VM_STATE__VM_STATE_STOPPING:
                return "Stopping";
        case VMMS__V1__VM_STATE__VM_STATE_SAVED:
                return "Saved";
        case VMMS__V1__VM_STATE__VM_STATE_MIGRATING:
                return "Migrating";
        default:
                return "Unknown";
        }
}

/* Hyper-V's Status column: the state it is passing through, or the over-commit signs
 * vmmsd judged ("Memory pressure high for 4 min"), or "Operating normally". */
static const char *vm_status(const Vmms__V1__Vm *vm)
{
        switch (vm->state) {
        case VMMS__V1__VM_STATE__VM_STATE_STARTING:
                return "Starting";
        case VMMS__V1__VM_STATE__VM_STATE_STOPPING:
                return "Stopping";
        case VMMS__V1__VM_STATE__VM_STATE_MIGRATING:
                return "Migrating";
        case VMMS__V1__VM_STATE__VM_STATE_OFF:
        case VMMS__V1__VM_STATE__VM_STATE_RUNNING:
        case VMMS__V1__VM_STATE__VM_STATE_PAUSED:
        case VMMS__V1__VM_STATE__VM_STATE_SAVED:
                return vm->status && *vm->status ? vm->status : "Operating normally";
        default:
                return "Unknown";
        }
}

char *vmctl_format_uptime(int64_t ms)
{
        int64_t s = ms > 0 ? ms / 1000 : 0;
        int64_t days = s / 86400;

        if (days)
                return g_strdup_printf("%" G_GINT64_FORMAT ".%02d:%02d:%02d", days, (int)(s % 86400 / 3600),
                                       (int)(s % 3600 / 60), (int)(s % 60));
        return g_strdup_printf("%02d:%02d:%02d", (int)(s / 3600), (int)(s % 3600 / 60), (int)(s % 60));
}

char *vmctl_format_counter_value(double value)
{
        char buf[G_ASCII_DTOSTR_BUF_SIZE];

        if (isfinite(value) && value == floor(value) && fabs(value) < 1e15)
                return g_strdup(g_ascii_formatd(buf, sizeof(buf), "%.0f", value));
        return g_strdup(g_ascii_formatd(buf, sizeof(buf), "%.2f", value));
}

static char *mib(uint64_t bytes)
{
        return g_strdup_printf("%" G_GUINT64_FORMAT, bytes >> 20);
}

static char *text(const char *s)
{
        return g_strdup(s ? s : "");
}

/* A repeated string field (not NULL-terminated) as one cell. */
static char *joined(char *const *items, size_t n_items, const char *separator)
{
        GString *cell = g_string_new(NULL);

        for (size_t i = 0; i < n_items; i++)
                g_string_append_printf(cell, "%s%s", i ? separator : "", items[i]);
        return g_string_free(cell, FALSE);
}

static char *number(uint64_t n)
{
        return g_strdup_printf("%" G_GUINT64_FORMAT, n);
}

static char *boolean(bool b)
{
        return g_strdup(b ? "True" : "False");
}

void vmctl_format_vms(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"Name", false},           {"State", false},
                {"CPUUsage(%)", true},     {"MemoryAssigned(M)", true},
                {"MemoryDemand(M)", true}, {"Pressure", true},
                {"Uptime", false},         {"Status", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++) {
                const Vmms__V1__Vm *vm = vms[i];
                /* A running guest always commits something: no demand yet means no report yet (just
                 * started, or an engine whose guest does not report), which a 0 would hide. */
                bool reported =
                        vm->memory_demand_bytes || (vm->state != VMMS__V1__VM_STATE__VM_STATE_RUNNING &&
                                                    vm->state != VMMS__V1__VM_STATE__VM_STATE_PAUSED);

                vmctl_table_add(table, text(vm->name), text(vmctl_vm_state_name(vm->state)),
                                g_strdup_printf("%.0f", vm->cpu_usage_pct), mib(vm->assigned_memory_bytes),
                                reported ? mib(vm->memory_demand_bytes) : text("-"),
                                reported ? number(vm->memory_pressure) : text("-"),
                                vmctl_format_uptime(vm->uptime_ms), text(vm_status(vm)));
        }
        vmctl_table_render(table, out);
}

void vmctl_format_cluster_vms(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"Name", false},      {"State", false},           {"Host", false},
                {"Processors", true}, {"MemoryStartup(M)", true}, {"Workload", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++) {
                const Vmms__V1__Vm *vm = vms[i];

                vmctl_table_add(table, text(vm->name), text(vmctl_vm_state_name(vm->state)), text(vm->host),
                                number(vm->processor ? vm->processor->count : 0),
                                mib(vm->memory ? vm->memory->startup_bytes : 0), text(vm->workload));
        }
        vmctl_table_render(table, out);
}

void vmctl_format_processors(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"VMName", false}, {"Count", true},          {"Reserve", true},
                {"Maximum", true}, {"RelativeWeight", true}, {"CompatibilityForMigrationEnabled", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++) {
                const Vmms__V1__ProcessorSettings *p = vms[i]->processor;

                vmctl_table_add(table, text(vms[i]->name), number(p ? p->count : 0),
                                number(p ? p->reserve : 0), number(p ? p->maximum : 0),
                                number(p ? p->relative_weight : 0),
                                boolean(p && p->compatibility_for_migration_enabled));
        }
        vmctl_table_render(table, out);
}

void vmctl_format_compare(GString *out, const char *vm_name, const Vmms__V1__CompareVmResult *result)
{
        static const VmctlColumn columns[] = {{"Field", false}, {"Source", false}, {"Destination", false}};
        const Vmms__V1__ProcessorCompatibilityVector *v = result->source_vector;
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        g_string_append_printf(out, "VM %s on %s: %s\n", vm_name, result->destination_host,
                               result->compatible ? "compatible" : "not compatible");
        if (v)
                g_string_append_printf(out, "Processor here: %s %s, %s, CPUID %.16s, guest ABI %u%s\n",
                                       v->engine, v->engine_version, v->cpu_model, v->cpuid_hash,
                                       v->guest_abi_version,
                                       v->normalized ? " (CompatibilityForMigrationEnabled)" : "");
        if (!result->compatible && result->reason && *result->reason)
                g_string_append_printf(out, "Reason: %s\n", result->reason);
        if (result->n_differences == 0)
                return;
        for (size_t i = 0; i < result->n_differences; i++) {
                const Vmms__V1__CompatibilityDifference *d = result->differences[i];

                vmctl_table_add(table, text(d->field), text(d->source), text(d->destination));
        }
        g_string_append_c(out, '\n');
        vmctl_table_render(table, out);
}

void vmctl_format_memory(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"VMName", false},    {"DynamicMemoryEnabled", false},
                {"Minimum(M)", true}, {"Startup(M)", true},
                {"Maximum(M)", true}, {"Buffer", true},
                {"Priority", true},   {"GoalSeeking", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++) {
                const Vmms__V1__MemorySettings *m = vms[i]->memory;

                vmctl_table_add(table, text(vms[i]->name), boolean(m && m->dynamic_memory_enabled),
                                mib(m ? m->minimum_bytes : 0), mib(m ? m->startup_bytes : 0),
                                mib(m ? m->maximum_bytes : 0), number(m ? m->buffer : 0),
                                number(m ? m->priority : 0), boolean(m && m->goal_seeking));
        }
        vmctl_table_render(table, out);
}

void vmctl_format_host(GString *out, const Vmms__V1__Host *host)
{
        static const VmctlColumn columns[] = {
                {"Name", false},
                {"LogicalProcessorCount", true},
                {"MemoryCapacity(M)", true},
                {"MemoryInUse(M)", true},
                {"VMCount", true},
                {"RunningVMCount", true},
                {"Reserved(%)", true},
                {"ReservationCapacity(%)", true},
                {"Engines", false},
                {"HypervisorStatus", false}, /* last: it may be a sentence */
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        vmctl_table_add(table, text(host->hostname), number(host->logical_processors),
                        mib(host->memory_pool_bytes), mib(host->memory_pool_used_bytes),
                        number(host->vm_count), number(host->running_vm_count),
                        number(host->reservation_used_pct), number(host->reservation_capacity_pct),
                        joined(host->engines, host->n_engines, ","), text(host->hypervisor_status));
        vmctl_table_render(table, out);
        if (host->n_engine_status) {
                static const VmctlColumn engine_columns[] = {{"Engine", false}, {"Status", false}};
                g_autoptr(VmctlTable) engines = vmctl_table_new(engine_columns, G_N_ELEMENTS(engine_columns));

                for (size_t i = 0; i < host->n_engines && i < host->n_engine_status; i++)
                        vmctl_table_add(engines, text(host->engines[i]), text(host->engine_status[i]));
                g_string_append_c(out, '\n');
                vmctl_table_render(engines, out);
        }
}

static const char *cluster_node_state_name(Vmms__V1__ClusterNodeState state)
{
        switch (state) {
        case VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_UP:
                return "Up";
        case VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_DOWN:
                return "Down";
        case VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_PAUSED:
                return "Paused";
        default:
                return "Unknown";
        }
}

void vmctl_format_cluster_nodes(GString *out, Vmms__V1__ClusterNode *const *nodes, size_t n_nodes)
{
        static const VmctlColumn columns[] = {
                {"Name", false},       {"State", false},      {"Address", false},      {"VMs", true},
                {"RunningVMs", true},  {"Memory(M)", true},   {"FreeMemory(M)", true}, {"CPU(%)", true},
                {"CPUWait(us)", true}, {"Pressure(%)", true}, {"LastRenewal", false},  {"Leader", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_nodes; i++) {
                const Vmms__V1__ClusterNode *n = nodes[i];
                g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(n->last_renewal_unix_ms / 1000);
                g_autofree char *when = t ? g_date_time_format(t, "%H:%M:%S") : g_strdup("-");

                vmctl_table_add(table, text(n->name), text(cluster_node_state_name(n->state)),
                                text(n->address), number(n->vm_count), number(n->running_vm_count),
                                mib(n->memory_pool_bytes), mib(n->memory_free_bytes),
                                g_strdup_printf("%.0f", n->cpu_load_pct),
                                g_strdup_printf("%.0f", n->cpu_wait_per_dispatch_ns / 1000),
                                g_strdup_printf("%.0f", n->average_pressure), g_steal_pointer(&when),
                                text(n->leader ? "yes" : ""));
        }
        vmctl_table_render(table, out);
}

void vmctl_format_cluster_settings(GString *out, const Vmms__V1__ClusterSettings *s)
{
        static const VmctlColumn columns[] = {
                {"AutoBalance", false},
                {"AutoBalanceThreshold(%)", true},
                {"AutoBalanceCpuWait(us)", true},
                {"UpdatedBy", false},
                {"Updated", false},
        };
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));
        g_autoptr(GDateTime) t = s->stored ? g_date_time_new_from_unix_utc(s->updated_unix_ms / 1000) : NULL;
        g_autofree char *when = t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S") : g_strdup("-");
        g_autofree char *by =
                s->stored ? g_strdup(s->updated_by) : g_strdup_printf("%s (defaults)", s->updated_by);

        vmctl_table_add(table, text(s->auto_balance ? "True" : "False"), number(s->auto_balance_threshold),
                        number(s->auto_balance_cpu_wait_us), g_steal_pointer(&by), g_steal_pointer(&when));
        vmctl_table_render(table, out);
}

void vmctl_format_counters(GString *out, const Vmms__V1__GetCountersResponse *counters)
{
        static const VmctlColumn columns[] = {{"Path", false}, {"Value", true}, {"Unit", false}};
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < counters->n_samples; i++)
                vmctl_table_add(table, text(counters->samples[i]->path),
                                vmctl_format_counter_value(counters->samples[i]->value),
                                text(counters->samples[i]->unit));
        vmctl_table_render(table, out);
}

/* Format-List style: one block per finding, the host's status first. */
void vmctl_format_host_health(GString *out, const Vmms__V1__HostHealth *health)
{
        g_string_append_printf(out, "Host     : %s\n", health->status);
        if (!health->n_findings)
                g_string_append(out, "Findings : none (no sign of an over-committed host)\n");
        for (size_t i = 0; i < health->n_findings; i++) {
                const Vmms__V1__HealthFinding *f = health->findings[i];
                g_autofree char *value = vmctl_format_counter_value(f->value);
                g_autofree char *threshold = vmctl_format_counter_value(f->threshold);

                g_string_append_printf(out, "\nVMName   : %s\n", *f->vm ? f->vm : "(host)");
                g_string_append_printf(out, "Rule     : %s\n", f->rule);
                g_string_append_printf(out, "Counter  : %s\n", f->counter);
                g_string_append_printf(out, "Value    : %s %s\n", value, f->unit);
                g_string_append_printf(out, "Threshold: %s %s over %u s\n", threshold, f->unit,
                                       f->window_seconds);
                g_string_append_printf(out, "For      : %u s\n", f->for_seconds);
                if (f->relief_bytes)
                        g_string_append_printf(out, "Relief(M): %" G_GUINT64_FORMAT "\n",
                                               f->relief_bytes >> 20);
                g_string_append_printf(out, "Advice   : %s\n", f->advice);
        }
}

static char *event_time(int64_t unix_ms)
{
        g_autoptr(GDateTime) time = g_date_time_new_from_unix_local(unix_ms / 1000);

        return time ? g_date_time_format(time, "%Y-%m-%d %H:%M:%S") : g_strdup("");
}

static char *event_state(const Vmms__V1__Event *event)
{
        return g_strdup(event->state == VMMS__V1__VM_STATE__VM_STATE_UNSPECIFIED
                                ? ""
                                : vmctl_vm_state_name(event->state));
}

static const VmctlColumn event_columns[] = {
        {"Id", true},    {"Time", false},  {"VMName", false},
        {"Kind", false}, {"State", false}, {"Message", false},
};

void vmctl_format_events(GString *out, Vmms__V1__Event *const *events, size_t n_events)
{
        g_autoptr(VmctlTable) table = vmctl_table_new(event_columns, G_N_ELEMENTS(event_columns));

        for (size_t i = 0; i < n_events; i++) {
                const Vmms__V1__Event *e = events[i];

                vmctl_table_add(table, g_strdup_printf("%" G_GINT64_FORMAT, e->id),
                                event_time(e->time_unix_ms), text(e->vm_name), text(e->kind), event_state(e),
                                text(e->message));
        }
        vmctl_table_render(table, out);
}

#define EVENT_LINE "%6s %-19s %-15s %-10s %-9s %s\n"

void vmctl_format_event_line(GString *out, const Vmms__V1__Event *event, bool header)
{
        g_autofree char *id = g_strdup_printf("%" G_GINT64_FORMAT, event->id);
        g_autofree char *time = event_time(event->time_unix_ms), *state = event_state(event);
        g_autofree char *message = one_line(text(event->message));

        if (header) {
                g_string_append_printf(out, EVENT_LINE, "Id", "Time", "VMName", "Kind", "State", "Message");
                g_string_append_printf(out, EVENT_LINE, "--", "----", "------", "----", "-----", "-------");
        }
        g_string_append_printf(out, EVENT_LINE, id, time, event->vm_name, event->kind, state, message);
}

void vmctl_format_hard_disk_drives(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"VMName", false}, {"Location", true}, {"Format", false}, {"Path", false}};
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++)
                for (size_t j = 0; j < vms[i]->n_hard_disk_drives; j++) {
                        const Vmms__V1__HardDiskDrive *d = vms[i]->hard_disk_drives[j];

                        vmctl_table_add(table, text(vms[i]->name), g_strdup_printf("%zu", j), text(d->format),
                                        text(d->path));
                }
        vmctl_table_render(table, out);
}

void vmctl_format_network_adapters(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms)
{
        static const VmctlColumn columns[] = {
                {"VMName", false}, {"Name", false}, {"SwitchName", false}, {"MacAddress", false}};
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_vms; i++)
                for (size_t j = 0; j < vms[i]->n_network_adapters; j++) {
                        const Vmms__V1__NetworkAdapter *a = vms[i]->network_adapters[j];

                        vmctl_table_add(table, text(vms[i]->name), text(a->name), text(a->switch_name),
                                        text(a->mac_address));
                }
        vmctl_table_render(table, out);
}

/* Get-VMSnapshot: the VM, each checkpoint's name, when it was taken, the VM's state then
 * and the size of its saved state (none for an Off VM's: settings only). */
void vmctl_format_checkpoints(GString *out, const char *vm_name, Vmms__V1__Checkpoint *const *checkpoints,
                              size_t n_checkpoints)
{
        static const VmctlColumn columns[] = {{"VMName", false},
                                              {"Name", false},
                                              {"CreationTime", false},
                                              {"State", false},
                                              {"Size", true}};
        g_autoptr(VmctlTable) table = vmctl_table_new(columns, G_N_ELEMENTS(columns));

        for (size_t i = 0; i < n_checkpoints; i++) {
                const Vmms__V1__Checkpoint *c = checkpoints[i];

                vmctl_table_add(table, g_strdup(vm_name), text(c->name), event_time(c->created_unix_ms),
                                g_strdup(vmctl_vm_state_name(c->vm_state)),
                                c->state_bytes ? vmctl_format_size(c->state_bytes)
                                               : g_strdup("settings only"));
        }
        vmctl_table_render(table, out);
}
