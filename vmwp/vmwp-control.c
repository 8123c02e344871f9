/* vmwp's control socket server. One vmmsd at a time: a new connection replaces the
 * old one (vmmsd restarted). Requests are checked like any client's. */
#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv-wire.h"
#include "vmwp-control.h"
#include "vmwp-migrate.h"
#include "vmwp-save.h"
#include "worker.pb-c.h"

#define CONTROL_MESSAGE_MAX (64u * 1024u)
#define CONTROL_STATUS_PERIOD_MS 1000  /* MemoryStatus to vmmsd */
#define CONTROL_PROGRESS_PERIOD_MS 200 /* MigrationProgress, while a migration sends */

struct VmwpControl {
        VmwpWorker *worker;
        char *path;
        char *vm_id;
        int listen_fd;
        guint listen_source;
        int conn_fd;
        guint conn_source;
        guint shutdown_timer;
        guint status_timer;
        guint progress_timer;
        int64_t started_unix_ms;
        VmwpControlActionFn on_action;
        void *on_action_userdata;
        uint8_t buf[CONTROL_MESSAGE_MAX];
};

static void drop_connection(VmwpControl *c)
{
        if (c->conn_source)
                g_source_remove(c->conn_source);
        c->conn_source = 0;
        if (c->status_timer)
                g_source_remove(c->status_timer);
        c->status_timer = 0;
        if (c->conn_fd >= 0)
                close(c->conn_fd);
        c->conn_fd = -1;
}

static void send_message(VmwpControl *c, Vmms__Worker__Message *msg)
{
        if (c->conn_fd >= 0 && hv_wire_send(c->conn_fd, &msg->base, -1) < 0)
                drop_connection(c);
}

static void send_reply(VmwpControl *c, uint64_t id, int error, const char *message)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__Reply reply = VMMS__WORKER__REPLY__INIT;

        reply.id = id;
        reply.error = error;
        reply.error_message = (char *)(message ? message : "");
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_REPLY;
        msg.reply = &reply;
        send_message(c, &msg);
}

/* The guest's Dynamic Memory figures with hvd's: once a second while vmmsd listens, at
 * once for a prompt guest report or a finished balloon request, and right after each
 * MemoryAdjust (before its Reply, so vmmsd never plans on figures the adjust made
 * stale). reporting = false says no guest figures are behind them. */
static void send_memory_status(VmwpControl *c, bool prompt)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__MemoryStatus status = VMMS__WORKER__MEMORY_STATUS__INIT;
        VmwpMemoryStatus s;

        if (c->conn_fd < 0 || vmwp_worker_memory_status(c->worker, &s) < 0)
                return;
        status.prompt = prompt;
        status.reporting = s.reporting;
        status.guest_time_ns = s.guest_time_ns;
        status.committed_bytes = s.committed_bytes;
        status.visible_bytes = s.visible_bytes;
        status.assigned_bytes = s.assigned_bytes;
        status.ballooned_bytes = s.ballooned_bytes;
        status.pending_remove_bytes = s.pending_remove_bytes;
        status.resident_bytes = s.resident_bytes;
        status.page_in_total = s.page_in_total;
        status.page_out_total = s.page_out_total;
        status.added_bytes_total = s.added_bytes_total;
        status.removed_bytes_total = s.removed_bytes_total;
        status.add_operations = s.add_operations;
        status.remove_operations = s.remove_operations;
        status.refused_pages = s.refused_pages;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_MEMORY_STATUS;
        msg.memory_status = &status;
        send_message(c, &msg);
}

static void on_memory_status_now(void *userdata, bool prompt)
{
        send_memory_status(userdata, prompt);
}

static gboolean on_status_timer(gpointer userdata)
{
        VmwpControl *c = userdata;

        send_memory_status(c, false);
        if (c->conn_fd < 0) { /* the send dropped the connection, and this timer with it */
                c->status_timer = 0;
                return G_SOURCE_REMOVE;
        }
        return G_SOURCE_CONTINUE;
}

static gboolean on_shutdown_timeout(gpointer userdata)
{
        VmwpControl *c = userdata;

        c->shutdown_timer = 0;
        g_message("vmwp: the guest did not shut down in time; turning the VM off");
        c->on_action(VMWP_CONTROL_TURN_OFF, c->on_action_userdata);
        return G_SOURCE_REMOVE;
}

