/* hvctl: reads the hypervisor's counters over the root interface. Samples twice and
 * prints rates over the interval, as a table or as JSON. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hv-client.h"
#include "hv-wire.h"

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

static void print_lps(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, uint64_t dt,
                      bool json)
{
        if (!json)
                g_string_append(
                        out, "LP  Node  %Total  %Guest  %Hypervisor  %Scheduler  %Idle  ContextSwitches/s  "
                             "%HostRun  %HostWait\n");
        for (size_t i = 0; i < b->n_lps && i < a->n_lps; i++) {
                const Vmms__Hv__LpCounters *la = a->lps[i], *lb = b->lps[i];
                double guest = pct(delta(lb->guest_ns, la->guest_ns), dt);
                double hyp = pct(delta(lb->hypervisor_ns, la->hypervisor_ns), dt);
                double sched = pct(delta(lb->scheduler_ns, la->scheduler_ns), dt);
                double idle = pct(delta(lb->idle_ns, la->idle_ns), dt);
                double cs = per_sec(delta(lb->context_switches, la->context_switches), dt);
                double host_run = pct(delta(lb->host_run_ns, la->host_run_ns), dt);
                double host_wait = pct(delta(lb->host_wait_ns, la->host_wait_ns), dt);

                if (json)
                        g_string_append_printf(
                                out,
                                "%s{\"index\":%u,\"node\":%u,\"total_run_pct\":%.3f,\"guest_run_pct\":%.3f,"
                                "\"hypervisor_run_pct\":%.3f,\"scheduler_pct\":%.4f,\"idle_pct\":%.3f,"
                                "\"context_switches_per_sec\":%.1f,\"dispatches_per_sec\":%.1f,"
                                "\"host_run_pct\":%.3f,\"host_wait_pct\":%.3f,\"guest_ns\":%" G_GUINT64_FORMAT
                                ",\"hypervisor_ns\":%" G_GUINT64_FORMAT ",\"scheduler_ns\":%" G_GUINT64_FORMAT
                                ",\"idle_ns\":%" G_GUINT64_FORMAT "}",
                                i ? "," : "", lb->index, lb->node, guest + hyp, guest, hyp, sched, idle, cs,
                                per_sec(delta(lb->dispatches, la->dispatches), dt), host_run, host_wait,
                                lb->guest_ns, lb->hypervisor_ns, lb->scheduler_ns, lb->idle_ns);
                else
                        g_string_append_printf(
                                out, "%-3u %4u  %6.2f  %6.2f  %11.2f  %10.3f  %5.2f  %17.1f  %8.2f  %9.2f\n",
                                lb->index, lb->node, guest + hyp, guest, hyp, sched, idle, cs, host_run,
                                host_wait);
        }
}

static void print_vp(GString *out, const Vmms__Hv__VpCounters *va, const Vmms__Hv__VpCounters *vb,
                     uint64_t dt, bool first, bool json)
{
        static const Vmms__Hv__VpCounters zero = VMMS__HV__VP_COUNTERS__INIT;
        uint64_t run, guest, dispatches, wait, wake_dispatches, wake_wait;
        double share = vb->share_ppm / 1e4;

        if (!va)
                va = &zero; /* hot-added since the first sample */
        run = delta(vb->run_ns, va->run_ns);
        guest = delta(vb->guest_ns, va->guest_ns);
        dispatches = delta(vb->dispatches, va->dispatches);
        wait = delta(vb->wait_ns, va->wait_ns);
        wake_dispatches = delta(vb->wake_dispatches, va->wake_dispatches);
        wake_wait = delta(vb->wake_wait_ns, va->wake_wait_ns);
        if (json) {
                g_string_append_printf(
                        out,
                        "%s{\"index\":%u,\"state\":\"%s\",\"total_run_pct\":%.3f,\"guest_run_pct\":%.3f,"
                        "\"share_pct\":%.3f,\"lag_ns\":%" G_GINT64_FORMAT ",\"dispatches\":%" G_GUINT64_FORMAT
                        ",\"hypercalls\":%" G_GUINT64_FORMAT ",\"invalid_hypercalls\":%" G_GUINT64_FORMAT
                        ",\"wait_ns_per_dispatch\":%" G_GUINT64_FORMAT ",\"run_ns\":%" G_GUINT64_FORMAT
                        ",\"wait_ns\":%" G_GUINT64_FORMAT
                        ",\"intercepts_per_sec\":%.1f,\"pending_interrupts_per_sec\":%.1f"
                        ",\"signals\":%" G_GUINT64_FORMAT
                        ",\"home_node\":%u,\"preferred_lp_dispatches\":%" G_GUINT64_FORMAT
                        ",\"home_node_dispatches\":%" G_GUINT64_FORMAT
                        ",\"wake_dispatches\":%" G_GUINT64_FORMAT ",\"wake_wait_ns\":%" G_GUINT64_FORMAT
                        ",\"wake_wait_ns_per_dispatch\":%" G_GUINT64_FORMAT
                        ",\"wake_wait_max_ns\":%" G_GUINT64_FORMAT ",\"yields\":%" G_GUINT64_FORMAT
                        ",\"cap_throttles\":%" G_GUINT64_FORMAT ",\"boosts\":%" G_GUINT64_FORMAT
                        ",\"cap_window_max_pct\":%.3f}",
                        first ? "" : ",", vb->index, vb->state, pct(run, dt), pct(guest, dt), share,
                        vb->lag_ns, vb->dispatches, vb->hypercalls, vb->invalid_hypercalls,
                        dispatches ? wait / dispatches : 0, vb->run_ns, vb->wait_ns,
                        per_sec(delta(vb->hypercalls, va->hypercalls), dt),
                        per_sec(delta(vb->signals, va->signals), dt), vb->signals, vb->home_node,
                        vb->preferred_lp_dispatches, vb->home_node_dispatches, vb->wake_dispatches,
                        vb->wake_wait_ns, wake_dispatches ? wake_wait / wake_dispatches : 0,
                        vb->wake_wait_max_ns, vb->yields, vb->cap_throttles, vb->boosts,
                        vb->cap_window_max_ns / 1e6);
                return;
        }
        g_string_append_printf(
                out,
                "  %-3u %-8s %7.2f %7.2f %7.2f %11" G_GUINT64_FORMAT " %15" G_GUINT64_FORMAT
                " %13.1f %13.1f %7.1f %9.1f %15" G_GUINT64_FORMAT "\n",
                vb->index, vb->state, pct(run, dt), pct(guest, dt), share, vb->dispatches,
                dispatches ? wait / dispatches : 0, per_sec(delta(vb->hypercalls, va->hypercalls), dt),
                per_sec(delta(vb->signals, va->signals), dt),
                pct(delta(vb->preferred_lp_dispatches, va->preferred_lp_dispatches), dispatches),
                pct(delta(vb->home_node_dispatches, va->home_node_dispatches), dispatches),
                wake_dispatches ? wake_wait / wake_dispatches : 0);
}

