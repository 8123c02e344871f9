/* The Prometheus exporter: GET /metrics renders the core's counter walk (the figures
 * Get-Counter shows) and each VM's state. Names follow Prometheus's conventions: base
 * units (bytes, seconds, ratios), running totals as counters named _total, the VM and
 * processor as labels. Hyper-V's per-second and percent-of-time counters are served
 * as the running totals they are taken from (rate() gives them back); their _Total
 * instances are left to sum().
 *
 * Who may scrape is judged in the core: a plain HTTP caller (loopback only) is a local
 * reader; over TLS, the client certificate's subject maps to a role as on gRPC. */
#include <errno.h>
#include <libsoup/soup.h>
#include <math.h>
#include <string.h>

#include "api-metrics.h"
#include "vmms-counters.h"
#include "vmms-ops.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_PATH "/metrics"

typedef struct MetricName {
        const char *name;
        const char *help;
} MetricName;

/* Indexed by VmmsCounterId: each Hyper-V counter's metric. A counter (a running total)
 * ends in _total; the type follows the counter's base (vmms-counters.h). */
static const MetricName metric_names[VMMS_COUNTER_COUNT] = {
        [VMMS_COUNTER_LP_TOTAL_RUN_TIME] = {"vmms_lp_run_time_seconds_total",
                                            "Time the logical processor ran guest or hypervisor code "
                                            "(Hyper-V: % Total Run Time)"},
        [VMMS_COUNTER_LP_GUEST_RUN_TIME] = {"vmms_lp_guest_run_time_seconds_total",
                                            "Time the logical processor ran guest code (% Guest Run Time)"},
        [VMMS_COUNTER_LP_HYPERVISOR_RUN_TIME] = {"vmms_lp_hypervisor_run_time_seconds_total",
                                                 "Time the logical processor ran the hypervisor "
                                                 "(% Hypervisor Run Time)"},
        [VMMS_COUNTER_LP_IDLE_TIME] = {"vmms_lp_idle_time_seconds_total",
                                       "Time the logical processor was idle (% Idle Time)"},
        [VMMS_COUNTER_LP_CONTEXT_SWITCHES] = {"vmms_lp_context_switches_total",
                                              "Virtual processor switches on the logical processor "
                                              "(Context Switches/sec)"},
        [VMMS_COUNTER_HOST_LOGICAL_PROCESSORS] = {"vmms_host_logical_processors",
                                                  "Logical processors of the hypervisor"},
        [VMMS_COUNTER_HOST_PARTITIONS] = {"vmms_host_partitions", "Partitions the hypervisor runs"},
        [VMMS_COUNTER_HOST_POOL_BYTES] = {"vmms_host_memory_pool_bytes", "The hypervisor's memory pool"},
        [VMMS_COUNTER_HOST_POOL_USED_BYTES] = {"vmms_host_memory_pool_used_bytes",
                                               "Memory of the pool assigned to partitions"},
        [VMMS_COUNTER_BALANCER_AVAILABLE_MEMORY] = {"vmms_dm_balancer_available_memory_bytes",
                                                    "Pool memory Dynamic Memory may still give, above the "
                                                    "reserve (Available Memory)"},
        [VMMS_COUNTER_BALANCER_AVERAGE_PRESSURE] = {"vmms_dm_balancer_average_pressure_ratio",
                                                    "Average memory pressure of the VMs, committed / "
                                                    "assigned (Average Pressure / 100)"},
        [VMMS_COUNTER_BALANCER_SYSTEM_CURRENT_PRESSURE] = {"vmms_dm_balancer_system_current_pressure_ratio",
                                                           "Committed / assigned over all VMs "
                                                           "(System Current Pressure / 100)"},
        [VMMS_COUNTER_VM_PHYSICAL_MEMORY] = {"vmms_vm_memory_assigned_bytes",
                                             "Memory assigned to the VM (Physical Memory)"},
        [VMMS_COUNTER_VM_GUEST_VISIBLE_MEMORY] = {"vmms_vm_memory_visible_bytes",
                                                  "Memory the guest sees, ballooned memory included "
                                                  "(Guest Visible Physical Memory)"},
        [VMMS_COUNTER_VM_CURRENT_PRESSURE] = {"vmms_vm_memory_pressure_ratio",
                                              "The guest's committed / assigned memory "
                                              "(Current Pressure / 100)"},
        [VMMS_COUNTER_VM_AVERAGE_PRESSURE] = {"vmms_vm_memory_average_pressure_ratio",
                                              "Pressure averaged over the balancer's window "
                                              "(Average Pressure / 100)"},
        [VMMS_COUNTER_VM_MINIMUM_PRESSURE] =
                {"vmms_vm_memory_minimum_pressure_ratio",
                 "Lowest pressure in the balancer's window (Minimum Pressure / 100)"},
        [VMMS_COUNTER_VM_MAXIMUM_PRESSURE] = {"vmms_vm_memory_maximum_pressure_ratio",
                                              "Highest pressure in the balancer's window "
                                              "(Maximum Pressure / 100)"},
        [VMMS_COUNTER_VM_ADDED_MEMORY] = {"vmms_vm_memory_added_bytes_total",
                                          "Memory Dynamic Memory added to the VM (Added Memory)"},
        [VMMS_COUNTER_VM_REMOVED_MEMORY] = {"vmms_vm_memory_removed_bytes_total",
                                            "Memory Dynamic Memory removed from the VM (Removed Memory)"},
        [VMMS_COUNTER_VM_ADD_OPERATIONS] = {"vmms_vm_memory_add_operations_total",
                                            "Memory add operations (Memory Add Operations)"},
        [VMMS_COUNTER_VM_REMOVE_OPERATIONS] = {"vmms_vm_memory_remove_operations_total",
                                               "Memory remove operations (Memory Remove Operations)"},
        [VMMS_COUNTER_GUEST_COMMITTED_BYTES] = {"vmms_vm_memory_committed_bytes",
                                                "Memory the guest has committed, paged-out memory included"},
        [VMMS_COUNTER_GUEST_PAGES_IN] = {"vmms_vm_guest_pages_in_total",
                                         "Pages the guest read back from its paging disk"},
        [VMMS_COUNTER_GUEST_PAGES_OUT] = {"vmms_vm_guest_pages_out_total",
                                          "Pages the guest wrote to its paging disk"},
        [VMMS_COUNTER_GUEST_BALLOONED_BYTES] = {"vmms_vm_memory_ballooned_bytes",
                                                "Memory held by the guest's balloon"},
        [VMMS_COUNTER_PARTITION_HOST_RESIDENT_BYTES] = {"vmms_vm_memory_host_resident_bytes",
                                                        "Host memory really backing the guest, measured"},
        [VMMS_COUNTER_VP_TOTAL_RUN_TIME] = {"vmms_vp_run_time_seconds_total",
                                            "Time the virtual processor ran (% Total Run Time)"},
        [VMMS_COUNTER_VP_GUEST_RUN_TIME] = {"vmms_vp_guest_run_time_seconds_total",
                                            "Time the virtual processor ran guest code (% Guest Run Time)"},
        [VMMS_COUNTER_VP_CPU_WAIT_TIME_PER_DISPATCH] = {"vmms_vp_cpu_wait_time_seconds_total",
                                                        "Time the virtual processor waited to be dispatched "
                                                        "(CPU Wait Time Per Dispatch × dispatches)"},
        [VMMS_COUNTER_VP_DISPATCHES] = {"vmms_vp_dispatches_total",
                                        "Dispatches of the virtual processor (Dispatches/sec)"},
        [VMMS_COUNTER_VP_HYPERCALLS] = {"vmms_vp_hypercalls_total",
                                        "Hypercalls of the virtual processor (Hypercalls/sec)"},
};