static void handle_shutdown(VmwpControl *c, const Vmms__Worker__Request *req)
{
        const Vmms__Worker__Shutdown *s = req->shutdown;
        int r;

        if (s->turn_off) {
                send_reply(c, req->id, 0, NULL);
                c->on_action(VMWP_CONTROL_TURN_OFF, c->on_action_userdata);
                return;
        }
        if (s->timeout_ms == 0 || s->timeout_ms > 3600 * 1000) {
                send_reply(c, req->id, -EINVAL, "shutdown timeout_ms must be 1-3600000");
                return;
        }
        r = vmwp_worker_request_shutdown(c->worker);
        if (r < 0) {
                send_reply(c, req->id, r, "cannot ask the guest to shut down");
                return;
        }
        if (c->shutdown_timer)
                g_source_remove(c->shutdown_timer);
        c->shutdown_timer = g_timeout_add(s->timeout_ms, on_shutdown_timeout, c);
        send_reply(c, req->id, 0, NULL);
}

/* Save-VM: the reply carries what was written; the worker exits after it unless
 * the VM is to keep running (a checkpoint). */
static void handle_save(VmwpControl *c, const Vmms__Worker__Request *req)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__Reply reply = VMMS__WORKER__REPLY__INIT;
        Vmms__Worker__SaveResult saved = VMMS__WORKER__SAVE_RESULT__INIT;
        g_autofree char *why = NULL;
        VmwpSaveResult result;
        int r;

        if (!req->save->path || !g_path_is_absolute(req->save->path)) {
                send_reply(c, req->id, -EINVAL, "save path must be absolute");
                return;
        }
        r = vmwp_worker_save(c->worker, req->save->path, req->save->keep_running, &result, &why);
        if (r < 0) {
                send_reply(c, req->id, r, why);
                return;
        }
        saved.file_bytes = result.file_bytes;
        saved.memory_bytes = result.memory_bytes;
        saved.disk_bytes = result.disk_bytes;
        saved.duration_ms = result.duration_ms;
        reply.id = req->id;
        reply.saved = &saved;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_REPLY;
        msg.reply = &reply;
        send_message(c, &msg);
        if (!req->save->keep_running)
                c->on_action(VMWP_CONTROL_SAVED, c->on_action_userdata);
}

/* ---- Live migration ---- */

static void send_progress(VmwpControl *c)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__MigrationProgress progress = VMMS__WORKER__MIGRATION_PROGRESS__INIT;
        VmwpMigrateProgress p;

        vmwp_worker_migration_progress(c->worker, &p);
        progress.round = p.round;
        progress.ram_bytes = p.ram_bytes;
        progress.bytes_sent = p.bytes_sent;
        progress.bytes_remaining = p.bytes_remaining;
        progress.dirty_bytes_per_s = p.dirty_bytes_per_s;
        progress.bandwidth_bytes_per_s = p.bandwidth_bytes_per_s;
        progress.throttle_percent = p.throttle_percent;
        progress.paused = p.paused;
        progress.data_pages = p.data_pages;
        progress.zero_pages = p.zero_pages;
        progress.discarded_pages = p.discarded_pages;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_MIGRATION_PROGRESS;
        msg.migration_progress = &progress;
        send_message(c, &msg);
}

static gboolean on_progress_timer(gpointer userdata)
{
        VmwpControl *c = userdata;

        if (vmwp_worker_migration_phase(c->worker) != VMWP_MIGRATION_OUT_PRECOPY) {
                c->progress_timer = 0;
                return G_SOURCE_REMOVE;
        }
        send_progress(c);
        return G_SOURCE_CONTINUE;
}

