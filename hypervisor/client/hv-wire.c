/* Root-interface framing over unix SOCK_SEQPACKET sockets. */
#include <errno.h>
#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hv-wire.h"

/* Returns 0, -EAGAIN if the peer's buffer is full, or another negative errno. */
int hv_wire_send(int sock, const ProtobufCMessage *msg, int pass_fd)
{
        size_t len = protobuf_c_message_get_packed_size(msg);
        g_autofree uint8_t *buf = NULL;
        union {
                struct cmsghdr align;
                char data[CMSG_SPACE(sizeof(int))];
        } control = {0};
        struct iovec iov;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n;

        if (len > HV_WIRE_MESSAGE_MAX)
                return -EMSGSIZE;
        buf = g_malloc(len ? len : 1);
        protobuf_c_message_pack(msg, buf);
        iov = (struct iovec){.iov_base = buf, .iov_len = len};
        if (pass_fd >= 0) {
                struct cmsghdr *cm;

                mh.msg_control = control.data;
                mh.msg_controllen = sizeof(control.data);
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
        }
        do
                n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return 0;
}

/* Receives one packet. Returns 0, -EAGAIN if none is waiting, -ECONNRESET when the
 * peer has gone, -EMSGSIZE for a packet larger than `size` (discarded). A received fd
 * is returned in *ret_fd (or closed if ret_fd is NULL); -1 if none came. */
int hv_wire_recv(int sock, uint8_t *buf, size_t size, size_t *ret_len, int *ret_fd)
{
        union {
                struct cmsghdr align;
                char data[CMSG_SPACE(sizeof(int) * 4)];
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = size};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control.data,
                            .msg_controllen = sizeof(control.data)};
        int fd = -1;
        ssize_t n;

        do
                n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int got;

                        memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                        if (fd < 0)
                                fd = got;
                        else
                                close(got); /* one fd per message; extras are not ours */
                }
        }
        if (n == 0 && !(mh.msg_flags & MSG_TRUNC)) {
                if (fd >= 0)
                        close(fd);
                return -ECONNRESET;
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
                if (fd >= 0)
                        close(fd);
                return -EMSGSIZE;
        }
        if (ret_fd)
                *ret_fd = fd;
        else if (fd >= 0)
                close(fd);
        *ret_len = (size_t)n;
        return 0;
}

/* /run/vmms/hvd.sock as root, $XDG_RUNTIME_DIR/vmms/hvd.sock otherwise. */
char *hv_wire_default_socket_path(void)
{
        if (geteuid() == 0)
                return g_strdup("/run/vmms/hvd.sock");
        return g_build_filename(g_get_user_runtime_dir(), "vmms", "hvd.sock", NULL);
}
