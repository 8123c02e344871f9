/* hvd: the thin hypervisor's process. Options, the socket, the main loop; the rest is
 * the hypervisor core library. */
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hv-server.h"
#include "hv-size.h"
#include "hv-wire.h"
#include "hv.h"

static gboolean on_quit_signal(gpointer userdata)
{
        g_main_loop_quit(userdata);
        return G_SOURCE_CONTINUE;
}

static uint64_t default_pool_bytes(void)
{
        long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);

        return pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size / 2 / 4096 * 4096
                                          : 1ull << 30;
}

/* "N%" of the pool, or a size; NULL: HV_CONNECTION_MEMORY_DEFAULT_PCT %. Whole pages. */
static int parse_connection_memory(const char *text, uint64_t pool_bytes, uint64_t *ret)
{
        uint64_t pct = HV_CONNECTION_MEMORY_DEFAULT_PCT, bytes;
        char *end;

        if (text && g_str_has_suffix(text, "%")) {
                pct = g_ascii_strtoull(text, &end, 10);
                if (end == text || *end != '%' || pct < 1 || pct > 100)
                        return -EINVAL;
        } else if (text) {
                if (hv_size_parse(text, &bytes) < 0 || bytes < (4u << 20))
                        return -EINVAL;
                *ret = bytes / 4096 * 4096;
                return 0;
        }
        *ret = pool_bytes * pct / 100 / 4096 * 4096;
        return 0;
}

