/* hvctl: reads the hypervisor's counters over the root interface. Samples twice and
 * prints rates over the interval, as a table or as JSON (json-glib's). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "hv-client.h"
#include "hv-wire.h"

/* json-glib's numbers are int64: a count of nanoseconds passes 2^63 after 292 years. */
static gint64 json_count(uint64_t value)
{
        return value > G_MAXINT64 ? G_MAXINT64 : (gint64)value;
}

static double pct(uint64_t part, uint64_t whole)
{
        return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static const Vmms__Hv__PartitionCounters *find_partition(const Vmms__Hv__Counters *c, uint64_t id)
{
        for (size_t i = 0; i < c->n_partitions; i++)
                if (c->partitions[i]->partition_id == id)
                        return c->partitions[i];
        return NULL;
}

static double per_sec(uint64_t count, uint64_t dt_ns)
{
        return dt_ns ? (double)count * 1e9 / (double)dt_ns : 0.0;
}

static uint64_t delta(uint64_t b, uint64_t a)
{
        return b >= a ? b - a : 0; /* a counter never runs backwards; a new object starts at 0 */
}

static void print_lps(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        g_string_append(out, "LP  Node  %Total  %Guest  %Hypervisor  %Scheduler  %Idle  ContextSwitches/s  "
                             "%HostRun  %HostWait\n");
        for (size_t i = 0; i < b->n_lps && i < a->n_lps; i++) {
                const Vmms__Hv__LpCounters *la = a->lps[i], *lb = b->lps[i];
                double guest = pct(delta(lb->guest_ns, la->guest_ns), dt);
                double hyp = pct(delta(lb->hypervisor_ns, la->hypervisor_ns), dt);

                g_string_append_printf(
                        out, "%-3u %4u  %6.2f  %6.2f  %11.2f  %10.3f  %5.2f  %17.1f  %8.2f  %9.2f\n",
                        lb->index, lb->node, guest + hyp, guest, hyp,
                        pct(delta(lb->scheduler_ns, la->scheduler_ns), dt),
                        pct(delta(lb->idle_ns, la->idle_ns), dt),
                        per_sec(delta(lb->context_switches, la->context_switches), dt),
                        pct(delta(lb->host_run_ns, la->host_run_ns), dt),
                        pct(delta(lb->host_wait_ns, la->host_wait_ns), dt));
        }
}

static JsonArray *lps_json(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        JsonArray *lps = json_array_new();

        for (size_t i = 0; i < b->n_lps && i < a->n_lps; i++) {
                const Vmms__Hv__LpCounters *la = a->lps[i], *lb = b->lps[i];
                double guest = pct(delta(lb->guest_ns, la->guest_ns), dt);
                double hyp = pct(delta(lb->hypervisor_ns, la->hypervisor_ns), dt);
                JsonObject *lp = json_object_new();

                json_object_set_int_member(lp, "index", lb->index);
                json_object_set_int_member(lp, "node", lb->node);
                json_object_set_double_member(lp, "total_run_pct", guest + hyp);
                json_object_set_double_member(lp, "guest_run_pct", guest);
                json_object_set_double_member(lp, "hypervisor_run_pct", hyp);
                json_object_set_double_member(lp, "scheduler_pct",
                                              pct(delta(lb->scheduler_ns, la->scheduler_ns), dt));
                json_object_set_double_member(lp, "idle_pct", pct(delta(lb->idle_ns, la->idle_ns), dt));
                json_object_set_double_member(lp, "context_switches_per_sec",
                                              per_sec(delta(lb->context_switches, la->context_switches), dt));
                json_object_set_double_member(lp, "dispatches_per_sec",
                                              per_sec(delta(lb->dispatches, la->dispatches), dt));
                json_object_set_double_member(lp, "host_run_pct",
                                              pct(delta(lb->host_run_ns, la->host_run_ns), dt));
                json_object_set_double_member(lp, "host_wait_pct",
                                              pct(delta(lb->host_wait_ns, la->host_wait_ns), dt));
                json_object_set_int_member(lp, "guest_ns", json_count(lb->guest_ns));
                json_object_set_int_member(lp, "hypervisor_ns", json_count(lb->hypervisor_ns));
                json_object_set_int_member(lp, "scheduler_ns", json_count(lb->scheduler_ns));
                json_object_set_int_member(lp, "idle_ns", json_count(lb->idle_ns));
                json_array_add_object_element(lps, lp);
        }
        return lps;
}

/* The deltas of one VP between the samples; a VP hot-added since the first sample starts at zero. */
typedef struct VpRates {
        uint64_t run, guest, dispatches, wait, wake_dispatches, wake_wait;
        const Vmms__Hv__VpCounters *va;
} VpRates;

static VpRates vp_rates(const Vmms__Hv__VpCounters *va, const Vmms__Hv__VpCounters *vb)
{
        static const Vmms__Hv__VpCounters zero = VMMS__HV__VP_COUNTERS__INIT;

        if (!va)
                va = &zero;
        return (VpRates){
                .run = delta(vb->run_ns, va->run_ns),
                .guest = delta(vb->guest_ns, va->guest_ns),
                .dispatches = delta(vb->dispatches, va->dispatches),
                .wait = delta(vb->wait_ns, va->wait_ns),
                .wake_dispatches = delta(vb->wake_dispatches, va->wake_dispatches),
                .wake_wait = delta(vb->wake_wait_ns, va->wake_wait_ns),
                .va = va,
        };
}

static void print_vp(GString *out, const Vmms__Hv__VpCounters *va, const Vmms__Hv__VpCounters *vb,
                     uint64_t dt)
{
        VpRates r = vp_rates(va, vb);

        g_string_append_printf(
                out,
                "  %-3u %-8s %7.2f %7.2f %7.2f %11" G_GUINT64_FORMAT " %15" G_GUINT64_FORMAT
                " %13.1f %13.1f %7.1f %9.1f %15" G_GUINT64_FORMAT "\n",
                vb->index, vb->state, pct(r.run, dt), pct(r.guest, dt), vb->share_ppm / 1e4, vb->dispatches,
                r.dispatches ? r.wait / r.dispatches : 0,
                per_sec(delta(vb->hypercalls, r.va->hypercalls), dt),
                per_sec(delta(vb->signals, r.va->signals), dt),
                pct(delta(vb->preferred_lp_dispatches, r.va->preferred_lp_dispatches), r.dispatches),
                pct(delta(vb->home_node_dispatches, r.va->home_node_dispatches), r.dispatches),
                r.wake_dispatches ? r.wake_wait / r.wake_dispatches : 0);
}

static JsonObject *vp_json(const Vmms__Hv__VpCounters *va, const Vmms__Hv__VpCounters *vb, uint64_t dt)
{
        VpRates r = vp_rates(va, vb);
        JsonObject *vp = json_object_new();

        json_object_set_int_member(vp, "index", vb->index);
        json_object_set_string_member(vp, "state", vb->state);
        json_object_set_double_member(vp, "total_run_pct", pct(r.run, dt));
        json_object_set_double_member(vp, "guest_run_pct", pct(r.guest, dt));
        json_object_set_double_member(vp, "share_pct", vb->share_ppm / 1e4);
        json_object_set_int_member(vp, "lag_ns", vb->lag_ns);
        json_object_set_int_member(vp, "dispatches", json_count(vb->dispatches));
        json_object_set_int_member(vp, "hypercalls", json_count(vb->hypercalls));
        json_object_set_int_member(vp, "invalid_hypercalls", json_count(vb->invalid_hypercalls));
        json_object_set_int_member(vp, "wait_ns_per_dispatch",
                                   json_count(r.dispatches ? r.wait / r.dispatches : 0));
        json_object_set_int_member(vp, "run_ns", json_count(vb->run_ns));
        json_object_set_int_member(vp, "wait_ns", json_count(vb->wait_ns));
        json_object_set_double_member(vp, "intercepts_per_sec",
                                      per_sec(delta(vb->hypercalls, r.va->hypercalls), dt));
        json_object_set_double_member(vp, "pending_interrupts_per_sec",
                                      per_sec(delta(vb->signals, r.va->signals), dt));
        json_object_set_int_member(vp, "signals", json_count(vb->signals));
        json_object_set_int_member(vp, "home_node", vb->home_node);
        json_object_set_int_member(vp, "preferred_lp_dispatches", json_count(vb->preferred_lp_dispatches));
        json_object_set_int_member(vp, "home_node_dispatches", json_count(vb->home_node_dispatches));
        json_object_set_int_member(vp, "wake_dispatches", json_count(vb->wake_dispatches));
        json_object_set_int_member(vp, "wake_wait_ns", json_count(vb->wake_wait_ns));
        json_object_set_int_member(vp, "wake_wait_ns_per_dispatch",
                                   json_count(r.wake_dispatches ? r.wake_wait / r.wake_dispatches : 0));
        json_object_set_int_member(vp, "wake_wait_max_ns", json_count(vb->wake_wait_max_ns));
        json_object_set_int_member(vp, "yields", json_count(vb->yields));
        json_object_set_int_member(vp, "cap_throttles", json_count(vb->cap_throttles));
        json_object_set_int_member(vp, "boosts", json_count(vb->boosts));
        json_object_set_double_member(vp, "cap_window_max_pct", vb->cap_window_max_ns / 1e6);
        return vp;
}

static void print_partitions(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b,
                             uint64_t dt)
{
        static const Vmms__Hv__ProcessorSettings no_settings = VMMS__HV__PROCESSOR_SETTINGS__INIT;

        for (size_t i = 0; i < b->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pb = b->partitions[i],
                                                  *pa = find_partition(a, pb->partition_id);
                const Vmms__Hv__ProcessorSettings *ps = pb->processor ? pb->processor : &no_settings;

                g_string_append_printf(
                        out,
                        "Partition %" G_GUINT64_FORMAT " %s: assigned %" G_GUINT64_FORMAT
                        " MiB (visible %" G_GUINT64_FORMAT " MiB, ballooned %.1f MiB), resident %.1f MiB, "
                        "reserve %u%%, maximum %u%%, weight %u\n"
                        "  VP  State     %%Total  %%Guest  %%Share  Dispatches  WaitNs/Dispatch"
                        "  Intercepts/s  Interrupts/s  %%PrefLP  %%HomeNode  WakeNs/Dispatch\n",
                        pb->partition_id, pb->name, pb->assigned_bytes >> 20, pb->visible_bytes >> 20,
                        (double)pb->ballooned_bytes / (1 << 20), (double)pb->resident_bytes / (1 << 20),
                        ps->reserve, ps->maximum, ps->relative_weight);
                for (size_t v = 0; v < pb->n_vps; v++)
                        print_vp(out, pa && v < pa->n_vps ? pa->vps[v] : NULL, pb->vps[v], dt);
                g_string_append_c(out, '\n');
        }
}

static JsonArray *partitions_json(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        static const Vmms__Hv__ProcessorSettings no_settings = VMMS__HV__PROCESSOR_SETTINGS__INIT;
        JsonArray *partitions = json_array_new();

        for (size_t i = 0; i < b->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pb = b->partitions[i],
                                                  *pa = find_partition(a, pb->partition_id);
                const Vmms__Hv__ProcessorSettings *ps = pb->processor ? pb->processor : &no_settings;
                JsonObject *p = json_object_new();
                JsonArray *vps = json_array_new();

                json_object_set_int_member(p, "id", json_count(pb->partition_id));
                json_object_set_string_member(p, "name", pb->name);
                json_object_set_int_member(p, "assigned_bytes", json_count(pb->assigned_bytes));
                json_object_set_int_member(p, "maximum_bytes", json_count(pb->maximum_bytes));
                json_object_set_int_member(p, "resident_bytes", json_count(pb->resident_bytes));
                json_object_set_int_member(p, "console_dropped_bytes", json_count(pb->console_dropped_bytes));
                json_object_set_int_member(p, "reserve", ps->reserve);
                json_object_set_int_member(p, "maximum", ps->maximum);
                json_object_set_int_member(p, "relative_weight", ps->relative_weight);
                json_object_set_int_member(p, "maximum_vp_count", pb->maximum_vp_count);
                json_object_set_int_member(p, "visible_bytes", json_count(pb->visible_bytes));
                json_object_set_int_member(p, "ballooned_bytes", json_count(pb->ballooned_bytes));
                json_object_set_int_member(p, "hot_added_bytes", json_count(pb->hot_added_bytes));
                json_object_set_int_member(p, "refused_pages", json_count(pb->refused_pages));
                json_object_set_int_member(p, "guest_messages", json_count(pb->guest_messages));
                json_object_set_int_member(p, "guest_messages_refused",
                                           json_count(pb->guest_messages_refused));
                json_object_set_int_member(p, "guest_signals", json_count(pb->guest_signals));
                json_object_set_int_member(p, "guest_signals_coalesced",
                                           json_count(pb->guest_signals_coalesced));
                for (size_t v = 0; v < pb->n_vps; v++)
                        json_array_add_object_element(
                                vps, vp_json(pa && v < pa->n_vps ? pa->vps[v] : NULL, pb->vps[v], dt));
                json_object_set_array_member(p, "vps", vps);
                json_array_add_object_element(partitions, p);
        }
        return partitions;
}

/* hvd's own threads, dispatched by Linux: what schedstat can tell. */
static void print_root_vps(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b,
                           uint64_t dt)
{
        g_string_append(out, "Root VP  %Run  WaitNs/Dispatch  Dispatches/s\n");
        for (size_t i = 0; i < b->n_root_vps && i < a->n_root_vps; i++) {
                const Vmms__Hv__RootVpCounters *ra = a->root_vps[i], *rb = b->root_vps[i];
                uint64_t dispatches = delta(rb->dispatches, ra->dispatches);

                g_string_append_printf(out, "%-7s %5.2f  %15" G_GUINT64_FORMAT "  %12.1f\n", rb->name,
                                       pct(delta(rb->run_ns, ra->run_ns), dt),
                                       dispatches ? delta(rb->wait_ns, ra->wait_ns) / dispatches : 0,
                                       per_sec(dispatches, dt));
        }
}

static JsonArray *root_vps_json(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        JsonArray *root_vps = json_array_new();

        for (size_t i = 0; i < b->n_root_vps && i < a->n_root_vps; i++) {
                const Vmms__Hv__RootVpCounters *ra = a->root_vps[i], *rb = b->root_vps[i];
                uint64_t dispatches = delta(rb->dispatches, ra->dispatches);
                JsonObject *vp = json_object_new();

                json_object_set_string_member(vp, "name", rb->name);
                json_object_set_double_member(vp, "total_run_pct", pct(delta(rb->run_ns, ra->run_ns), dt));
                json_object_set_int_member(
                        vp, "wait_ns_per_dispatch",
                        json_count(dispatches ? delta(rb->wait_ns, ra->wait_ns) / dispatches : 0));
                json_object_set_double_member(vp, "dispatches_per_sec", per_sec(dispatches, dt));
                json_array_add_object_element(root_vps, vp);
        }
        return root_vps;
}

static char *counters_text(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        GString *out = g_string_new(NULL);

        g_string_append_printf(out,
                               "Pool: %" G_GUINT64_FORMAT " MiB used of %" G_GUINT64_FORMAT " MiB\n"
                               "Scheduler: %s%s, %u NUMA node(s), reservations %u%% of %u%% capacity\n\n",
                               b->pool_used_bytes >> 20, b->pool_total_bytes >> 20, b->scheduler,
                               b->io_boost ? " with I/O-wake boost" : "", b->numa_nodes, b->reserved_pct,
                               b->capacity_pct);
        print_lps(out, a, b, dt);
        g_string_append_c(out, '\n');
        print_partitions(out, a, b, dt);
        print_root_vps(out, a, b, dt);
        return g_string_free(out, FALSE);
}

/* One line of JSON: the rates over the interval and the raw counters they came from. */
static char *counters_json(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt)
{
        g_autoptr(JsonObject) counters = json_object_new();
        g_autoptr(JsonNode) root = NULL;
        g_autoptr(JsonGenerator) generator = json_generator_new();
        g_autofree char *text = NULL;

        json_object_set_int_member(counters, "interval_ns", json_count(dt));
        json_object_set_int_member(counters, "pool_total_bytes", json_count(b->pool_total_bytes));
        json_object_set_int_member(counters, "pool_used_bytes", json_count(b->pool_used_bytes));
        json_object_set_string_member(counters, "scheduler", b->scheduler);
        json_object_set_int_member(counters, "numa_nodes", b->numa_nodes);
        json_object_set_boolean_member(counters, "io_boost", b->io_boost);
        json_object_set_int_member(counters, "reserved_pct", b->reserved_pct);
        json_object_set_int_member(counters, "capacity_pct", b->capacity_pct);
        json_object_set_array_member(counters, "lps", lps_json(a, b, dt));
        json_object_set_array_member(counters, "partitions", partitions_json(a, b, dt));
        json_object_set_array_member(counters, "root_vps", root_vps_json(a, b, dt));
        root = json_node_init_object(json_node_alloc(), counters);
        json_generator_set_root(generator, root);
        text = json_generator_to_data(generator, NULL);
        return g_strconcat(text, "\n", NULL);
}

int main(int argc, char **argv)
{
        g_autofree char *socket_path = NULL;
        gdouble interval = 1.0;
        gboolean json = FALSE;
        GOptionEntry entries[] = {
                {"socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path, "hvd's root-interface socket",
                 "PATH"},
                {"interval", 'i', 0, G_OPTION_ARG_DOUBLE, &interval,
                 "Seconds between the two samples (default 1)", "SEC"},
                {"json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL},
                {NULL},
        };
        g_autoptr(GOptionContext) options = g_option_context_new("counters - the hypervisor's counters");
        g_autoptr(GError) error = NULL;
        g_autoptr(HvClient) client = NULL;
        g_autoptr(Vmms__Hv__Reply) first = NULL, second = NULL;
        g_autofree char *text = NULL;
        uint64_t dt;
        int r;

        g_option_context_add_main_entries(options, entries, NULL);
        if (!g_option_context_parse(options, &argc, &argv, &error)) {
                fprintf(stderr, "hvctl: %s\n", error->message);
                return 2;
        }
        if (argc != 2 || strcmp(argv[1], "counters") != 0) {
                fprintf(stderr, "hvctl: expected one command: counters\n");
                return 2;
        }
        if (interval < 0.01 || interval > 3600) {
                fprintf(stderr, "hvctl: --interval %.3f is out of range 0.01-3600\n", interval);
                return 2;
        }
        if (!socket_path)
                socket_path = hv_wire_default_socket_path();
        r = hv_client_connect(socket_path, &client);
        if (r < 0) {
                fprintf(stderr, "hvctl: cannot connect to hvd at %s: %s\n", socket_path, g_strerror(-r));
                return 1;
        }
        r = hv_client_counters_get(client, &first);
        if (r >= 0) {
                g_usleep((gulong)(interval * G_USEC_PER_SEC));
                r = hv_client_counters_get(client, &second);
        }
        if (r < 0) {
                fprintf(stderr, "hvctl: %s\n", hv_client_last_error(client));
                return 1;
        }
        dt = second->counters->time_ns - first->counters->time_ns;
        text = json ? counters_json(first->counters, second->counters, dt)
                    : counters_text(first->counters, second->counters, dt);
        fputs(text, stdout);
        return 0;
}
