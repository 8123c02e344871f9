/* Worker supervision. A spawned worker is our child (its exit status comes from a
 * child watch); an attached one is not, and its exit shows as the control connection
 * closing. Workers run in their own session so a vmmsd crash does not take them down. */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hv-wire.h"
#include "vmms-worker.h"

#define WORKER_MESSAGE_MAX (64u * 1024u)
#define CONNECT_TIMEOUT_MS 15000
/* A worker receiving a live migration opens its control socket only once the whole
 * stream is applied; the move's own link timeouts end a stalled one sooner. */
#define INCOMING_CONNECT_TIMEOUT_MS (30 * 60 * 1000)
#define INCOMING_FD_TARGET 3
/* The worker writes a byte here once its control socket listens (vmwp --ready-fd). */
#define READY_FD_TARGET 4

typedef struct PendingReply {
        uint64_t id;
        VmmsWorkerReplyFn fn; /* one of the two */
        VmmsWorkerFullReplyFn full_fn;
        void *userdata;
} PendingReply;

static void answer(PendingReply *p, int error, const char *message, const Vmms__Worker__Reply *reply)
{
        if (p->full_fn)
                p->full_fn(error, message, reply, p->userdata);
        else
                p->fn(error, message, p->userdata);
}

struct VmmsWorker {
        VmmsWorkerCallbacks callbacks;
        void *userdata;
        char *exit_message; /* its Exiting message: why it is about to exit */
        int exit_reason;    /* and its reason (worker.proto Exiting.Reason), 0 if none */
        char *control_socket;
        char *log_path;
        GPid pid;
        bool is_child;
        guint child_watch;
        int fd;
        guint fd_source;
        guint connect_timer; /* kills a worker that never opens its control socket */
        int ready_fd;        /* says when it has: then we connect, no polling */
        guint ready_source;
        uint64_t next_id;
        GQueue pending;
        bool exited;
        uint8_t buf[WORKER_MESSAGE_MAX];
};

static void fail_pending(VmmsWorker *w)
{
        PendingReply *p;

        while ((p = g_queue_pop_head(&w->pending))) {
                answer(p, -ECONNRESET, "the worker went away", NULL);
                g_free(p);
        }
}

static void disconnect(VmmsWorker *w)
{
        if (w->fd_source)
                g_source_remove(w->fd_source);
        w->fd_source = 0;
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
        fail_pending(w);
}

/* Reports the exit once; the callback may free the worker, so nothing follows it. */
static void report_exit(VmmsWorker *w, const char *why, int exit_code)
{
        if (w->exited)
                return;
        w->exited = true;
        disconnect(w);
        w->callbacks.exited(w, why, exit_code, w->userdata);
}

static int drain_messages(VmmsWorker *w);

static void on_child_exit(GPid pid, gint status, gpointer userdata)
{
        VmmsWorker *w = userdata;
        g_autofree char *why = NULL;
        int code = -1;

        (void)pid;
        w->child_watch = 0;
        /* The exit can be seen before the worker's last messages (GuestStopped) are read:
         * take what is still in the socket first, so the exit is explained by them. */
        if (w->fd >= 0)
                (void)drain_messages(w);
        g_spawn_close_pid(pid);
        if (WIFEXITED(status)) {
                code = WEXITSTATUS(status);
                why = g_strdup_printf("worker exited with status %d", code);
        } else if (WIFSIGNALED(status)) {
                why = g_strdup_printf("worker was killed by signal %d (%s)", WTERMSIG(status),
                                      strsignal(WTERMSIG(status)));
        } else {
                why = g_strdup("worker ended");
        }
        w->pid = 0;
        report_exit(w, why, code);
}