#define VM_STATE_METRIC "vmms_vm_state"

struct ApiMetrics {
        VmmsManager *manager;
        VmmsAccess *access;
        const VmmsOp *op; /* whose role a scrape needs */
        SoupServer *server;
        bool tls;
        char *url;
};

/* ---- The exposition text ---- */

/* A scrape being written: each metric's lines are kept together, as the format
 * requires, however the walk interleaves them; a series seen twice is written once. */
struct ApiMetricsScrape {
        GString *families[VMMS_COUNTER_COUNT];
        GString *vm_states;
        GHashTable *series; /* "name{labels}" written so far */
};

static void append_label_value(GString *out, const char *value)
{
        for (const char *p = value; *p; p++) {
                if (*p == '\\')
                        g_string_append(out, "\\\\");
                else if (*p == '"')
                        g_string_append(out, "\\\"");
                else if (*p == '\n')
                        g_string_append(out, "\\n");
                else
                        g_string_append_c(out, *p);
        }
}

static void append_value(GString *out, double value)
{
        char buf[G_ASCII_DTOSTR_BUF_SIZE];

        if (isnan(value))
                g_string_append(out, "NaN");
        else if (isinf(value))
                g_string_append(out, value > 0 ? "+Inf" : "-Inf");
        else
                g_string_append(out, g_ascii_dtostr(buf, sizeof(buf), value));
}

