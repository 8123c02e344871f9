/* hvd supervision. One request is out at a time (a CountersGet), with a deadline:
 *
 *   connected, idle --tick or probe--> request out --reply--> idle (sample taken)
 *                                          |--deadline--> not answering (probes fail;
 *                                          |               the reply, if it comes, heals)
 *   any --connection closed--> lost --tick--> reconnect (start hvd if we may) --> ready
 *
 * Probes wait on the request that is out, so a Start-VM learns within the deadline
 * whether hvd answers. Replies come in order on the one connection. */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hv-client.h"
#include "vmms-hvd.h"

#define HVD_START_TIMEOUT_US (10 * G_USEC_PER_SEC)

typedef struct Probe {
        VmmsHvdProbeFn fn;
        void *userdata;
} Probe;

struct VmmsHvd {
        char *socket_path;
        char *hvd_path;
        char *log_path;
        uint64_t memory;
        uint32_t lps;
        VmmsHvdOptions options;
        bool spawn;
        bool started_here; /* this vmmsd started the hvd it first connected to */
        VmmsHvdCallbacks callbacks;
        void *userdata;
        HvClient *client;
        guint watch;
        bool request_out;
        guint deadline_timer;
        bool not_answering;
        char *status;
        GQueue probes;
        Vmms__Hv__Reply *prev, *cur;
        Vmms__Hv__Reply *vectors[2]; /* [normalized]: CompatibilityVectorGet's answers */
};

static void set_status(VmmsHvd *hvd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void set_status(VmmsHvd *hvd, const char *fmt, ...)
{
        va_list ap;

        g_free(hvd->status);
        va_start(ap, fmt);
        hvd->status = g_strdup_vprintf(fmt, ap);
        va_end(ap);
}

static void finish_probes(VmmsHvd *hvd, const VmmsError *error)
{
        Probe *p;

        while ((p = g_queue_pop_head(&hvd->probes))) {
                p->fn(error, p->userdata);
                g_free(p);
        }
}

static void fail_probes(VmmsHvd *hvd)
{
        VmmsError error = {0};

        vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "the hypervisor (hvd at %s) cannot be used: %s",
                       hvd->socket_path, hvd->status);
        finish_probes(hvd, &error);
        vmms_error_clear(&error);
}

static void hvd_child_setup(gpointer userdata)
{
        (void)userdata;
        setsid();
}

static void on_hvd_child_exit(GPid pid, gint status, gpointer userdata)
{
        g_autoptr(GError) error = NULL;

        (void)userdata;
        if (!g_spawn_check_wait_status(status, &error))
                g_warning("hvd (pid %d) exited: %s", pid, error->message);
        g_spawn_close_pid(pid);
}

static int spawn_hvd(VmmsHvd *hvd, GPid *ret_pid, char **ret_error)
{
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GError) error = NULL;
        int log_fd;
        bool ok;

        g_ptr_array_add(argv, g_strdup(hvd->hvd_path));
        g_ptr_array_add(argv, g_strdup_printf("--socket=%s", hvd->socket_path));
        if (hvd->memory)
                g_ptr_array_add(argv, g_strdup_printf("--memory=%" G_GUINT64_FORMAT, hvd->memory));
        if (hvd->lps)
                g_ptr_array_add(argv, g_strdup_printf("--lps=%u", hvd->lps));
        if (hvd->options.scheduler)
                g_ptr_array_add(argv, g_strdup_printf("--scheduler=%s", hvd->options.scheduler));
        if (hvd->options.numa_nodes)
                g_ptr_array_add(argv, g_strdup_printf("--numa-nodes=%u", hvd->options.numa_nodes));
        if (hvd->options.slice_ms)
                g_ptr_array_add(argv, g_strdup_printf("--slice-ms=%u", hvd->options.slice_ms));
        if (hvd->options.cpu_model)
                g_ptr_array_add(argv, g_strdup_printf("--cpu-model=%s", hvd->options.cpu_model));
        if (hvd->options.io_boost)
                g_ptr_array_add(argv, g_strdup("--io-boost"));
        g_ptr_array_add(argv, NULL);
        log_fd = open(hvd->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        ok = g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                    hvd_child_setup, NULL, ret_pid, -1, log_fd, log_fd, &error);
        if (log_fd >= 0)
                close(log_fd);
        if (!ok) {
                *ret_error = g_strdup_printf("cannot start hvd (%s): %s", hvd->hvd_path, error->message);
                return -ENOEXEC;
        }
        /* Reaped by GLib from now on; hvd outlives vmmsd in its own session. */
        g_child_watch_add(*ret_pid, on_hvd_child_exit, NULL);
        g_message("started hvd (pid %d) on %s", *ret_pid, hvd->socket_path);
        return 0;
}

static gboolean on_readable(int fd, GIOCondition cond, gpointer userdata);

