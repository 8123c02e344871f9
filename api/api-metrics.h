/* The metrics API: every counter of the core's walk (vmms-counters.h) and each VM's
 * state in Prometheus's text exposition format, served by libsoup on the main loop. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "vmms-access.h"
#include "vmms-counters.h"
#include "vmms-manager.h"

typedef struct ApiMetricsConfig {
        const char *address; /* "IP:PORT", "[IPv6]:PORT" or "localhost:PORT" */
        /* TLS with a client certificate verified against tls_ca_path: always off a
         * loopback address, and on one too when `tls` is set. Plain HTTP callers on
         * loopback are local readers (vmms-access.h). */
        bool tls;
        const char *tls_cert_path;
        const char *tls_key_path;
        const char *tls_ca_path;
} ApiMetricsConfig;

typedef struct ApiMetrics ApiMetrics;

/* Listens at once; -EINVAL with a message naming the option on a bad address or a TLS
 * setting that is missing, another negative errno when it cannot listen. Each scrape
 * needs the role GetCounters needs, judged by vmms_access_check with `access`, which
 * must outlive the server. */
/* The checks api_metrics_new makes before it listens (address, TLS material), for a
 * daemon to make before it starts anything. */
int api_metrics_config_check(const ApiMetricsConfig *config, char **ret_error);
int api_metrics_new(VmmsManager *m, VmmsAccess *access, const ApiMetricsConfig *config, ApiMetrics **ret,
                    char **ret_error);
void api_metrics_free(ApiMetrics *metrics);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ApiMetrics, api_metrics_free)
/* Where it listens, for the log: "http://127.0.0.1:9464/metrics". */
const char *api_metrics_url(ApiMetrics *metrics);

/* The exposition text of one scrape: the core's counter walk and every VM's state. */
char *api_metrics_render(VmmsManager *m);

/* The same, piece by piece (api_metrics_render's parts, and the unit test's). Samples
 * may come in any order; _Total instances are left out. finish() frees the scrape. */
typedef struct ApiMetricsScrape ApiMetricsScrape;
ApiMetricsScrape *api_metrics_scrape_new(void);
void api_metrics_scrape_add_counter(ApiMetricsScrape *scrape, const VmmsCounterSample *sample);
void api_metrics_scrape_add_vm(ApiMetricsScrape *scrape, const char *vm, VmmsVmState state);
char *api_metrics_scrape_finish(ApiMetricsScrape *scrape);