static void on_migration_ended(VmwpWorker *w, bool ok, bool cancelled, const char *reason,
                               const VmwpMigrateDone *d, void *userdata)
{
        VmwpControl *c = userdata;
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__MigrationOutDone done = VMMS__WORKER__MIGRATION_OUT_DONE__INIT;
        Vmms__Worker__MigrationOutFailed failed = VMMS__WORKER__MIGRATION_OUT_FAILED__INIT;

        (void)w;
        if (c->progress_timer)
                g_source_remove(c->progress_timer);
        c->progress_timer = 0;
        send_progress(c);
        if (ok) {
                done.bytes_sent = d->bytes_sent;
                done.data_pages = d->data_pages;
                done.zero_pages = d->zero_pages;
                done.discarded_pages = d->discarded_pages;
                done.rounds = d->rounds;
                done.paused_unix_ns = d->paused_unix_ns;
                done.paused_ns = d->paused_ns;
                done.max_throttle_percent = d->max_throttle_percent;
                done.duration_ms = d->duration_ms;
                done.final_bytes = d->final_bytes;
                done.disk_bytes = d->disk_bytes;
                msg.body_case = VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_DONE;
                msg.migration_out_done = &done;
                g_message("vmwp: migration sent: %" G_GUINT64_FORMAT
                          " bytes in %u rounds, paused %" G_GUINT64_FORMAT " us",
                          d->bytes_sent, d->rounds, d->paused_ns / 1000);
        } else {
                failed.reason = (char *)(reason ? reason : "");
                failed.cancelled = cancelled;
                msg.body_case = VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_FAILED;
                msg.migration_out_failed = &failed;
                g_message("vmwp: migration failed: %s", failed.reason);
        }
        send_message(c, &msg);
}

static void handle_migrate_out(VmwpControl *c, const Vmms__Worker__Request *req, int fd)
{
        const Vmms__Worker__MigrateOut *o = req->migrate_out;
        VmwpMigrateOptions options = {.max_downtime_ms = o->max_downtime_ms,
                                      .max_bandwidth_bytes_per_s = o->max_bandwidth_bytes_per_s,
                                      .auto_converge = o->auto_converge,
                                      .max_rounds = o->max_rounds};
        g_autofree char *why = NULL;
        int r;

        if (fd < 0) {
                send_reply(c, req->id, -EINVAL, "MigrateOut needs exactly one fd (the stream) attached");
                return;
        }
        r = vmwp_worker_migrate_out(c->worker, fd, &options, &why);
        send_reply(c, req->id, r < 0 ? r : 0, why);
        if (r >= 0 && !c->progress_timer)
                c->progress_timer = g_timeout_add(CONTROL_PROGRESS_PERIOD_MS, on_progress_timer, c);
}

static void send_resumed(VmwpControl *c, uint64_t id)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__Reply reply = VMMS__WORKER__REPLY__INIT;

        reply.id = id;
        reply.error_message = (char *)"";
        reply.resumed_unix_ns = (uint64_t)g_get_real_time() * 1000;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_REPLY;
        msg.reply = &reply;
        send_message(c, &msg);
}

/* While a migration sends or waits for its answer, what would change the VM behind it
 * is refused. */
static bool refused_while_migrating(VmwpControl *c, const Vmms__Worker__Request *req)
{
        VmwpMigrationPhase phase = vmwp_worker_migration_phase(c->worker);
        bool busy = phase == VMWP_MIGRATION_OUT_PRECOPY || phase == VMWP_MIGRATION_OUT_DONE;

        if (!busy)
                return false;
        switch (req->body_case) {
        case VMMS__WORKER__REQUEST__BODY_SAVE:
        case VMMS__WORKER__REQUEST__BODY_MEMORY_ADJUST:
        case VMMS__WORKER__REQUEST__BODY_PAUSE:
        case VMMS__WORKER__REQUEST__BODY_MIGRATE_OUT:
                break;
        case VMMS__WORKER__REQUEST__BODY_RESUME:
                if (phase == VMWP_MIGRATION_OUT_DONE)
                        return false;
                break;
        default:
                return false;
        }
        send_reply(c, req->id, -EBUSY, "a migration of this VM is under way");
        return true;
}