static void handle_message(VmmsWorker *w, const Vmms__Worker__Message *msg)
{
        switch (msg->body_case) {
        case VMMS__WORKER__MESSAGE__BODY_HELLO:
                w->callbacks.hello(w, msg->hello, w->userdata);
                break;
        case VMMS__WORKER__MESSAGE__BODY_MEMORY_STATUS:
                if (w->callbacks.memory_status)
                        w->callbacks.memory_status(w, msg->memory_status, w->userdata);
                break;
        case VMMS__WORKER__MESSAGE__BODY_EXITING:
                w->exit_reason = msg->exiting->reason;
                g_free(w->exit_message);
                w->exit_message = g_strdup(
                        msg->exiting->message && *msg->exiting->message ? msg->exiting->message : NULL);
                break;
        case VMMS__WORKER__MESSAGE__BODY_GUEST_STOPPED:
                w->callbacks.guest_stopped(w, msg->guest_stopped->reason, msg->guest_stopped->crashed,
                                           w->userdata);
                break;
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_PROGRESS:
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_DONE:
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_FAILED:
        case VMMS__WORKER__MESSAGE__BODY_INCOMING_DONE:
                if (w->callbacks.migration)
                        w->callbacks.migration(w, msg, w->userdata);
                break;
        case VMMS__WORKER__MESSAGE__BODY_REPLY: {
                PendingReply *p = g_queue_peek_head(&w->pending);

                /* Replies come in request order; one that matches nothing is ignored. */
                if (!p || p->id != msg->reply->id)
                        break;
                g_queue_pop_head(&w->pending);
                answer(p, msg->reply->error, msg->reply->error_message, msg->reply);
                g_free(p);
                break;
        }
        default:
                break;
        }
}

/* Handles every message waiting. Returns -EAGAIN when none is left, another negative
 * errno when the connection is gone, 0 if a handler disconnected it. */
static int drain_messages(VmmsWorker *w)
{
        while (w->fd >= 0) {
                Vmms__Worker__Message *msg;
                size_t len;
                int r = hv_wire_recv(w->fd, w->buf, sizeof(w->buf), &len, NULL);

                if (r < 0)
                        return r;
                msg = vmms__worker__message__unpack(NULL, len, w->buf);
                if (msg) {
                        handle_message(w, msg);
                        vmms__worker__message__free_unpacked(msg, NULL);
                }
        }
        return 0;
}

static gboolean on_readable(gint fd, GIOCondition condition, gpointer userdata)
{
        VmmsWorker *w = userdata;
        int r;

        (void)fd;
        (void)condition;
        r = drain_messages(w);
        if (r == -EAGAIN)
                return G_SOURCE_CONTINUE;
        w->fd_source = 0; /* removed by returning G_SOURCE_REMOVE */
        if (r < 0) {
                disconnect(w);
                /* A child's exit status is on its way through the child watch. */
                if (!w->is_child)
                        report_exit(w, "the worker's control connection closed", -1);
        }
        return G_SOURCE_REMOVE;
}

static int try_connect(VmmsWorker *w)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(w->control_socket) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        strcpy(addr.sun_path, w->control_socket);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        w->fd = fd;
        w->fd_source = g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_readable, w);
        return 0;
}

static void ready_stop(VmmsWorker *w)
{
        if (w->ready_source)
                g_source_remove(w->ready_source);
        w->ready_source = 0;
        if (w->ready_fd >= 0)
                close(w->ready_fd);
        w->ready_fd = -1;
}

/* Its control socket listens (or it closed the pipe by exiting: the child watch says
 * so). */
static gboolean on_worker_ready(gint fd, GIOCondition condition, gpointer userdata)
{
        VmmsWorker *w = userdata;

        (void)fd;
        (void)condition;
        w->ready_source = 0;
        ready_stop(w);
        if (try_connect(w) >= 0 && w->connect_timer) {
                g_source_remove(w->connect_timer);
                w->connect_timer = 0;
        }
        return G_SOURCE_REMOVE;
}

static gboolean on_connect_timeout(gpointer userdata)
{
        VmmsWorker *w = userdata;

        w->connect_timer = 0;
        if (w->fd >= 0)
                return G_SOURCE_REMOVE;
        g_warning("worker %d did not open its control socket in time; killing it", w->pid);
        ready_stop(w);
        vmms_worker_kill(w);
        return G_SOURCE_REMOVE;
}

static void child_setup(gpointer userdata)
{
        (void)userdata;
        setsid(); /* a vmmsd crash must not take the worker down */
}

static VmmsWorker *worker_new(const char *control_socket, const VmmsWorkerCallbacks *callbacks,
                              void *userdata)
{
        VmmsWorker *w = g_new0(VmmsWorker, 1);

        w->callbacks = *callbacks;
        w->userdata = userdata;
        w->control_socket = g_strdup(control_socket);
        w->fd = -1;
        w->ready_fd = -1;
        w->next_id = 1;
        g_queue_init(&w->pending);
        return w;
}