int main(int argc, char **argv)
{
        g_autofree char *socket_path = NULL, *memory = NULL, *scheduler = NULL, *connection_memory = NULL,
                        *cpu_model = NULL;
        gint lps = 0, slice_ms = 10, numa_nodes = 1;
        gint connection_partitions = HV_CONNECTION_PARTITIONS_DEFAULT,
             connection_vps = HV_CONNECTION_VPS_DEFAULT;
        gboolean io_boost = FALSE;
        GOptionEntry entries[] = {
                {"socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path, "Root-interface socket", "PATH"},
                {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Machine memory pool (default: half of RAM)",
                 "SIZE"},
                {"lps", 'l', 0, G_OPTION_ARG_INT, &lps, "Logical processors (default: host CPUs)", "N"},
                {"slice-ms", 0, 0, G_OPTION_ARG_INT, &slice_ms, "Scheduler time slice (default 10)", "MS"},
                {"scheduler", 0, 0, G_OPTION_ARG_STRING, &scheduler,
                 "Scheduling policy: share (reserve, cap, weight; default) or round-robin", "NAME"},
                {"numa-nodes", 0, 0, G_OPTION_ARG_INT, &numa_nodes,
                 "NUMA nodes to split the LPs into, evenly (default 1)", "N"},
                {"io-boost", 0, 0, G_OPTION_ARG_NONE, &io_boost,
                 "Boost VPs woken from Idle ahead of running ones (default off)", NULL},
                {"connection-partitions", 0, 0, G_OPTION_ARG_INT, &connection_partitions,
                 "Partitions one root-interface connection may hold (default 4)", "N"},
                {"connection-vps", 0, 0, G_OPTION_ARG_INT, &connection_vps,
                 "VPs one connection may hold over its partitions (default 64)", "N"},
                {"connection-memory", 0, 0, G_OPTION_ARG_STRING, &connection_memory,
                 "Memory one connection may be assigned: a size or a % of the pool (default 75%)", "SIZE|N%"},
                {"cpu-model", 0, 0, G_OPTION_ARG_STRING, &cpu_model,
                 "The processor model guests run on (the engine's names, e.g. haswell; default qemu64)",
                 "NAME"},
                {NULL},
        };
        g_autoptr(GOptionContext) options = g_option_context_new("- the vmms thin hypervisor");
        g_autoptr(GError) error = NULL;
        g_autoptr(GMainLoop) loop = NULL;
        g_autoptr(Hv) hv = NULL;
        g_autoptr(HvServer) server = NULL;
        g_autofree char *socket_dir = NULL;
        HvConfig config = {
                .sched_ops = &hv_sched_share_ops,
                .engine = &hv_engine_unicorn_ops,
        };
        HvConnectionLimits limits;
        HvCompatVector vector;
        const char *model_name = NULL;
        int r;

        g_option_context_add_main_entries(options, entries, NULL);
        if (!g_option_context_parse(options, &argc, &argv, &error)) {
                fprintf(stderr, "hvd: %s\n", error->message);
                return 2;
        }
        config.pool_bytes = default_pool_bytes();
        if (memory && (hv_size_parse(memory, &config.pool_bytes) < 0 || config.pool_bytes < (4u << 20) ||
                       config.pool_bytes % 4096)) {
                fprintf(stderr,
                        "hvd: --memory '%s' is not a size of at least 4MB in whole pages (e.g. 2GB)\n",
                        memory);
                return 2;
        }
        if (lps < 0 || lps > 1024) {
                fprintf(stderr, "hvd: --lps %d is out of range 1-1024\n", lps);
                return 2;
        }
        config.n_lps = lps ? (uint32_t)lps : (uint32_t)g_get_num_processors();
        if (slice_ms < 1 || slice_ms > 1000) {
                fprintf(stderr, "hvd: --slice-ms %d is out of range 1-1000\n", slice_ms);
                return 2;
        }
        config.slice_ns = (uint64_t)slice_ms * 1000000ull;
        if (scheduler && !(config.sched_ops = hv_sched_ops_lookup(scheduler))) {
                fprintf(stderr, "hvd: --scheduler '%s' is not one of share, round-robin\n", scheduler);
                return 2;
        }
        if (numa_nodes < 1 || (uint32_t)numa_nodes > config.n_lps) {
                fprintf(stderr, "hvd: --numa-nodes %d is out of range 1-%u (the LP count)\n", numa_nodes,
                        config.n_lps);
                return 2;
        }
        config.n_nodes = (uint32_t)numa_nodes;
        if (connection_partitions < 1 || connection_partitions > 4096) {
                fprintf(stderr, "hvd: --connection-partitions %d is out of range 1-4096\n",
                        connection_partitions);
                return 2;
        }
        if (connection_vps < 1 || connection_vps > 4096) {
                fprintf(stderr, "hvd: --connection-vps %d is out of range 1-4096\n", connection_vps);
                return 2;
        }
        limits.partitions = (uint32_t)connection_partitions;
        limits.vps = (uint32_t)connection_vps;
        r = parse_connection_memory(connection_memory, config.pool_bytes, &limits.memory_bytes);
        if (r < 0) {
                fprintf(stderr,
                        "hvd: --connection-memory '%s' is neither a size of at least 4MB (e.g. 2GB) nor "
                        "1%%-100%% of the pool\n",
                        connection_memory);
                return 2;
        }
        config.io_boost = io_boost;
        if (config.engine->cpu_model_lookup(cpu_model, &config.cpu_model, &model_name) < 0) {
                g_autoptr(GString) names = g_string_new(NULL);
                const char *name;

                for (int i = 0; (name = config.engine->cpu_model_name(i)); i++)
                        g_string_append_printf(names, "%s%s", i ? ", " : "", name);
                fprintf(stderr, "hvd: --cpu-model '%s' is not one of the %s engine's: %s\n", cpu_model,
                        config.engine->name, names->str);
                return 2;
        }
        {
                g_autofree char *why = NULL;

                if (hv_compat_vector_build(config.engine, config.cpu_model, false, &vector, &why) < 0) {
                        fprintf(stderr, "hvd: --cpu-model %s: %s\n", model_name, why);
                        return 2;
                }
        }
        if (!socket_path)
                socket_path = hv_wire_default_socket_path();
        socket_dir = g_path_get_dirname(socket_path);
        if (g_mkdir_with_parents(socket_dir, 0700) < 0) {
                fprintf(stderr, "hvd: cannot create %s: %s\n", socket_dir, g_strerror(errno));
                return 1;
        }

        r = hv_new(&config, g_main_context_default(), &hv);
        if (r < 0) {
                fprintf(stderr, "hvd: cannot start the hypervisor: %s\n", g_strerror(-r));
                return 1;
        }
        r = hv_server_new(hv, socket_path, &limits, &server);
        if (r < 0) {
                fprintf(stderr, "hvd: cannot listen on %s: %s\n", socket_path, g_strerror(-r));
                return 1;
        }
        loop = g_main_loop_new(NULL, FALSE);
        g_unix_signal_add(SIGTERM, on_quit_signal, loop);
        g_unix_signal_add(SIGINT, on_quit_signal, loop);
        g_message("hvd: %u LPs in %u NUMA nodes, pool %" G_GUINT64_FORMAT
                  " bytes, slice %d ms, engine %s %s, CPU model %s (CPUID %.12s), scheduler %s%s, socket %s; "
                  "per connection %u partitions, %u VPs, %" G_GUINT64_FORMAT " bytes",
                  config.n_lps, config.n_nodes, config.pool_bytes, slice_ms, config.engine->name,
                  vector.engine_version, vector.cpu_model, vector.cpuid_hash, config.sched_ops->name,
                  config.io_boost ? " with I/O-wake boost" : "", socket_path, limits.partitions, limits.vps,
                  limits.memory_bytes);
        if (config.sched_ops == &hv_sched_round_robin_ops)
                g_message("hvd: round-robin ignores reserve, maximum and relative weight (admission still "
                          "applies)");
        g_main_loop_run(loop);
        g_message("hvd: stopping");
        return 0;
}