/* Appends `name{labels} value`, unless that series is written already. `labels` holds
 * label names and values in pairs, NULL-ended. */
static void append_series(ApiMetricsScrape *s, GString *out, const char *name, const char *const *labels,
                          double value)
{
        g_autoptr(GString) series = g_string_new(name);

        for (size_t i = 0; labels[i]; i += 2) {
                g_string_append_printf(series, "%s%s=\"", i ? "," : "{", labels[i]);
                append_label_value(series, labels[i + 1]);
                g_string_append_c(series, '"');
        }
        if (labels[0])
                g_string_append_c(series, '}');
        if (g_hash_table_contains(s->series, series->str))
                return;
        g_string_append_printf(out, "%s ", series->str);
        append_value(out, value);
        g_string_append_c(out, '\n');
        g_hash_table_add(s->series, g_strdup(series->str));
}

static void append_header(GString *out, const char *name, const char *help, const char *type)
{
        g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

ApiMetricsScrape *api_metrics_scrape_new(void)
{
        ApiMetricsScrape *s = g_new0(ApiMetricsScrape, 1);

        s->vm_states = g_string_new(NULL);
        s->series = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        return s;
}

void api_metrics_scrape_add_counter(ApiMetricsScrape *s, const VmmsCounterSample *sample)
{
        const MetricName *metric = &metric_names[sample->id];
        char lp[16], vp[16];
        const char *labels[7];
        size_t n = 0;

        if (sample->aggregate || !metric->name)
                return;
        if (sample->vm) {
                labels[n++] = "vm";
                labels[n++] = sample->vm;
        }
        if (sample->lp >= 0) {
                g_snprintf(lp, sizeof(lp), "%d", sample->lp);
                labels[n++] = "lp";
                labels[n++] = lp;
        }
        if (sample->vp >= 0) {
                g_snprintf(vp, sizeof(vp), "%d", sample->vp);
                labels[n++] = "vp";
                labels[n++] = vp;
        }
        labels[n] = NULL;
        if (!s->families[sample->id])
                s->families[sample->id] = g_string_new(NULL);
        append_series(s, s->families[sample->id], metric->name, labels, sample->base_value);
}

void api_metrics_scrape_add_vm(ApiMetricsScrape *s, const char *vm, VmmsVmState state)
{
        for (int other = 0; other < VMMS_VM_STATE_COUNT; other++) {
                const char *labels[] = {"vm", vm, "state", vmms_vm_state_to_string((VmmsVmState)other), NULL};

                append_series(s, s->vm_states, VM_STATE_METRIC, labels, state == (VmmsVmState)other);
        }
}

char *api_metrics_scrape_finish(ApiMetricsScrape *s)
{
        GString *out = g_string_new(NULL);

        for (int id = 0; id < VMMS_COUNTER_COUNT; id++) {
                const MetricName *metric = &metric_names[id];

                if (!s->families[id])
                        continue;
                append_header(out, metric->name, metric->help,
                              vmms_counter_info[id].base == VMMS_COUNTER_BASE_GAUGE ? "gauge" : "counter");
                g_string_append(out, s->families[id]->str);
                g_string_free(s->families[id], TRUE);
        }
        /* vmms_vm_state{vm,state}: a state set, 1 for the VM's state and 0 for the others. */
        append_header(out, VM_STATE_METRIC, "The VM's state: 1 for the state it is in, 0 for the others",
                      "gauge");
        g_string_append(out, s->vm_states->str);
        g_string_free(s->vm_states, TRUE);
        g_hash_table_unref(s->series);
        g_free(s);
        return g_string_free(out, FALSE);
}

static void on_counter(const VmmsCounterSample *sample, void *userdata)
{
        api_metrics_scrape_add_counter(userdata, sample);
}

char *api_metrics_render(VmmsManager *m)
{
        ApiMetricsScrape *s = api_metrics_scrape_new();
        GPtrArray *vms = vmms_manager_vms(m);
        VmmsCounterSources sources;

        if (vmms_manager_counter_sources(m, &sources))
                vmms_counters_walk(&sources, on_counter, s);
        for (guint i = 0; i < vms->len; i++) {
                const VmmsVm *vm = vms->pdata[i];

                api_metrics_scrape_add_vm(s, vm->def.name, vm->def.state);
        }
        return api_metrics_scrape_finish(s);
}

/* ---- Callers ---- */

/* Who is scraping: on TLS the verified client certificate (none: a caller without a
 * role); on plain HTTP, which listens only on loopback, a local process. */
static void identify_caller(ApiMetrics *metrics, SoupServerMessage *msg, VmmsCaller *ret)
{
        const char *peer = soup_server_message_get_remote_host(msg);
        GTlsCertificate *cert;
        g_autofree char *subject = NULL, *cn = NULL;

        if (!metrics->tls) {
                vmms_caller_init_loopback(ret, peer);
                return;
        }
        cert = soup_server_message_get_tls_peer_certificate(msg);
        if (cert && soup_server_message_get_tls_peer_certificate_errors(msg) == 0) {
                subject = g_tls_certificate_get_subject_name(cert);
                cn = subject ? vmms_subject_common_name(subject) : NULL;
        }
        vmms_caller_init_tls(ret, subject, cn);
}

static void reply_text(SoupServerMessage *msg, guint status, const char *text)
{
        g_autofree char *body = g_strconcat(text, "\n", NULL);
        size_t len = strlen(body);

        soup_server_message_set_status(msg, status, NULL);
        soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_TAKE,
                                         g_steal_pointer(&body), len);
}

