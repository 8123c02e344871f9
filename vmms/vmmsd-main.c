/* vmmsd: the management service's process. Options, the config file, the main loop;
 * the service itself is the vmms core library and the API servers. */
#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api-dbus.h"
#include "api-grpc.h"
#include "api-metrics.h"
#include "hv-size.h"
#include "vmms-access.h"
#include "vmms-cluster.h"
#include "vmms-manager.h"
#include "vmms-migration.h"
#include "vmms-ops.h"
#include "vmms-store-file.h"

static gboolean on_quit_signal(gpointer userdata)
{
        g_main_loop_quit(userdata);
        return G_SOURCE_CONTINUE;
}

static char *default_dir(bool state)
{
        if (geteuid() == 0)
                return g_strdup(state ? "/var/lib/vmms" : "/run/vmms");
        return g_build_filename(state ? g_get_user_state_dir() : g_get_user_runtime_dir(), "vmms", NULL);
}

/* Values from vmms.conf ([vmmsd] group) fill what the command line left unset; the
 * file is handed back for its [access] group. */
static int read_config(const char *path, char **state_dir, char **runtime_dir, char **hvd_memory,
                       gint *hvd_lps, char **grpc_tcp, char **tls_cert, char **tls_key, char **tls_ca,
                       char **socket_mode, char **migration_listen, GKeyFile **ret_kf)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        struct {
                const char *key;
                char **value;
        } strings[] = {{"state-dir", state_dir},
                       {"runtime-dir", runtime_dir},
                       {"hvd-memory", hvd_memory},
                       {"grpc-tcp", grpc_tcp},
                       {"tls-cert", tls_cert},
                       {"tls-key", tls_key},
                       {"tls-ca", tls_ca},
                       {"socket-mode", socket_mode},
                       {"migration-listen", migration_listen}};

        if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &error)) {
                fprintf(stderr, "vmmsd: cannot read %s: %s\n", path, error->message);
                return -EINVAL;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(strings); i++)
                if (!*strings[i].value)
                        *strings[i].value = g_key_file_get_string(kf, "vmmsd", strings[i].key, NULL);
        if (*hvd_lps == 0 && g_key_file_has_key(kf, "vmmsd", "hvd-lps", NULL)) {
                *hvd_lps = g_key_file_get_integer(kf, "vmmsd", "hvd-lps", &error);
                if (error) {
                        fprintf(stderr, "vmmsd: %s: hvd-lps: %s\n", path, error->message);
                        return -EINVAL;
                }
        }
        *ret_kf = g_steal_pointer(&kf);
        return 0;
}

/* A string key of [vmmsd] that the command line left unset. */
static void config_string(GKeyFile *kf, const char *key, char **value)
{
        if (!*value && kf)
                *value = g_key_file_get_string(kf, "vmmsd", key, NULL);
}

/* An integer key of [vmmsd] that the command line left at 0. */
static int config_int(GKeyFile *kf, const char *key, gint *value)
{
        g_autoptr(GError) error = NULL;

        if (*value || !kf || !g_key_file_has_key(kf, "vmmsd", key, NULL))
                return 0;
        *value = g_key_file_get_integer(kf, "vmmsd", key, &error);
        if (error) {
                fprintf(stderr, "vmmsd: vmms.conf: %s: %s\n", key, error->message);
                return -EINVAL;
        }
        return 0;
}

/* hvd's own options, passed on when vmmsd starts hvd: the command line over vmms.conf's
 * keys of the same names. Checked here too, so a bad one stops vmmsd, not hvd later. */
