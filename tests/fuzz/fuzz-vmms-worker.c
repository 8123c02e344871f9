/* vmwp -> vmmsd: worker.proto messages from a worker's control socket, as vmmsd reads
 * them (vmms-worker.c). The harness plays the worker: it listens, vmmsd attaches, asks
 * three requests, and then every packet of the input (a little-endian u16 length and
 * that many bytes) arrives as one SOCK_SEQPACKET packet; the callbacks use what they are
 * given as vmms-engine-bundled.c's do. A worker is not trusted: a vmwp crash must stop
 * only its VM, never vmmsd.
 *
 * Checks beyond the sanitizers: each request is answered exactly once (by the worker's
 * reply or by the connection going away), and the exit is reported at most once. */
#include <glib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmms-worker.h"

#define REQUESTS 3
#define PACKETS_MAX 64

typedef struct Peer {
        unsigned answers[REQUESTS];
        unsigned exits;
        uint64_t sum; /* what the callbacks read, so nothing is optimized away */
} Peer;

static void on_hello(VmmsWorker *w, const Vmms__Worker__Hello *hello, void *userdata)
{
        Peer *peer = userdata;

        (void)w;
        peer->sum += (uint64_t)g_strcmp0(hello->vm_id, "b0b2f5a4-vm") + (uint64_t)hello->pid +
                     hello->partition_id + (uint64_t)hello->started_unix_ms + hello->paused;
}

static void on_guest_stopped(VmmsWorker *w, const char *reason, bool crashed, void *userdata)
{
        Peer *peer = userdata;

        (void)w;
        peer->sum += strlen(reason) + crashed;
}

static void on_memory_status(VmmsWorker *w, const Vmms__Worker__MemoryStatus *s, void *userdata)
{
        Peer *peer = userdata;

        (void)w;
        peer->sum += s->reporting + s->committed_bytes + s->visible_bytes + s->assigned_bytes +
                     s->ballooned_bytes + s->pending_remove_bytes + s->resident_bytes + s->prompt;
}

static void on_exited(VmmsWorker *w, const char *why, int exit_code, void *userdata)
{
        Peer *peer = userdata;

        (void)w;
        peer->sum += strlen(why) + (uint64_t)exit_code;
        peer->exits++;
}

static const VmmsWorkerCallbacks callbacks = {
        .hello = on_hello,
        .guest_stopped = on_guest_stopped,
        .memory_status = on_memory_status,
        .exited = on_exited,
};

typedef struct Answer {
        Peer *peer;
        unsigned index;
} Answer;

static void on_reply(int error, const char *message, void *userdata)
{
        Answer *a = userdata;

        a->peer->sum += strlen(message) + (uint64_t)error;
        a->peer->answers[a->index]++;
}

static void pump(void)
{
        while (g_main_context_iteration(NULL, FALSE))
                ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char *socket_path;
        static int listen_fd = -1;
        FuzzInput in = {data, size};
        Peer peer = {0};
        Answer answers[REQUESTS];
        VmmsWorker *w = NULL;
        int fd;

        if (listen_fd < 0) {
                g_autofree char *dir = g_dir_make_tmp("fuzz-vmms-worker-XXXXXX", NULL);
                struct sockaddr_un addr = {.sun_family = AF_UNIX};

                FUZZ_CHECK(dir);
                socket_path = g_build_filename(dir, "control.sock", NULL);
                FUZZ_CHECK(strlen(socket_path) < sizeof(addr.sun_path));
                strcpy(addr.sun_path, socket_path);
                listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                FUZZ_CHECK(listen_fd >= 0);
                FUZZ_CHECK(bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
                FUZZ_CHECK(listen(listen_fd, 4) == 0);
                fuzz_quiet_logs();
        }
        FUZZ_CHECK(vmms_worker_attach(socket_path, 0, &callbacks, &peer, &w) == 0);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        FUZZ_CHECK(fd >= 0);
        for (unsigned i = 0; i < REQUESTS; i++) {
                Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
                Vmms__Worker__Pause pause = VMMS__WORKER__PAUSE__INIT;

                req.body_case = VMMS__WORKER__REQUEST__BODY_PAUSE;
                req.pause = &pause;
                answers[i] = (Answer){&peer, i};
                vmms_worker_request(w, &req, on_reply, &answers[i]);
        }
        for (int n = 0; n < PACKETS_MAX && in.size > 0; n++) {
                uint8_t packet[4096];
                size_t want = fuzz_u16(&in);
                size_t len = fuzz_take(&in, packet, MIN(want, sizeof(packet)));

                if (send(fd, packet, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                        break;
                pump();
        }
        close(fd);
        pump();
        g_free(vmms_worker_last_words(w, false));
        vmms_worker_free(w); /* fails what is still pending */
        for (unsigned i = 0; i < REQUESTS; i++)
                FUZZ_CHECK(peer.answers[i] == 1);
        FUZZ_CHECK(peer.exits <= 1);
        return 0;
}