static void handle_request(VmwpControl *c, const Vmms__Worker__Request *req, int fd)
{
        g_autofree char *why = NULL;
        int r;

        if (req->body_case == VMMS__WORKER__REQUEST__BODY_MIGRATE_OUT) {
                if (refused_while_migrating(c, req)) {
                        if (fd >= 0)
                                close(fd);
                        return;
                }
                handle_migrate_out(c, req, fd);
                return;
        }
        if (fd >= 0)
                close(fd); /* only MigrateOut carries one */
        if (refused_while_migrating(c, req))
                return;
        switch (req->body_case) {
        case VMMS__WORKER__REQUEST__BODY_SHUTDOWN:
                handle_shutdown(c, req);
                return;
        case VMMS__WORKER__REQUEST__BODY_SAVE:
                handle_save(c, req);
                return;
        case VMMS__WORKER__REQUEST__BODY_SET_PROCESSOR:
                r = vmwp_worker_set_processor(c->worker, req->set_processor->reserve,
                                              req->set_processor->maximum,
                                              req->set_processor->relative_weight, &why);
                break;
        case VMMS__WORKER__REQUEST__BODY_PAUSE:
                r = vmwp_worker_pause(c->worker, true, &why);
                break;
        case VMMS__WORKER__REQUEST__BODY_RESUME:
                if (vmwp_worker_migration_phase(c->worker) == VMWP_MIGRATION_OUT_DONE)
                        r = vmwp_worker_migrate_cancel(c->worker, true, &why);
                else
                        r = vmwp_worker_pause(c->worker, false, &why);
                if (r >= 0) {
                        vmwp_worker_migration_resumed(c->worker);
                        send_resumed(c, req->id);
                        return;
                }
                break;
        case VMMS__WORKER__REQUEST__BODY_MIGRATE_CANCEL:
                r = vmwp_worker_migrate_cancel(c->worker, false, &why);
                break;
        case VMMS__WORKER__REQUEST__BODY_MIGRATE_FINISH:
                if (vmwp_worker_migration_phase(c->worker) != VMWP_MIGRATION_OUT_DONE) {
                        send_reply(c, req->id, -EINVAL, "no finished outgoing migration to commit");
                        return;
                }
                send_reply(c, req->id, 0, NULL);
                c->on_action(VMWP_CONTROL_MIGRATED, c->on_action_userdata);
                return;
        case VMMS__WORKER__REQUEST__BODY_MEMORY_ADJUST:
                r = vmwp_worker_memory_adjust(c->worker, req->memory_adjust->delta_bytes, &why);
                send_memory_status(c, false);
                break;
        default:
                r = -EOPNOTSUPP;
                why = g_strdup("request has no known body");
                break;
        }
        send_reply(c, req->id, r < 0 ? r : 0, why);
}

static gboolean on_readable(gint fd, GIOCondition condition, gpointer userdata)
{
        VmwpControl *c = userdata;

        (void)fd;
        (void)condition;
        for (;;) {
                Vmms__Worker__Request *req;
                size_t len;
                int fd = -1;
                int r = hv_wire_recv(c->conn_fd, c->buf, sizeof(c->buf), &len, &fd);

                if (r == -EAGAIN)
                        return G_SOURCE_CONTINUE;
                if (r < 0) {
                        c->conn_source = 0;
                        drop_connection(c);
                        return G_SOURCE_REMOVE;
                }
                req = vmms__worker__request__unpack(NULL, len, c->buf);
                if (!req) {
                        if (fd >= 0)
                                close(fd);
                        send_reply(c, 0, -EBADMSG, "malformed request: not a vmms.worker.Request message");
                        continue;
                }
                handle_request(c, req, fd);
                vmms__worker__request__free_unpacked(req, NULL);
                if (c->conn_fd < 0)
                        return G_SOURCE_REMOVE;
        }
}

static void send_incoming_done(VmwpControl *c)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__IncomingDone done = VMMS__WORKER__INCOMING_DONE__INIT;
        const VmwpIncomingResult *in = vmwp_worker_incoming_result(c->worker);

        done.bytes_received = in->bytes_received;
        done.duration_ms = in->duration_ms;
        done.data_pages = in->data_pages;
        done.zero_pages = in->zero_pages;
        done.discarded_pages = in->discarded_pages;
        done.memory_sections = in->memory_sections;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_INCOMING_DONE;
        msg.incoming_done = &done;
        send_message(c, &msg);
}

static gboolean on_accept(gint fd, GIOCondition condition, gpointer userdata)
{
        VmwpControl *c = userdata;
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__Hello hello = VMMS__WORKER__HELLO__INIT;
        int conn;

        (void)condition;
        conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn < 0)
                return G_SOURCE_CONTINUE;
        drop_connection(c);
        c->conn_fd = conn;
        c->conn_source = g_unix_fd_add(conn, G_IO_IN | G_IO_HUP | G_IO_ERR, on_readable, c);
        hello.vm_id = c->vm_id;
        hello.pid = getpid();
        hello.partition_id = vmwp_worker_partition_id(c->worker);
        hello.started_unix_ms = c->started_unix_ms;
        hello.paused = vmwp_worker_paused(c->worker);
        hello.migration = (Vmms__Worker__MigrationPhase)vmwp_worker_migration_phase(c->worker);
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_HELLO;
        msg.hello = &hello;
        send_message(c, &msg);
        if (vmwp_worker_migration_phase(c->worker) == VMWP_MIGRATION_INCOMING_DONE)
                send_incoming_done(c);
        if (c->conn_fd >= 0)
                c->status_timer = g_timeout_add(CONTROL_STATUS_PERIOD_MS, on_status_timer, c);
        return G_SOURCE_CONTINUE;
}