static int hvd_options_parse(GKeyFile *kf, const char *scheduler, gint numa_nodes, gint slice_ms,
                             gboolean io_boost, gint lps, VmmsHvdOptions *ret)
{
        static const char *const schedulers[] = {"share", "round-robin"};
        g_autofree char *conf_scheduler = NULL;
        g_autoptr(GError) error = NULL;

        if (kf && !scheduler)
                scheduler = conf_scheduler = g_key_file_get_string(kf, "vmmsd", "hvd-scheduler", NULL);
        if (config_int(kf, "hvd-numa-nodes", &numa_nodes) < 0 ||
            config_int(kf, "hvd-slice-ms", &slice_ms) < 0)
                return -EINVAL;
        if (kf && !io_boost && g_key_file_has_key(kf, "vmmsd", "hvd-io-boost", NULL)) {
                io_boost = g_key_file_get_boolean(kf, "vmmsd", "hvd-io-boost", &error);
                if (error) {
                        fprintf(stderr, "vmmsd: vmms.conf: hvd-io-boost: %s\n", error->message);
                        return -EINVAL;
                }
        }
        *ret = (VmmsHvdOptions){.io_boost = io_boost};
        for (size_t i = 0; scheduler && i < G_N_ELEMENTS(schedulers); i++)
                if (strcmp(scheduler, schedulers[i]) == 0)
                        ret->scheduler = schedulers[i];
        if (scheduler && !ret->scheduler) {
                fprintf(stderr, "vmmsd: --hvd-scheduler '%s' is not one of share, round-robin\n", scheduler);
                return -EINVAL;
        }
        if (numa_nodes < 0 || numa_nodes > (lps ? lps : 1024)) {
                fprintf(stderr, "vmmsd: --hvd-numa-nodes %d is out of range 1-%d%s\n", numa_nodes,
                        lps ? lps : 1024, lps ? " (--hvd-lps)" : "");
                return -EINVAL;
        }
        if (slice_ms < 0 || slice_ms > 1000) {
                fprintf(stderr, "vmmsd: --hvd-slice-ms %d is out of range 1-1000\n", slice_ms);
                return -EINVAL;
        }
        ret->numa_nodes = (uint32_t)numa_nodes;
        ret->slice_ms = (uint32_t)slice_ms;
        return 0;
}

/* hvd, vmwp and the guest kernel: this build tree's when vmmsd runs from it, else the
 * installed ones (the hidden --hvd-path, --vmwp-path and --guest-path override both). */
static const char *program_path(const char *built, const char *installed)
{
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);

        return self && g_str_has_prefix(self, VMMS_BUILD_ROOT "/") ? built : installed;
}

/* --socket-mode: octal permissions of the unix socket. Other local users can only
 * connect, and then read, when it lets them (0666); 0660 keeps them out. */
static int parse_socket_mode(const char *text, mode_t *ret_mode)
{
        char *end = NULL;
        unsigned long mode;

        if (!text) {
                *ret_mode = 0660;
                return 0;
        }
        mode = strtoul(text, &end, 8);
        if (!*text || *end || mode > 0777 || !(mode & 0600))
                return -EINVAL;
        *ret_mode = (mode_t)mode;
        return 0;
}

/* --dbus: a bus named on the command line must work; without one, vmmsd uses the system
 * bus as root and the session bus otherwise, if it is there. A contract defect (-EPROTO)
 * is fatal either way. */
static int start_dbus(VmmsManager *m, VmmsAccess *access, const char *mode, ApiDbus **ret)
{
        g_autofree char *why = NULL;
        const char *session = g_getenv("DBUS_SESSION_BUS_ADDRESS");
        g_autofree char *session_socket = g_build_filename(g_get_user_runtime_dir(), "bus", NULL);
        GBusType bus;
        int r;

        if (g_strcmp0(mode, "none") == 0)
                return 0;
        if (g_strcmp0(mode, "system") == 0 || (!mode && geteuid() == 0)) {
                bus = G_BUS_TYPE_SYSTEM;
        } else {
                bus = G_BUS_TYPE_SESSION;
                /* Without a session bus GLib would try to autolaunch one. */
                if (!mode && !session && !g_file_test(session_socket, G_FILE_TEST_EXISTS)) {
                        g_message("vmmsd: no session bus; D-Bus API off");
                        return 0;
                }
        }
        r = api_dbus_new(m, access, bus, ret, &why);
        if (r < 0 && (mode || r == -EPROTO)) {
                fprintf(stderr, "vmmsd: D-Bus: %s\n", why);
                return r;
        }
        if (r < 0)
                g_message("vmmsd: D-Bus API off: %s (--dbus none says so quietly)", why);
        return 0;
}