/* Connects, starting hvd first if it is not running and we may. */
static int connect_hvd(VmmsHvd *hvd, char **ret_error)
{
        bool spawned = false;
        int64_t deadline;
        GPid pid;
        int r;

        r = hv_client_connect(hvd->socket_path, &hvd->client);
        if (r < 0 && hvd->spawn) {
                r = spawn_hvd(hvd, &pid, ret_error);
                if (r < 0)
                        return r;
                spawned = true;
                deadline = g_get_monotonic_time() + HVD_START_TIMEOUT_US;
                while ((r = hv_client_connect(hvd->socket_path, &hvd->client)) < 0 &&
                       g_get_monotonic_time() < deadline) {
                        if (kill(pid, 0) < 0 && errno == ESRCH) {
                                *ret_error = g_strdup_printf("hvd exited at once; see %s", hvd->log_path);
                                return -ECHILD;
                        }
                        g_usleep(20000);
                }
                if (r < 0) {
                        *ret_error = g_strdup_printf("hvd did not open %s in time; see %s", hvd->socket_path,
                                                     hvd->log_path);
                        return r;
                }
        } else if (r < 0) {
                *ret_error =
                        g_strdup_printf("cannot connect to hvd at %s: %s", hvd->socket_path, g_strerror(-r));
                return r;
        }
        /* Fixed for the life of this hvd: read once, before the connection goes async. */
        for (int normalized = 0; normalized < 2; normalized++)
                if (hv_client_compatibility_vector_get(hvd->client, 0, normalized,
                                                       &hvd->vectors[normalized]) < 0)
                        g_warning("hvd does not report its processor's compatibility vector: %s",
                                  hv_client_last_error(hvd->client));
        hvd->watch =
                g_unix_fd_add(hv_client_fd(hvd->client), G_IO_IN | G_IO_HUP | G_IO_ERR, on_readable, hvd);
        hvd->not_answering = false;
        hvd->started_here = spawned;
        set_status(hvd, "running");
        return 0;
}

static void drop_connection(VmmsHvd *hvd, const char *why)
{
        if (hvd->watch)
                g_source_remove(hvd->watch);
        hvd->watch = 0;
        if (hvd->deadline_timer)
                g_source_remove(hvd->deadline_timer);
        hvd->deadline_timer = 0;
        hvd->request_out = false;
        g_clear_pointer(&hvd->client, hv_client_free);
        g_clear_pointer(&hvd->prev, hv_client_reply_free);
        g_clear_pointer(&hvd->cur, hv_client_reply_free);
        g_clear_pointer(&hvd->vectors[0], hv_client_reply_free);
        g_clear_pointer(&hvd->vectors[1], hv_client_reply_free);
        set_status(hvd, "the hypervisor exited (%s)", why);
        g_warning("the hypervisor is gone: %s", why);
        fail_probes(hvd);
        if (hvd->callbacks.lost)
                hvd->callbacks.lost(hvd->status, hvd->userdata);
}

static gboolean on_deadline(gpointer userdata)
{
        VmmsHvd *hvd = userdata;

        hvd->deadline_timer = 0;
        hvd->not_answering = true;
        set_status(hvd, "the hypervisor (hvd) did not answer in %d s", VMMS_HVD_DEADLINE_MS / 1000);
        g_warning("%s", hvd->status);
        fail_probes(hvd);
        return G_SOURCE_REMOVE;
}

static void take_sample(VmmsHvd *hvd, Vmms__Hv__Reply *reply)
{
        if (hvd->deadline_timer)
                g_source_remove(hvd->deadline_timer);
        hvd->deadline_timer = 0;
        hvd->request_out = false;
        if (hvd->not_answering)
                g_message("the hypervisor answers again");
        hvd->not_answering = false;
        set_status(hvd, "running");
        if (reply->body_case != VMMS__HV__REPLY__BODY_COUNTERS) {
                hv_client_reply_free(reply);
                return;
        }
        hv_client_reply_free(hvd->prev);
        hvd->prev = hvd->cur;
        hvd->cur = reply;
        finish_probes(hvd, NULL);
        if (hvd->callbacks.sample)
                hvd->callbacks.sample(hvd->prev ? hvd->prev->counters : NULL, hvd->cur->counters,
                                      hvd->userdata);
}

/* Takes every reply that has arrived; false (and the connection dropped) if hvd has
 * gone. */
static bool drain(VmmsHvd *hvd)
{
        Vmms__Hv__Reply *reply;
        int r;

        while ((r = hv_client_reply_take(hvd->client, &reply)) == 0)
                take_sample(hvd, reply);
        if (r == -EAGAIN)
                return true;
        drop_connection(hvd, r == -ECONNRESET ? "connection closed" : g_strerror(-r));
        return false;
}