static void print_partitions(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b,
                             uint64_t dt, bool json)
{
        static const Vmms__Hv__ProcessorSettings no_settings = VMMS__HV__PROCESSOR_SETTINGS__INIT;

        for (size_t i = 0; i < b->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pb = b->partitions[i],
                                                  *pa = find_partition(a, pb->partition_id);
                const Vmms__Hv__ProcessorSettings *ps = pb->processor ? pb->processor : &no_settings;

                if (json)
                        g_string_append_printf(out,
                                               "%s{\"id\":%" G_GUINT64_FORMAT
                                               ",\"name\":\"%s\",\"assigned_bytes\":%" G_GUINT64_FORMAT
                                               ",\"maximum_bytes\":%" G_GUINT64_FORMAT
                                               ",\"resident_bytes\":%" G_GUINT64_FORMAT
                                               ",\"console_dropped_bytes\":%" G_GUINT64_FORMAT
                                               ",\"reserve\":%u,\"maximum\":%u"
                                               ",\"relative_weight\":%u,\"maximum_vp_count\":%u"
                                               ",\"visible_bytes\":%" G_GUINT64_FORMAT
                                               ",\"ballooned_bytes\":%" G_GUINT64_FORMAT
                                               ",\"hot_added_bytes\":%" G_GUINT64_FORMAT
                                               ",\"refused_pages\":%" G_GUINT64_FORMAT
                                               ",\"guest_messages\":%" G_GUINT64_FORMAT
                                               ",\"guest_messages_refused\":%" G_GUINT64_FORMAT
                                               ",\"guest_signals\":%" G_GUINT64_FORMAT
                                               ",\"guest_signals_coalesced\":%" G_GUINT64_FORMAT ",\"vps\":[",
                                               i ? "," : "", pb->partition_id, pb->name, pb->assigned_bytes,
                                               pb->maximum_bytes, pb->resident_bytes,
                                               pb->console_dropped_bytes, ps->reserve, ps->maximum,
                                               ps->relative_weight, pb->maximum_vp_count, pb->visible_bytes,
                                               pb->ballooned_bytes, pb->hot_added_bytes, pb->refused_pages,
                                               pb->guest_messages, pb->guest_messages_refused,
                                               pb->guest_signals, pb->guest_signals_coalesced);
                else
                        g_string_append_printf(
                                out,
                                "Partition %" G_GUINT64_FORMAT " %s: assigned %" G_GUINT64_FORMAT
                                " MiB (visible %" G_GUINT64_FORMAT
                                " MiB, ballooned %.1f MiB), resident %.1f MiB, "
                                "reserve %u%%, maximum %u%%, weight %u\n"
                                "  VP  State     %%Total  %%Guest  %%Share  Dispatches  WaitNs/Dispatch"
                                "  Intercepts/s  Interrupts/s  %%PrefLP  %%HomeNode  WakeNs/Dispatch\n",
                                pb->partition_id, pb->name, pb->assigned_bytes >> 20, pb->visible_bytes >> 20,
                                (double)pb->ballooned_bytes / (1 << 20),
                                (double)pb->resident_bytes / (1 << 20), ps->reserve, ps->maximum,
                                ps->relative_weight);
                for (size_t v = 0; v < pb->n_vps; v++)
                        print_vp(out, pa && v < pa->n_vps ? pa->vps[v] : NULL, pb->vps[v], dt, v == 0, json);
                g_string_append(out, json ? "]}" : "\n");
        }
}