/* --metrics: the Prometheus exporter's settings, from the command line or vmms.conf's
 * `metrics` and `metrics-tls` keys, checked before anything starts; over TLS it uses
 * the gRPC TLS material. */
static int metrics_settings(GKeyFile *kf, char **address, gboolean *tls, ApiMetricsConfig *ret)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *why = NULL;

        if (kf && !*address)
                *address = g_key_file_get_string(kf, "vmmsd", "metrics", NULL);
        if (kf && !*tls && g_key_file_has_key(kf, "vmmsd", "metrics-tls", NULL)) {
                *tls = g_key_file_get_boolean(kf, "vmmsd", "metrics-tls", &error);
                if (error) {
                        fprintf(stderr, "vmmsd: vmms.conf: metrics-tls: %s\n", error->message);
                        return -EINVAL;
                }
        }
        ret->address = *address;
        ret->tls = *tls;
        if (*address && api_metrics_config_check(ret, &why) < 0) {
                fprintf(stderr, "vmmsd: %s\n", why);
                return -EINVAL;
        }
        return 0;
}

/* --backup and --restore: one act on the store, then exit. */
static int store_command(const char *state_dir, const char *backup, const char *restore)
{
        g_autofree char *db = g_build_filename(state_dir, "vmms.db", NULL);
        g_autofree char *why = NULL;
        g_autoptr(VmmsStore) store = NULL;
        int lock_fd = -1, r;

        if (backup && restore) {
                fprintf(stderr, "vmmsd: --backup and --restore are separate acts: give one\n");
                return 2;
        }
        if (backup) {
                r = vmms_store_open(db, false, &store, &why);
                if (r >= 0)
                        r = vmms_store_backup(store, backup, &why);
                if (r < 0) {
                        fprintf(stderr, "vmmsd: --backup: %s\n", why);
                        return 1;
                }
                printf("backed up %s to %s\n", db, backup);
                return 0;
        }
        r = g_mkdir_with_parents(state_dir, 0750) < 0 ? -errno : 0;
        if (r < 0)
                why = g_strdup_printf("cannot create %s: %s", state_dir, g_strerror(-r));
        else
                r = vmms_store_file_lock(state_dir, &lock_fd, &why);
        if (r >= 0)
                r = vmms_store_file_restore(restore, db, &why);
        if (lock_fd >= 0)
                close(lock_fd);
        if (r < 0) {
                fprintf(stderr, "vmmsd: --restore: %s\n", why);
                return 1;
        }
        printf("restored %s from %s\n", db, restore);
        return 0;
}

