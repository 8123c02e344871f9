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

static void print_counters(const Vmms__Hv__Counters *a, const Vmms__Hv__Counters *b, bool json)
{
        uint64_t dt = b->time_ns - a->time_ns;
        g_autoptr(GString) out = g_string_new(NULL);

        if (json)
                g_string_append_printf(out,
                                       "{\"interval_ns\":%" G_GUINT64_FORMAT
                                       ",\"pool_total_bytes\":%" G_GUINT64_FORMAT
                                       ",\"pool_used_bytes\":%" G_GUINT64_FORMAT ",\"lps\":[",
                                       dt, b->pool_total_bytes, b->pool_used_bytes);
        else
                g_string_append_printf(out,
                                       "Pool: %" G_GUINT64_FORMAT " MiB used of %" G_GUINT64_FORMAT " MiB\n\n"
                                       "LP  %%Total  %%Guest  %%Hypervisor  %%Idle  ContextSwitches/s\n",
                                       b->pool_used_bytes >> 20, b->pool_total_bytes >> 20);
        for (size_t i = 0; i < b->n_lps && i < a->n_lps; i++) {
                const Vmms__Hv__LpCounters *la = a->lps[i], *lb = b->lps[i];
                double guest = pct(lb->guest_ns - la->guest_ns, dt),
                       hyp = pct(lb->hypervisor_ns - la->hypervisor_ns, dt),
                       idle = pct(lb->idle_ns - la->idle_ns, dt),
                       cs = dt ? (double)(lb->context_switches - la->context_switches) * 1e9 / (double)dt : 0;

                if (json)
                        g_string_append_printf(
                                out,
                                "%s{\"index\":%u,\"total_run_pct\":%.3f,\"guest_run_pct\":%.3f,"
                                "\"hypervisor_run_pct\":%.3f,\"idle_pct\":%.3f,\"context_switches_per_sec\":%"
                                ".1f}",
                                i ? "," : "", lb->index, guest + hyp, guest, hyp, idle, cs);
                else
                        g_string_append_printf(out, "%-3u %6.2f  %6.2f  %11.2f  %5.2f  %17.1f\n", lb->index,
                                               guest + hyp, guest, hyp, idle, cs);
        }
        g_string_append(out, json ? "],\"partitions\":[" : "\n");
        for (size_t i = 0; i < b->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pb = b->partitions[i],
                                                  *pa = find_partition(a, pb->partition_id);

                if (json)
                        g_string_append_printf(out,
                                               "%s{\"id\":%" G_GUINT64_FORMAT
                                               ",\"name\":\"%s\",\"assigned_bytes\":%" G_GUINT64_FORMAT
                                               ",\"maximum_bytes\":%" G_GUINT64_FORMAT
                                               ",\"resident_bytes\":%" G_GUINT64_FORMAT
                                               ",\"console_dropped_bytes\":%" G_GUINT64_FORMAT ",\"vps\":[",
                                               i ? "," : "", pb->partition_id, pb->name, pb->assigned_bytes,
                                               pb->maximum_bytes, pb->resident_bytes,
                                               pb->console_dropped_bytes);
                else
                        g_string_append_printf(
                                out,
                                "Partition %" G_GUINT64_FORMAT " %s: assigned %" G_GUINT64_FORMAT
                                " MiB, resident %.1f MiB\n"
                                "  VP  State     %%Total  %%Guest  Dispatches  Hypercalls  Invalid  "
                                "WaitNs/Dispatch\n",
                                pb->partition_id, pb->name, pb->assigned_bytes >> 20,
                                (double)pb->resident_bytes / (1 << 20));
                for (size_t v = 0; v < pb->n_vps; v++) {
                        const Vmms__Hv__VpCounters *vb = pb->vps[v];
                        const Vmms__Hv__VpCounters *va = pa && v < pa->n_vps ? pa->vps[v] : NULL;
                        uint64_t run = vb->run_ns - (va ? va->run_ns : 0),
                                 guest = vb->guest_ns - (va ? va->guest_ns : 0);
                        uint64_t dispatches = vb->dispatches - (va ? va->dispatches : 0);
                        uint64_t wait = vb->wait_ns - (va ? va->wait_ns : 0);
                        uint64_t wait_per = dispatches ? wait / dispatches : 0;

                        if (json)
                                g_string_append_printf(
                                        out,
                                        "%s{\"index\":%u,\"state\":\"%s\",\"total_run_pct\":%.3f,"
                                        "\"guest_run_pct\":%.3f,\"dispatches\":%" G_GUINT64_FORMAT
                                        ",\"hypercalls\":%" G_GUINT64_FORMAT
                                        ",\"invalid_hypercalls\":%" G_GUINT64_FORMAT
                                        ",\"wait_ns_per_dispatch\":%" G_GUINT64_FORMAT
                                        ",\"run_ns\":%" G_GUINT64_FORMAT "}",
                                        v ? "," : "", vb->index, vb->state, pct(run, dt), pct(guest, dt),
                                        vb->dispatches, vb->hypercalls, vb->invalid_hypercalls, wait_per,
                                        vb->run_ns);
                        else
                                g_string_append_printf(
                                        out,
                                        "  %-3u %-8s %7.2f %7.2f %11" G_GUINT64_FORMAT " %11" G_GUINT64_FORMAT
                                        " %8" G_GUINT64_FORMAT " %16" G_GUINT64_FORMAT "\n",
                                        vb->index, vb->state, pct(run, dt), pct(guest, dt), vb->dispatches,
                                        vb->hypercalls, vb->invalid_hypercalls, wait_per);
                }
                g_string_append(out, json ? "]}" : "\n");
        }
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