static void on_metrics_request(SoupServer *server, SoupServerMessage *msg, const char *path,
                               GHashTable *query, gpointer userdata)
{
        ApiMetrics *metrics = userdata;
        const char *method = soup_server_message_get_method(msg);
        g_auto(VmmsCaller) caller = {0};
        VmmsError error = {0};
        char *body;

        (void)server;
        (void)query;
        if (g_strcmp0(path, METRICS_PATH) != 0) {
                reply_text(msg, SOUP_STATUS_NOT_FOUND, "vmmsd serves only " METRICS_PATH);
                return;
        }
        if (g_strcmp0(method, "GET") != 0 && g_strcmp0(method, "HEAD") != 0) {
                soup_message_headers_append(soup_server_message_get_response_headers(msg), "Allow",
                                            "GET, HEAD");
                reply_text(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "use GET");
                return;
        }
        identify_caller(metrics, msg, &caller);
        if (!vmms_access_check(metrics->access, &caller, metrics->op, &error)) {
                vmms_manager_record_host_event(metrics->manager, "access-denied", error.message);
                reply_text(msg, SOUP_STATUS_FORBIDDEN, error.message);
                vmms_error_clear(&error);
                return;
        }
        body = api_metrics_render(metrics->manager);
        soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
        soup_server_message_set_response(msg, CONTENT_TYPE, SOUP_MEMORY_TAKE, body, strlen(body));
}

/* ---- The server ---- */

/* The TLS backend asks about every client certificate, verified against --tls-ca or
 * not: only one the CA signed gets a connection, as on gRPC. */
static gboolean on_accept_certificate(SoupServerMessage *msg, GTlsCertificate *cert,
                                      GTlsCertificateFlags errors, gpointer userdata)
{
        (void)msg;
        (void)cert;
        (void)userdata;
        return errors == 0;
}

static void on_request_started(SoupServer *server, SoupServerMessage *msg, gpointer userdata)
{
        (void)server;
        (void)userdata;
        g_signal_connect(msg, "accept-certificate", G_CALLBACK(on_accept_certificate), NULL);
}

/* "IP:PORT", "[IPv6]:PORT" or "localhost:PORT" to a socket address. */
static int parse_address(const char *text, GInetSocketAddress **ret, char **ret_error)
{
        g_autoptr(GSocketConnectable) parsed = NULL;
        g_autoptr(GInetAddress) ip = NULL;
        g_autoptr(GError) error = NULL;
        const char *host;
        guint16 port;

        parsed = g_network_address_parse(text, 0, &error);
        if (!parsed) {
                *ret_error = g_strdup_printf("--metrics '%s' is not HOST:PORT: %s", text, error->message);
                return -EINVAL;
        }
        host = g_network_address_get_hostname(G_NETWORK_ADDRESS(parsed));
        port = g_network_address_get_port(G_NETWORK_ADDRESS(parsed));
        if (port == 0) {
                *ret_error = g_strdup_printf("--metrics '%s' names no port (e.g. 127.0.0.1:9464)", text);
                return -EINVAL;
        }
        ip = g_ascii_strcasecmp(host, "localhost") == 0 ? g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4)
                                                        : g_inet_address_new_from_string(host);
        if (!ip) {
                *ret_error =
                        g_strdup_printf("--metrics '%s': '%s' is not an IP address or localhost", text, host);
                return -EINVAL;
        }
        *ret = G_INET_SOCKET_ADDRESS(g_inet_socket_address_new(ip, port));
        return 0;
}