int main(int argc, char **argv)
{
        g_autofree char *state_dir = NULL, *runtime_dir = NULL, *hvd_socket = NULL, *hvd_memory = NULL,
                        *grpc_socket = NULL, *grpc_tcp = NULL, *tls_cert = NULL, *tls_key = NULL,
                        *config_path = NULL, *hvd_path = NULL, *vmwp_path = NULL, *guest_path = NULL,
                        *dbus = NULL, *memory_reserve = NULL, *tls_ca = NULL, *socket_mode = NULL,
                        *backup = NULL, *restore = NULL, *paging_dir = NULL, *hvd_scheduler = NULL,
                        *hvd_cpu_model = NULL, *libvirt_uri = NULL, *libvirt_domain_type = NULL,
                        *libvirt_migration_uri = NULL, *migration_listen = NULL, *migration_name = NULL,
                        *cluster_spec = NULL, *host_name = NULL, *host_address = NULL;
        gint cluster_lease_ttl = 0, cluster_auto_balance = 0;
        gint hvd_lps = 0, stop_timeout = 0, hvd_numa_nodes = 0, hvd_slice_ms = 0;
        gboolean no_spawn_hvd = FALSE, init_store = FALSE, hvd_io_boost = FALSE;
        g_autofree char *metrics_address = NULL;
        gboolean metrics_tls = FALSE;
        ApiMetricsConfig metrics_config = {0};
        GOptionEntry entries[] = {
                {"config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path, "vmms.conf ([vmmsd] group)", "FILE"},
                {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
                 "Store and logs (default /var/lib/vmms)", "DIR"},
                {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir, "Sockets (default /run/vmms)",
                 "DIR"},
                {"grpc-socket", 0, 0, G_OPTION_ARG_FILENAME, &grpc_socket,
                 "gRPC unix socket (RUNTIME/vmms.sock)", "PATH"},
                {"grpc-tcp", 0, 0, G_OPTION_ARG_STRING, &grpc_tcp, "Also serve gRPC over TCP with TLS",
                 "HOST:PORT"},
                {"dbus", 0, 0, G_OPTION_ARG_STRING, &dbus,
                 "D-Bus API on the system or session bus, or none (default: system as root, else session)",
                 "BUS"},
                {"tls-cert", 0, 0, G_OPTION_ARG_FILENAME, &tls_cert, "TLS certificate chain (PEM)", "FILE"},
                {"tls-key", 0, 0, G_OPTION_ARG_FILENAME, &tls_key, "TLS private key (PEM)", "FILE"},
                {"tls-ca", 0, 0, G_OPTION_ARG_FILENAME, &tls_ca,
                 "CA (PEM) that signs client certificates; required with --grpc-tcp", "FILE"},
                {"socket-mode", 0, 0, G_OPTION_ARG_STRING, &socket_mode,
                 "Mode of the gRPC unix socket: 0660 (default: root and group vmms) or 0666 (other "
                 "local users may read)",
                 "MODE"},
                {"metrics", 0, 0, G_OPTION_ARG_STRING, &metrics_address,
                 "Serve Prometheus metrics on HOST:PORT (plain HTTP to local readers on a loopback address, "
                 "else HTTPS with client certificates)",
                 "HOST:PORT"},
                {"migration-listen", 0, 0, G_OPTION_ARG_STRING, &migration_listen,
                 "Accept VMs moved from the hosts in [access] migration-peers on IP:PORT (mutual TLS with "
                 "--tls-cert, --tls-key, --tls-ca)",
                 "IP:PORT"},
                {"migration-name", 0, 0, G_OPTION_ARG_STRING, &migration_name,
                 "This host's name in moves and events (default: the host name)", "NAME"},
                {"cluster", 0, 0, G_OPTION_ARG_STRING, &cluster_spec,
                 "Join the cluster whose state is in these etcd members", "etcd=IP:PORT,..."},
                {"host-name", 0, 0, G_OPTION_ARG_STRING, &host_name,
                 "This host's name in the cluster (default: --migration-name, else the host name)", "NAME"},
                {"host-address", 0, 0, G_OPTION_ARG_STRING, &host_address,
                 "Where peers move VMs to this host (default: --migration-listen)", "HOST:PORT"},
                {"cluster-lease-ttl", 0, 0, G_OPTION_ARG_INT, &cluster_lease_ttl,
                 "Seconds after its last renewal that a silent host counts as Down (default 10, at least 2)",
                 "SEC"},
                {"cluster-auto-balance", 0, 0, G_OPTION_ARG_INT, &cluster_auto_balance,
                 "As the cluster's leader, live-migrate a VM off a host whose average memory pressure stays "
                 "over PCT to the host with the most room (default 0: off)",
                 "PCT"},
                {"metrics-tls", 0, 0, G_OPTION_ARG_NONE, &metrics_tls,
                 "Serve metrics over TLS with client certificates on a loopback address too", NULL},
                {"hvd-socket", 0, 0, G_OPTION_ARG_FILENAME, &hvd_socket, "hvd's socket (RUNTIME/hvd.sock)",
                 "PATH"},
                {"hvd-memory", 0, 0, G_OPTION_ARG_STRING, &hvd_memory, "Pool size when vmmsd starts hvd",
                 "SIZE"},
                {"hvd-lps", 0, 0, G_OPTION_ARG_INT, &hvd_lps, "Logical processors when vmmsd starts hvd",
                 "N"},
                {"hvd-scheduler", 0, 0, G_OPTION_ARG_STRING, &hvd_scheduler,
                 "hvd's scheduling policy when vmmsd starts it: share (default) or round-robin", "NAME"},
                {"hvd-numa-nodes", 0, 0, G_OPTION_ARG_INT, &hvd_numa_nodes,
                 "NUMA nodes hvd splits its LPs into (default 1)", "N"},
                {"hvd-slice-ms", 0, 0, G_OPTION_ARG_INT, &hvd_slice_ms,
                 "hvd's scheduler time slice (default 10)", "MS"},
                {"hvd-io-boost", 0, 0, G_OPTION_ARG_NONE, &hvd_io_boost,
                 "hvd runs VPs woken from Idle ahead of running ones", NULL},
                {"hvd-cpu-model", 0, 0, G_OPTION_ARG_STRING, &hvd_cpu_model,
                 "The processor model hvd's guests run on (hvd --cpu-model; default qemu64)", "NAME"},
                {"no-spawn-hvd", 0, 0, G_OPTION_ARG_NONE, &no_spawn_hvd,
                 "Never start hvd; fail if it is not up", NULL},
                {"memory-reserve", 0, 0, G_OPTION_ARG_STRING, &memory_reserve,
                 "Pool memory Dynamic Memory never gives to a VM (default 0)", "SIZE"},
                {"stop-timeout", 0, 0, G_OPTION_ARG_INT, &stop_timeout,
                 "Seconds a graceful Stop-VM waits before turning off (default 30)", "SEC"},
                {"hvd-path", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &hvd_path, NULL, NULL},
                {"paging-dir", 0, 0, G_OPTION_ARG_FILENAME, &paging_dir,
                 "Where the VMs' paging disks live (default STATE/paging)", "DIR"},
                {"libvirt-uri", 0, 0, G_OPTION_ARG_STRING, &libvirt_uri,
                 "libvirtd the libvirt engine connects to (default qemu:///system)", "URI"},
                {"libvirt-domain-type", 0, 0, G_OPTION_ARG_STRING, &libvirt_domain_type,
                 "Domains of type kvm, qemu (TCG) or auto (kvm where libvirt offers it; the default)",
                 "TYPE"},
                {"libvirt-migration-uri", 0, 0, G_OPTION_ARG_STRING, &libvirt_migration_uri,
                 "libvirtd as other hosts' libvirtd reach it for Move-VM (default: --libvirt-uri)", "URI"},
                {"init-store", 0, 0, G_OPTION_ARG_NONE, &init_store,
                 "Begin with a new, empty store where vmms.db is empty or missing", NULL},
                {"backup", 0, 0, G_OPTION_ARG_FILENAME, &backup,
                 "Copy the store to FILE (while vmmsd runs, too) and exit", "FILE"},
                {"restore", 0, 0, G_OPTION_ARG_FILENAME, &restore,
                 "Replace the store with the backup FILE (vmmsd must not be running) and exit", "FILE"},
                {"vmwp-path", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &vmwp_path, NULL, NULL},
                {"guest-path", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, &guest_path, NULL, NULL},
                {NULL},
        };
        g_autoptr(GOptionContext) options = g_option_context_new("- the vmms management service");
        g_autoptr(GError) error = NULL;
        g_autoptr(GMainLoop) loop = NULL;
        g_autoptr(VmmsAccess) access = NULL; /* freed last: the APIs and the manager use it */
        g_autoptr(VmmsManager) manager = NULL;
        g_autoptr(ApiGrpc) grpc = NULL;
        g_autoptr(ApiDbus) dbus_api = NULL;
        g_autoptr(ApiMetrics) metrics = NULL;
        g_autoptr(VmmsMigration) migration = NULL;
        g_autoptr(VmmsCluster) cluster = NULL; /* freed before the manager it reports on */
        g_autoptr(GKeyFile) config_file = NULL;
        mode_t unix_mode;
        g_auto(VmmsConfig) config = {0};
        g_autofree char *why = NULL;
        ApiGrpcConfig grpc_config = {0};
        VmmsClusterConfig cluster_config = {0};
        int r;

        g_option_context_add_main_entries(options, entries, NULL);
        if (!g_option_context_parse(options, &argc, &argv, &error)) {
                fprintf(stderr, "vmmsd: %s\n", error->message);
                return 2;
        }
        if (config_path &&
            read_config(config_path, &state_dir, &runtime_dir, &hvd_memory, &hvd_lps, &grpc_tcp, &tls_cert,
                        &tls_key, &tls_ca, &socket_mode, &migration_listen, &config_file) < 0)
                return 2;
        if (parse_socket_mode(socket_mode, &unix_mode) < 0) {
                fprintf(stderr,
                        "vmmsd: --socket-mode '%s' is not an octal mode the owner can use (e.g. 0660)\n",
                        socket_mode);
                return 2;
        }
        if (grpc_tcp && (!tls_cert || !tls_key || !tls_ca)) {
                fprintf(stderr,
                        "vmmsd: --grpc-tcp needs --tls-cert, --tls-key and --tls-ca (the CA that signs "
                        "client certificates): vmmsd serves TCP only to verified clients\n");
                return 2;
        }
        metrics_config =
                (ApiMetricsConfig){.tls_cert_path = tls_cert, .tls_key_path = tls_key, .tls_ca_path = tls_ca};
        if (metrics_settings(config_file, &metrics_address, &metrics_tls, &metrics_config) < 0)
                return 2;
        access = vmms_access_new(NULL, unix_mode & 0006 ? VMMS_ROLE_READER : VMMS_ROLE_NONE);
        if (config_file) {
                r = vmms_access_load(access, config_file, &why);
                if (r < 0) {
                        fprintf(stderr, "vmmsd: %s: %s\n", config_path, why);
                        return 2;
                }
        }
        if (hvd_memory && hv_size_parse(hvd_memory, &config.hvd_memory) < 0) {
                fprintf(stderr, "vmmsd: --hvd-memory '%s' is not a size (e.g. 4GB)\n", hvd_memory);
                return 2;
        }
        if (hvd_lps < 0 || hvd_lps > 1024) {
                fprintf(stderr, "vmmsd: --hvd-lps %d is out of range 1-1024\n", hvd_lps);
                return 2;
        }
        if (hvd_options_parse(config_file, hvd_scheduler, hvd_numa_nodes, hvd_slice_ms, hvd_io_boost, hvd_lps,
                              &config.hvd_options) < 0)
                return 2;
        config.hvd_options.cpu_model = hvd_cpu_model; /* hvd checks the name; lives as long as main */
        if (config_file && !libvirt_uri)
                libvirt_uri = g_key_file_get_string(config_file, "vmmsd", "libvirt-uri", NULL);
        if (config_file && !libvirt_migration_uri)
                libvirt_migration_uri =
                        g_key_file_get_string(config_file, "vmmsd", "libvirt-migration-uri", NULL);
        if (config_file && !libvirt_domain_type)
                libvirt_domain_type =
                        g_key_file_get_string(config_file, "vmmsd", "libvirt-domain-type", NULL);
        if (libvirt_domain_type && g_strcmp0(libvirt_domain_type, "kvm") != 0 &&
            g_strcmp0(libvirt_domain_type, "qemu") != 0 && g_strcmp0(libvirt_domain_type, "auto") != 0) {
                fprintf(stderr, "vmmsd: --libvirt-domain-type '%s' is not one of kvm, qemu, auto\n",
                        libvirt_domain_type);
                return 2;
        }
        /* vmms.conf takes the same keys as the flags; the command line wins. */
        config_string(config_file, "memory-reserve", &memory_reserve);
        config_string(config_file, "dbus", &dbus);
        config_string(config_file, "paging-dir", &paging_dir);
        if (config_int(config_file, "stop-timeout", &stop_timeout) < 0)
                return 2;
        /* Pool memory the balancer never gives to a VM (it was parsed and then ignored). */
        if (memory_reserve && hv_size_parse(memory_reserve, &config.memory_reserve) < 0) {
                fprintf(stderr, "vmmsd: --memory-reserve '%s' is not a size (e.g. 512MB)\n", memory_reserve);
                return 2;
        }
        if (stop_timeout == 0)
                stop_timeout = 30;
        if (stop_timeout < 1 || stop_timeout > 3600) {
                fprintf(stderr, "vmmsd: --stop-timeout %d is out of range 1-3600\n", stop_timeout);
                return 2;
        }
        if (dbus && g_strcmp0(dbus, "system") != 0 && g_strcmp0(dbus, "session") != 0 &&
            g_strcmp0(dbus, "none") != 0) {
                fprintf(stderr, "vmmsd: --dbus '%s' is not one of system, session, none\n", dbus);
                return 2;
        }
        config.state_dir = state_dir ? g_strdup(state_dir) : default_dir(true);
        config.runtime_dir = runtime_dir ? g_strdup(runtime_dir) : default_dir(false);
        config.hvd_socket =
                hvd_socket ? g_strdup(hvd_socket) : g_build_filename(config.runtime_dir, "hvd.sock", NULL);
        config.hvd_path =
                g_strdup(hvd_path ? hvd_path : program_path(VMMS_HVD_PATH, VMMS_INSTALLED_HVD_PATH));
        config.vmwp_path =
                g_strdup(vmwp_path ? vmwp_path : program_path(VMMS_VMWP_PATH, VMMS_INSTALLED_VMWP_PATH));
        config.guest_path =
                g_strdup(guest_path ? guest_path : program_path(VMMS_GUEST_PATH, VMMS_INSTALLED_GUEST_PATH));
        config.hvd_lps = (uint32_t)hvd_lps;
        config.spawn_hvd = !no_spawn_hvd;
        config.stop_timeout_ms = (uint32_t)stop_timeout * 1000;
        config.force_timeout_ms = MIN(config.stop_timeout_ms, 5000);
        config.init_store = init_store;
        config.paging_dir = g_strdup(paging_dir);
        config.libvirt_uri = g_strdup(libvirt_uri);
        config.libvirt_domain_type = g_strdup(libvirt_domain_type);
        config.libvirt_migration_uri = g_strdup(libvirt_migration_uri);
        if (!grpc_socket)
                grpc_socket = g_build_filename(config.runtime_dir, "vmms.sock", NULL);
        if (backup || restore)
                return store_command(config.state_dir, backup, restore);

        config_string(config_file, "cluster", &cluster_spec);
        config_string(config_file, "host-name", &host_name);
        config_string(config_file, "host-address", &host_address);
        if (config_int(config_file, "cluster-lease-ttl", &cluster_lease_ttl) < 0)
                return 2;
        if (config_int(config_file, "cluster-auto-balance", &cluster_auto_balance) < 0)
                return 2;
        cluster_config = (VmmsClusterConfig){
                .spec = cluster_spec,
                .host_name = host_name        ? host_name
                             : migration_name ? migration_name
                                              : g_get_host_name(),
                .host_address = host_address ? host_address : migration_listen,
                .lease_ttl_s = cluster_lease_ttl > 0 ? (uint32_t)cluster_lease_ttl : 0,
                .auto_balance_pct = cluster_auto_balance > 0 ? (uint32_t)cluster_auto_balance : 0,
        };
        if (cluster_spec && cluster_auto_balance < 0) {
                fprintf(stderr,
                        "vmmsd: --cluster-auto-balance %d is out of range 1-%d (an average memory pressure, "
                        "%%; "
                        "0 turns it off)\n",
                        cluster_auto_balance, VMMS_CLUSTER_AUTO_BALANCE_MAX);
                return 2;
        }
        if (cluster_spec && cluster_lease_ttl < 0) {
                fprintf(stderr, "vmmsd: --cluster-lease-ttl %d is out of range %d-%d\n", cluster_lease_ttl,
                        VMMS_CLUSTER_LEASE_TTL_MIN, VMMS_CLUSTER_LEASE_TTL_MAX);
                return 2;
        }
        if (cluster_spec && vmms_cluster_config_check(&cluster_config, &why) < 0) {
                fprintf(stderr, "vmmsd: %s\n", why);
                return 2;
        }
        if (!cluster_spec && (host_name || host_address || cluster_lease_ttl || cluster_auto_balance)) {
                fprintf(stderr, "vmmsd: --host-name, --host-address, --cluster-lease-ttl and "
                                "--cluster-auto-balance are for a host in a cluster: give --cluster "
                                "etcd=IP:PORT,...\n");
                return 2;
        }

        r = vmms_manager_new(&config, &manager, &why);
        if (r < 0) {
                fprintf(stderr, "vmmsd: %s\n", why);
                return 1;
        }
        vmms_ops_attach(manager);
        grpc_config.unix_path = grpc_socket;
        grpc_config.unix_mode = unix_mode;
        grpc_config.tcp_address = grpc_tcp;
        grpc_config.tls_cert_path = tls_cert;
        grpc_config.tls_key_path = tls_key;
        grpc_config.tls_ca_path = tls_ca;
        r = api_grpc_new(manager, access, g_main_context_default(), &grpc_config, &grpc, &why);
        if (r < 0) {
                fprintf(stderr, "vmmsd: %s\n", why);
                return 1;
        }
        if (tls_cert && tls_key && tls_ca) {
                VmmsMigrationConfig mc = {.listen = migration_listen,
                                          .tls_cert_path = tls_cert,
                                          .tls_key_path = tls_key,
                                          .tls_ca_path = tls_ca,
                                          .host_name = migration_name};

                r = vmms_migration_new(manager, access, &mc, &migration, &why);
                if (r < 0) {
                        fprintf(stderr, "vmmsd: %s\n", why);
                        return 1;
                }
        } else if (migration_listen) {
                fprintf(stderr, "vmmsd: --migration-listen needs --tls-cert, --tls-key and --tls-ca (this "
                                "host's certificate and the CA that signs every host's)\n");
                return 2;
        }
        if (cluster_spec) {
                r = vmms_cluster_new(manager, &cluster_config, &cluster, &why);
                if (r < 0) {
                        fprintf(stderr, "vmmsd: %s\n", why);
                        return 2;
                }
        }
        if (start_dbus(manager, access, dbus, &dbus_api) < 0)
                return 1;
        if (metrics_address) {
                r = api_metrics_new(manager, access, &metrics_config, &metrics, &why);
                if (r < 0) {
                        fprintf(stderr, "vmmsd: %s\n", why);
                        return 1;
                }
                g_message("vmmsd: metrics at %s", api_metrics_url(metrics));
        }
        loop = g_main_loop_new(NULL, FALSE);
        g_unix_signal_add(SIGTERM, on_quit_signal, loop);
        g_unix_signal_add(SIGINT, on_quit_signal, loop);
        g_message("vmmsd %s: state %s, gRPC unix:%s%s%s, hvd %s", VMMS_VERSION, config.state_dir, grpc_socket,
                  grpc_tcp ? " and tls:" : "", grpc_tcp ? grpc_tcp : "", config.hvd_socket);
        g_main_loop_run(loop);
        g_message("vmmsd: stopping (VMs keep running)");
        return 0;
}