int vmms_worker_spawn(const VmmsWorkerSpawn *s, const VmmsWorkerCallbacks *callbacks, void *userdata,
                      VmmsWorker **ret, char **ret_error)
{
        g_autoptr(VmmsWorker) w = worker_new(s->control_socket, callbacks, userdata);
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GError) error = NULL;
        int log_fd, ready[2];
        bool ok;

        g_ptr_array_add(argv, g_strdup(s->vmwp_path));
        g_ptr_array_add(argv, g_strdup_printf("--name=%s", s->partition_name));
        g_ptr_array_add(argv, g_strdup_printf("--vm-id=%s", s->vm_id));
        g_ptr_array_add(argv, g_strdup_printf("--vps=%u", s->vp_count));
        g_ptr_array_add(argv, g_strdup_printf("--memory=%" G_GUINT64_FORMAT, s->startup_bytes));
        g_ptr_array_add(argv, g_strdup_printf("--maximum-memory=%" G_GUINT64_FORMAT, s->maximum_bytes));
        g_ptr_array_add(argv, g_strdup_printf("--reserve=%u", s->reserve));
        g_ptr_array_add(argv, g_strdup_printf("--cpu-maximum=%u", s->maximum));
        g_ptr_array_add(argv, g_strdup_printf("--relative-weight=%u", s->relative_weight));
        if (s->cpu_compatibility)
                g_ptr_array_add(argv, g_strdup("--cpu-compatibility"));
        g_ptr_array_add(argv, g_strdup_printf("--workload=%s", s->workload));
        if (s->boot_args && *s->boot_args)
                g_ptr_array_add(argv, g_strdup_printf("--boot-args=%s", s->boot_args));
        g_ptr_array_add(argv, g_strdup_printf("--guest=%s", s->guest_path));
        g_ptr_array_add(argv, g_strdup_printf("--hvd-socket=%s", s->hvd_socket));
        g_ptr_array_add(argv, g_strdup_printf("--control-socket=%s", s->control_socket));
        g_ptr_array_add(argv, g_strdup_printf("--console-log=%s", s->console_path));
        if (s->paging_file)
                g_ptr_array_add(argv, g_strdup_printf("--paging-file=%s", s->paging_file));
        if (s->restore_path)
                g_ptr_array_add(argv, g_strdup_printf("--restore=%s", s->restore_path));
        if (s->restore_path && s->restore_paused)
                g_ptr_array_add(argv, g_strdup("--restore-paused"));
        if (s->incoming_fd >= 0)
                g_ptr_array_add(argv, g_strdup_printf("--incoming-fd=%d", INCOMING_FD_TARGET));
        if (s->paging_bytes)
                g_ptr_array_add(argv, g_strdup_printf("--paging-bytes=%" G_GUINT64_FORMAT, s->paging_bytes));
        g_ptr_array_add(argv, g_strdup_printf("--ready-fd=%d", READY_FD_TARGET));
        g_ptr_array_add(argv, NULL);

        if (pipe2(ready, O_CLOEXEC) < 0) {
                int r = -errno;

                *ret_error = g_strdup_printf("cannot make the worker's ready pipe: %s", g_strerror(-r));
                return r;
        }
        log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (log_fd < 0) {
                int r = -errno;

                close(ready[0]);
                close(ready[1]);
                *ret_error = g_strdup_printf("cannot open worker log %s: %s", s->log_path, g_strerror(-r));
                return r;
        }
        (void)unlink(s->control_socket); /* a stale socket must not be mistaken for the new worker */
        {
                /* The ready pipe goes to the worker as READY_FD_TARGET and the stream's fd as
                 * INCOMING_FD_TARGET; nothing else is inherited. */
                int source_fds[2] = {ready[1], s->incoming_fd},
                    target_fds[2] = {READY_FD_TARGET, INCOMING_FD_TARGET};

                ok = g_spawn_async_with_pipes_and_fds(
                        NULL, (const char *const *)argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD, child_setup,
                        NULL, -1, log_fd, log_fd, source_fds, target_fds, s->incoming_fd >= 0 ? 2 : 1,
                        &w->pid, NULL, NULL, NULL, &error);
        }
        close(log_fd);
        close(ready[1]);
        w->ready_fd = ready[0];
        if (!ok) {
                *ret_error = g_strdup_printf("cannot start the worker %s: %s", s->vmwp_path, error->message);
                return -ENOEXEC;
        }
        w->is_child = true;
        w->log_path = g_strdup(s->log_path);
        w->child_watch = g_child_watch_add(w->pid, on_child_exit, w);
        w->ready_source = g_unix_fd_add(w->ready_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_worker_ready, w);
        w->connect_timer =
                g_timeout_add(s->incoming_fd >= 0 ? INCOMING_CONNECT_TIMEOUT_MS : CONNECT_TIMEOUT_MS,
                              on_connect_timeout, w);
        *ret = g_steal_pointer(&w);
        return 0;
}