static gboolean on_readable(int fd, GIOCondition cond, gpointer userdata)
{
        VmmsHvd *hvd = userdata;
        guint watch = hvd->watch;

        (void)fd;
        (void)cond;
        hvd->watch = 0; /* while draining: a drop must not remove the source we run in */
        if (!drain(hvd))
                return G_SOURCE_REMOVE;
        hvd->watch = watch;
        return G_SOURCE_CONTINUE;
}

static void send_request(VmmsHvd *hvd)
{
        uint64_t id;

        if (!hvd->client || hvd->request_out)
                return;
        if (hv_client_counters_request(hvd->client, &id) < 0) {
                drop_connection(hvd, hv_client_last_error(hvd->client));
                return;
        }
        hvd->request_out = true;
        hvd->deadline_timer = g_timeout_add(VMMS_HVD_DEADLINE_MS, on_deadline, hvd);
}

void vmms_hvd_tick(VmmsHvd *hvd)
{
        g_autofree char *why = NULL;

        if (!hvd->client) {
                if (connect_hvd(hvd, &why) < 0) {
                        set_status(hvd, "%s", why);
                        return;
                }
                g_message("connected to the hypervisor again");
                if (hvd->callbacks.ready)
                        hvd->callbacks.ready(hvd->userdata);
        }
        send_request(hvd);
}

void vmms_hvd_probe(VmmsHvd *hvd, VmmsHvdProbeFn fn, void *userdata)
{
        Probe *p;

        if (!hvd->client || hvd->not_answering) {
                VmmsError error = {0};

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE,
                               "the hypervisor (hvd at %s) cannot be used: %s", hvd->socket_path,
                               hvd->status);
                fn(&error, userdata);
                vmms_error_clear(&error);
                return;
        }
        p = g_new0(Probe, 1);
        p->fn = fn;
        p->userdata = userdata;
        g_queue_push_tail(&hvd->probes, p);
        send_request(hvd);
}

bool vmms_hvd_started_here(VmmsHvd *hvd)
{
        return hvd->started_here;
}

void vmms_hvd_check(VmmsHvd *hvd)
{
        if (hvd->client)
                drain(hvd);
}

const char *vmms_hvd_status(VmmsHvd *hvd)
{
        return hvd->status;
}

const char *vmms_hvd_socket(VmmsHvd *hvd)
{
        return hvd->socket_path;
}

const Vmms__Hv__Counters *vmms_hvd_last_sample(VmmsHvd *hvd)
{
        return hvd->cur ? hvd->cur->counters : NULL;
}

const Vmms__Hv__CompatibilityVector *vmms_hvd_compat_vector(VmmsHvd *hvd, bool normalized)
{
        return hvd->vectors[normalized] ? hvd->vectors[normalized]->compatibility_vector : NULL;
}

bool vmms_hvd_counters(VmmsHvd *hvd, const Vmms__Hv__Counters **ret_prev, const Vmms__Hv__Counters **ret_cur)
{
        if (!hvd->prev || !hvd->cur)
                return false;
        *ret_prev = hvd->prev->counters;
        *ret_cur = hvd->cur->counters;
        return true;
}

int vmms_hvd_new(const VmmsHvdConfig *config, const VmmsHvdCallbacks *callbacks, void *userdata,
                 VmmsHvd **ret, char **ret_error)
{
        g_autoptr(VmmsHvd) hvd = g_new0(VmmsHvd, 1);
        int r;

        hvd->socket_path = g_strdup(config->socket_path);
        hvd->hvd_path = g_strdup(config->hvd_path);
        hvd->log_path = g_strdup(config->log_path);
        hvd->memory = config->memory;
        hvd->lps = config->lps;
        hvd->options = config->options;
        hvd->spawn = config->spawn;
        hvd->callbacks = *callbacks;
        hvd->userdata = userdata;
        g_queue_init(&hvd->probes);
        r = connect_hvd(hvd, ret_error);
        if (r < 0)
                return r;
        send_request(hvd);
        *ret = g_steal_pointer(&hvd);
        return 0;
}

void vmms_hvd_free(VmmsHvd *hvd)
{
        if (!hvd)
                return;
        hvd->callbacks = (VmmsHvdCallbacks){0};
        if (hvd->watch)
                g_source_remove(hvd->watch);
        if (hvd->deadline_timer)
                g_source_remove(hvd->deadline_timer);
        /* Whoever waits on a probe is being freed too: no callback. */
        g_queue_clear_full(&hvd->probes, g_free);
        hv_client_free(hvd->client);
        hv_client_reply_free(hvd->prev);
        hv_client_reply_free(hvd->cur);
        hv_client_reply_free(hvd->vectors[0]);
        hv_client_reply_free(hvd->vectors[1]);
        g_free(hvd->socket_path);
        g_free(hvd->hvd_path);
        g_free(hvd->log_path);
        g_free(hvd->status);
        g_free(hvd);
}
