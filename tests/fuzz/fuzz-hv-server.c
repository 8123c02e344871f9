/* vmwp -> hvd: root-interface requests (hv.proto) from one client, served by hvd's
 * server (hv-server.c) over its real socket, against a small hypervisor with one LP.
 * The input is a series of packets, each a little-endian u16 length and that many
 * bytes, sent as one SOCK_SEQPACKET packet each; the connection closes at the end, which
 * destroys whatever the client created. A crash here is a host crash: hvd must never
 * trust a worker.
 *
 * Checks beyond the sanitizers: every packet hvd sends back is a well-formed
 * vmms.hv.Message, and a passed fd comes only with PartitionCreated. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "hv-server.h"
#include "hv-wire.h"
#include "hv.h"
#include "hv.pb-c.h"

#define POOL_BYTES (64ull << 20)
#define PACKETS_MAX 64

static void pump(void)
{
        while (g_main_context_iteration(NULL, FALSE))
                ;
}

/* Takes every packet hvd sent so far. */
static void take_replies(int fd, uint8_t *buf)
{
        for (;;) {
                Vmms__Hv__Message *msg;
                size_t len;
                int passed = -1;
                int r = hv_wire_recv(fd, buf, HV_WIRE_MESSAGE_MAX, &len, &passed);

                if (r < 0)
                        return;
                msg = vmms__hv__message__unpack(NULL, len, buf);
                FUZZ_CHECK(msg);
                if (passed >= 0) {
                        FUZZ_CHECK(msg->body_case == VMMS__HV__MESSAGE__BODY_REPLY &&
                                   msg->reply->body_case == VMMS__HV__REPLY__BODY_PARTITION_CREATED);
                        close(passed);
                }
                vmms__hv__message__free_unpacked(msg, NULL);
        }
}

static int connect_to(const char *path)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        FUZZ_CHECK(fd >= 0 && strlen(path) < sizeof(addr.sun_path));
        strcpy(addr.sun_path, path);
        FUZZ_CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
        return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char *socket_path;
        static uint8_t *buf;
        FuzzInput in = {data, size};
        HvConfig config = {
                .pool_bytes = POOL_BYTES,
                .n_lps = 1,
                .sched_ops = &hv_sched_share_ops,
                .engine = &hv_engine_unicorn_ops,
                .slice_ns = 10000000,
        };
        Hv *hv;
        HvServer *server;
        int fd;

        if (!socket_path) {
                g_autofree char *dir = g_dir_make_tmp("fuzz-hv-server-XXXXXX", NULL);

                FUZZ_CHECK(dir);
                socket_path = g_build_filename(dir, "hvd.sock", NULL);
                buf = g_malloc(HV_WIRE_MESSAGE_MAX);
                fuzz_quiet_logs();
        }
        FUZZ_CHECK(hv_new(&config, g_main_context_default(), &hv) == 0);
        FUZZ_CHECK(hv_server_new(hv, socket_path, NULL, &server) == 0);
        fd = connect_to(socket_path);
        pump();
        for (int n = 0; n < PACKETS_MAX && in.size > 0; n++) {
                uint8_t packet[4096];
                size_t want = fuzz_u16(&in);
                size_t len = fuzz_take(&in, packet, MIN(want, sizeof(packet)));

                if (send(fd, packet, len, MSG_NOSIGNAL) < 0)
                        break; /* hvd closed the connection */
                pump();
                take_replies(fd, buf);
        }
        close(fd);
        pump();
        hv_server_free(server);
        hv_free(hv);
        pump();
        return 0;
}
