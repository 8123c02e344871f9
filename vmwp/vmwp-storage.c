/* The storage VSP: WRITE stores a page in a slot, READ returns one, each answered by a
 * COMPLETION with the request's id. Every slot is checked against the disk's size; a
 * slot never written reads as zeros (the file is sparse). The file lives as long as the
 * worker and is removed when it exits. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vmwp-storage.h"

struct VmwpStorage {
        VmwpChannel *channel;
        char *path;
        int fd;
        VmwpStorageStats stats;
};

static void complete(VmwpStorage *s, uint32_t request_id, int32_t status, const void *page)
{
        struct hv_storage_completion completion = {.request_id = request_id, .status = status};
        VmwpSegment segs[] = {{&completion, sizeof(completion)}, {page, page ? (uint32_t)HV_PAGE_SIZE : 0}};
        int r = vmwp_channel_send(s->channel, HV_STORAGE_COMPLETION, segs, page ? 2 : 1);

        if (r < 0)
                g_message("storage: cannot complete request %u: %s", request_id, g_strerror(-r));
}

/* 0, or -(HV_STATUS_*) for the completion. */
static int32_t check_request(VmwpStorage *s, const VmwpPacket *packet, bool write,
                             struct hv_storage_request *ret)
{
        uint32_t need = (uint32_t)sizeof(*ret) + (write ? (uint32_t)HV_PAGE_SIZE : 0);

        if (packet->length < sizeof(*ret))
                return -HV_STATUS_INVALID_PARAMETER;
        memcpy(ret, packet->data, sizeof(*ret));
        if (packet->length < need)
                return -HV_STATUS_INVALID_PARAMETER;
        if (ret->slot >= s->stats.slots)
                return -HV_STATUS_INVALID_PARAMETER;
        return 0;
}

static void on_packet(VmwpChannel *channel, const VmwpPacket *packet, void *userdata)
{
        VmwpStorage *s = userdata;
        struct hv_storage_request request = {0};
        uint8_t page[HV_PAGE_SIZE];
        bool write = packet->type == HV_STORAGE_WRITE;
        int32_t status;
        ssize_t n;

        (void)channel;
        if (packet->type != HV_STORAGE_WRITE && packet->type != HV_STORAGE_READ) {
                s->stats.refused++;
                return;
        }
        status = check_request(s, packet, write, &request);
        if (status < 0) {
                s->stats.refused++;
                complete(s, request.request_id, status, NULL);
                return;
        }
        if (write) {
                n = pwrite(s->fd, packet->data + sizeof(request), HV_PAGE_SIZE,
                           (off_t)(request.slot * HV_PAGE_SIZE));
                s->stats.writes++;
        } else {
                n = pread(s->fd, page, HV_PAGE_SIZE, (off_t)(request.slot * HV_PAGE_SIZE));
                if (n >= 0 && n < (ssize_t)HV_PAGE_SIZE)
                        memset(page + n, 0, HV_PAGE_SIZE - (size_t)n); /* past the end of what was written */
                s->stats.reads++;
        }
        if (n < 0 || (write && n != (ssize_t)HV_PAGE_SIZE)) {
                s->stats.io_errors++;
                complete(s, request.request_id, -HV_STATUS_INSUFFICIENT_BUFFERS, NULL);
                return;
        }
        complete(s, request.request_id, 0, write ? NULL : page);
}

static const VmwpVspOps storage_vsp_ops = {
        .name = "storage",
        .device_class = HV_VMBUS_CLASS_STORAGE,
        .min_ring_pages = 4,
        .packet = on_packet,
};

int vmwp_storage_new(VmwpVmbus *bus, const char *path, uint64_t slots, VmwpStorage **ret, char **ret_error)
{
        g_autoptr(VmwpStorage) s = g_new0(VmwpStorage, 1);

        s->fd = -1;
        s->stats.slots = slots;
        s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (s->fd < 0) {
                int r = -errno;

                *ret_error = g_strdup_printf("cannot create the paging file %s: %s", path, g_strerror(-r));
                return r;
        }
        s->path = g_strdup(path);
        if (ftruncate(s->fd, (off_t)(slots * HV_PAGE_SIZE)) < 0) {
                int r = -errno;

                *ret_error =
                        g_strdup_printf("cannot size the paging file %s to %" G_GUINT64_FORMAT " bytes: %s",
                                        path, (uint64_t)(slots * HV_PAGE_SIZE), g_strerror(-r));
                return r;
        }
        s->channel = vmwp_vmbus_add_device(bus, &storage_vsp_ops, s);
        *ret = g_steal_pointer(&s);
        return 0;
}

void vmwp_storage_free(VmwpStorage *s)
{
        if (!s)
                return;
        if (s->fd >= 0)
                close(s->fd);
        if (s->path)
                (void)unlink(s->path);
        g_free(s->path);
        g_free(s);
}

const VmwpStorageStats *vmwp_storage_stats(const VmwpStorage *s)
{
        return &s->stats;
}