/* hvd's own threads, dispatched by Linux: what schedstat can tell. */
static void print_root_vps(GString *out, const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b,
                           uint64_t dt, bool json)
{
        if (!json)
                g_string_append(out, "Root VP  %Run  WaitNs/Dispatch  Dispatches/s\n");
        for (size_t i = 0; i < b->n_root_vps && i < a->n_root_vps; i++) {
                const Vmms__Hv__RootVpCounters *ra = a->root_vps[i], *rb = b->root_vps[i];
                uint64_t dispatches = delta(rb->dispatches, ra->dispatches);
                uint64_t wait_per = dispatches ? delta(rb->wait_ns, ra->wait_ns) / dispatches : 0;

                if (json)
                        g_string_append_printf(out,
                                               "%s{\"name\":\"%s\",\"total_run_pct\":%.3f,\"wait_ns_per_"
                                               "dispatch\":%" G_GUINT64_FORMAT
                                               ",\"dispatches_per_sec\":%.1f}",
                                               i ? "," : "", rb->name, pct(delta(rb->run_ns, ra->run_ns), dt),
                                               wait_per, per_sec(dispatches, dt));
                else
                        g_string_append_printf(out, "%-7s %5.2f  %15" G_GUINT64_FORMAT "  %12.1f\n", rb->name,
                                               pct(delta(rb->run_ns, ra->run_ns), dt), wait_per,
                                               per_sec(dispatches, dt));
        }
}

static void print_counters(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, bool json)
{
        uint64_t dt = b->time_ns - a->time_ns;
        g_autoptr(GString) out = g_string_new(NULL);

        if (json)
                g_string_append_printf(
                        out,
                        "{\"interval_ns\":%" G_GUINT64_FORMAT ",\"pool_total_bytes\":%" G_GUINT64_FORMAT
                        ",\"pool_used_bytes\":%" G_GUINT64_FORMAT ",\"scheduler\":\"%s\",\"numa_nodes\":%u"
                        ",\"io_boost\":%s,\"reserved_pct\":%u,\"capacity_pct\":%u,\"lps\":[",
                        dt, b->pool_total_bytes, b->pool_used_bytes, b->scheduler, b->numa_nodes,
                        b->io_boost ? "true" : "false", b->reserved_pct, b->capacity_pct);
        else
                g_string_append_printf(
                        out,
                        "Pool: %" G_GUINT64_FORMAT " MiB used of %" G_GUINT64_FORMAT " MiB\n"
                        "Scheduler: %s%s, %u NUMA node(s), reservations %u%% of %u%% capacity\n\n",
                        b->pool_used_bytes >> 20, b->pool_total_bytes >> 20, b->scheduler,
                        b->io_boost ? " with I/O-wake boost" : "", b->numa_nodes, b->reserved_pct,
                        b->capacity_pct);
        print_lps(out, a, b, dt, json);
        g_string_append(out, json ? "],\"partitions\":[" : "\n");
        print_partitions(out, a, b, dt, json);
        g_string_append(out, json ? "],\"root_vps\":[" : "");
        print_root_vps(out, a, b, dt, json);
        if (json)
                g_string_append(out, "]}\n");
        fputs(out->str, stdout);
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
        print_counters(first->counters, second->counters, json);
        return 0;
}