int vmms_worker_attach(const char *control_socket, int32_t pid, const VmmsWorkerCallbacks *callbacks,
                       void *userdata, VmmsWorker **ret)
{
        g_autoptr(VmmsWorker) w = worker_new(control_socket, callbacks, userdata);
        int r;

        w->pid = pid;
        r = try_connect(w);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&w);
        return 0;
}

void vmms_worker_free(VmmsWorker *w)
{
        if (!w)
                return;
        if (w->connect_timer)
                g_source_remove(w->connect_timer);
        ready_stop(w);
        disconnect(w);
        /* A child still running keeps being reaped by GLib once the watch is gone. */
        if (w->child_watch)
                g_source_remove(w->child_watch);
        g_free(w->control_socket);
        g_free(w->log_path);
        g_free(w->exit_message);
        g_free(w);
}

int32_t vmms_worker_pid(VmmsWorker *w)
{
        return w->pid;
}

bool vmms_worker_connected(VmmsWorker *w)
{
        return w->fd >= 0;
}

static void request(VmmsWorker *w, Vmms__Worker__Request *req, int fd, PendingReply *p)
{
        const char *why = NULL;

        if (w->fd < 0 || w->exited)
                why = "the worker is not connected";
        else {
                req->id = w->next_id++;
                if (hv_wire_send(w->fd, &req->base, fd) < 0)
                        why = "cannot send to the worker";
        }
        if (why) {
                answer(p, w->fd < 0 || w->exited ? -ENOTCONN : -ECONNRESET, why, NULL);
                g_free(p);
                return;
        }
        p->id = req->id;
        g_queue_push_tail(&w->pending, p);
}

void vmms_worker_request(VmmsWorker *w, Vmms__Worker__Request *req, VmmsWorkerReplyFn fn, void *userdata)
{
        PendingReply *p = g_new0(PendingReply, 1);

        p->fn = fn;
        p->userdata = userdata;
        request(w, req, -1, p);
}

void vmms_worker_request_full(VmmsWorker *w, Vmms__Worker__Request *req, VmmsWorkerFullReplyFn fn,
                              void *userdata)
{
        PendingReply *p = g_new0(PendingReply, 1);

        p->full_fn = fn;
        p->userdata = userdata;
        request(w, req, -1, p);
}

void vmms_worker_request_fd(VmmsWorker *w, Vmms__Worker__Request *req, int fd, VmmsWorkerFullReplyFn fn,
                            void *userdata)
{
        PendingReply *p = g_new0(PendingReply, 1);

        p->full_fn = fn;
        p->userdata = userdata;
        request(w, req, fd, p);
}

/* The worker's own word on why it exits, else the last line of its log; only the
 * log's last LOG_TAIL_BYTES are read, however large it grew. */
#define LOG_TAIL_BYTES 4096

char *vmms_worker_last_words(VmmsWorker *w, bool read_log)
{
        g_autofree char *tail = NULL;
        g_auto(GStrv) lines = NULL;
        struct stat st;
        ssize_t n;
        int fd;

        if (w->exit_message)
                return g_strdup(w->exit_message);
        if (!read_log || !w->log_path)
                return NULL;
        fd = open(w->log_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        tail = g_malloc0(LOG_TAIL_BYTES + 1);
        n = fstat(fd, &st) < 0 ? -1
                               : pread(fd, tail, LOG_TAIL_BYTES,
                                       st.st_size > LOG_TAIL_BYTES ? st.st_size - LOG_TAIL_BYTES : 0);
        close(fd);
        if (n <= 0)
                return NULL;
        tail[n] = '\0';
        lines = g_strsplit(g_strchomp(tail), "\n", -1);
        for (int i = (int)g_strv_length(lines) - 1; i >= 0; i--)
                if (*g_strstrip(lines[i]) && g_utf8_validate(lines[i], -1, NULL))
                        return g_strdup(lines[i]);
        return NULL;
}

void vmms_worker_kill(VmmsWorker *w)
{
        if (w->pid > 0)
                kill(w->pid, SIGKILL);
}

bool vmms_worker_lost_hypervisor(VmmsWorker *w)
{
        return w->exit_reason == VMMS__WORKER__EXITING__REASON__HYPERVISOR_LOST;
}