static bool wants_tls(const ApiMetricsConfig *config, GInetSocketAddress *address)
{
        return config->tls || !g_inet_address_get_is_loopback(g_inet_socket_address_get_address(address));
}

static int check_tls_material(const ApiMetricsConfig *config, char **ret_error)
{
        if (config->tls_cert_path && config->tls_key_path && config->tls_ca_path)
                return 0;
        *ret_error =
                g_strdup_printf("metrics on %s are served only over TLS to clients with a certificate "
                                "(a non-loopback address, or --metrics-tls): give --tls-cert, --tls-key and "
                                "--tls-ca",
                                config->address);
        return -EINVAL;
}

static int set_up_tls(SoupServer *server, const ApiMetricsConfig *config, char **ret_error)
{
        g_autoptr(GTlsCertificate) cert = NULL;
        g_autoptr(GTlsDatabase) ca = NULL;
        g_autoptr(GError) error = NULL;
        int r = check_tls_material(config, ret_error);

        if (r < 0)
                return r;
        if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
                *ret_error = g_strdup("metrics over TLS: GLib has no TLS backend (install glib-networking)");
                return -ENOTSUP;
        }
        cert = g_tls_certificate_new_from_files(config->tls_cert_path, config->tls_key_path, &error);
        if (cert) {
                /* GTlsFileDatabase verifies nothing against a relative path. */
                g_autofree char *ca_path = g_canonicalize_filename(config->tls_ca_path, NULL);

                ca = g_tls_file_database_new(ca_path, &error);
        }
        if (!cert || !ca) {
                *ret_error = g_strdup_printf("metrics: cannot read TLS material: %s", error->message);
                return -EINVAL;
        }
        g_object_set(server, "tls-certificate", cert, "tls-database", ca, "tls-auth-mode",
                     G_TLS_AUTHENTICATION_REQUESTED, NULL);
        return 0;
}

int api_metrics_config_check(const ApiMetricsConfig *config, char **ret_error)
{
        g_autoptr(GInetSocketAddress) address = NULL;
        int r = parse_address(config->address, &address, ret_error);

        if (r < 0)
                return r;
        return wants_tls(config, address) ? check_tls_material(config, ret_error) : 0;
}

int api_metrics_new(VmmsManager *m, VmmsAccess *access, const ApiMetricsConfig *config, ApiMetrics **ret,
                    char **ret_error)
{
        g_autoptr(ApiMetrics) metrics = g_new0(ApiMetrics, 1);
        g_autoptr(GInetSocketAddress) address = NULL;
        g_autoptr(GError) error = NULL;
        GSList *uris;
        int r;

        r = parse_address(config->address, &address, ret_error);
        if (r < 0)
                return r;
        metrics->manager = m;
        metrics->access = access;
        metrics->op = vmms_op_lookup("GetCounters");
        g_assert(metrics->op);
        metrics->tls = wants_tls(config, address);
        metrics->server = soup_server_new("server-header", "vmmsd", NULL);
        if (metrics->tls) {
                r = set_up_tls(metrics->server, config, ret_error);
                if (r < 0)
                        return r;
        }
        soup_server_add_handler(metrics->server, NULL, on_metrics_request, metrics, NULL);
        if (metrics->tls)
                g_signal_connect(metrics->server, "request-started", G_CALLBACK(on_request_started), NULL);
        if (!soup_server_listen(metrics->server, G_SOCKET_ADDRESS(address),
                                metrics->tls ? SOUP_SERVER_LISTEN_HTTPS : 0, &error)) {
                *ret_error =
                        g_strdup_printf("metrics: cannot listen on %s: %s", config->address, error->message);
                return -EADDRNOTAVAIL;
        }
        uris = soup_server_get_uris(metrics->server);
        if (uris) {
                g_autofree char *base = g_uri_to_string(uris->data);

                metrics->url =
                        g_strconcat(base, base[strlen(base) - 1] == '/' ? "metrics" : METRICS_PATH, NULL);
        }
        g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
        *ret = g_steal_pointer(&metrics);
        return 0;
}

void api_metrics_free(ApiMetrics *metrics)
{
        if (!metrics)
                return;
        if (metrics->server) {
                soup_server_disconnect(metrics->server);
                g_object_unref(metrics->server);
        }
        g_free(metrics->url);
        g_free(metrics);
}

const char *api_metrics_url(ApiMetrics *metrics)
{
        return metrics->url ? metrics->url : "";
}