int vmwp_control_new(VmwpWorker *worker, const char *socket_path, const char *vm_id, VmwpControlActionFn fn,
                     void *userdata, VmwpControl **ret, char **ret_error)
{
        g_autoptr(VmwpControl) c = g_new0(VmwpControl, 1);
        g_autofree char *tmp_path = NULL;
        struct sockaddr_un addr = {.sun_family = AF_UNIX};

        c->worker = worker;
        c->path = g_strdup(socket_path);
        c->vm_id = g_strdup(vm_id ? vm_id : "");
        c->listen_fd = c->conn_fd = -1;
        c->started_unix_ms = g_get_real_time() / 1000;
        c->on_action = fn;
        c->on_action_userdata = userdata;
        if (strlen(socket_path) >= sizeof(addr.sun_path)) {
                *ret_error = g_strdup_printf("control socket path %s is too long", socket_path);
                return -ENAMETOOLONG;
        }
        /* Bound and listening under a temporary name, then renamed into place: whoever
         * sees the path (vmmsd waiting for a restored or migrated worker) can connect. */
        tmp_path = g_strdup_printf("%s.%d.tmp", socket_path, (int)getpid());
        if (strlen(tmp_path) >= sizeof(addr.sun_path)) {
                *ret_error = g_strdup_printf("control socket path %s is too long", socket_path);
                return -ENAMETOOLONG;
        }
        strcpy(addr.sun_path, tmp_path);
        c->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        (void)unlink(tmp_path);
        if (c->listen_fd < 0 || bind(c->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
            chmod(tmp_path, 0600) < 0 || listen(c->listen_fd, 4) < 0 || rename(tmp_path, socket_path) < 0) {
                int r = -errno;

                (void)unlink(tmp_path);
                *ret_error = g_strdup_printf("cannot listen on control socket %s: %s", socket_path,
                                             g_strerror(-r));
                return r;
        }
        c->listen_source = g_unix_fd_add(c->listen_fd, G_IO_IN, on_accept, c);
        vmwp_worker_set_memory_status_handler(worker, on_memory_status_now, c);
        vmwp_worker_set_migration_handler(worker, on_migration_ended, c);
        *ret = g_steal_pointer(&c);
        return 0;
}

void vmwp_control_free(VmwpControl *c)
{
        if (!c)
                return;
        if (c->listen_source) { /* registered once the control was built */
                vmwp_worker_set_memory_status_handler(c->worker, NULL, NULL);
                vmwp_worker_set_migration_handler(c->worker, NULL, NULL);
        }
        if (c->progress_timer)
                g_source_remove(c->progress_timer);
        drop_connection(c);
        if (c->shutdown_timer)
                g_source_remove(c->shutdown_timer);
        if (c->listen_source)
                g_source_remove(c->listen_source);
        if (c->listen_fd >= 0) {
                close(c->listen_fd);
                unlink(c->path);
        }
        g_free(c->path);
        g_free(c->vm_id);
        g_free(c);
}

void vmwp_control_guest_stopped(VmwpControl *c, const char *reason, bool crashed)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__GuestStopped stopped = VMMS__WORKER__GUEST_STOPPED__INIT;

        stopped.reason = (char *)reason;
        stopped.crashed = crashed;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_GUEST_STOPPED;
        msg.guest_stopped = &stopped;
        send_message(c, &msg);
}

void vmwp_control_exiting(VmwpControl *c, int reason, const char *message)
{
        Vmms__Worker__Message msg = VMMS__WORKER__MESSAGE__INIT;
        Vmms__Worker__Exiting exiting = VMMS__WORKER__EXITING__INIT;

        exiting.reason = (Vmms__Worker__Exiting__Reason)reason;
        exiting.message = (char *)message;
        msg.body_case = VMMS__WORKER__MESSAGE__BODY_EXITING;
        msg.exiting = &exiting;
        send_message(c, &msg);
}
