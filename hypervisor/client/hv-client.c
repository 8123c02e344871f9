/* hvd root-interface client. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv-client.h"
#include "hv-wire.h"

struct HvClient {
        int fd;
        uint64_t next_id;
        uint8_t *buf;
        char *last_error;
        HvClientEventFn on_event;
        void *on_event_userdata;
};

int hv_client_connect(const char *socket_path, HvClient **ret)
{
        g_autoptr(HvClient) c = g_new0(HvClient, 1);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};

        c->fd = -1;
        c->next_id = 1;
        if (strlen(socket_path) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        strcpy(addr.sun_path, socket_path);
        c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
                return -errno;
        c->buf = g_malloc(HV_WIRE_MESSAGE_MAX);
        *ret = g_steal_pointer(&c);
        return 0;
}

void hv_client_free(HvClient *c)
{
        if (!c)
                return;
        if (c->fd >= 0)
                close(c->fd);
        g_free(c->buf);
        g_free(c->last_error);
        g_free(c);
}

int hv_client_fd(HvClient *c)
{
        return c->fd;
}

void hv_client_set_event_handler(HvClient *c, HvClientEventFn fn, void *userdata)
{
        c->on_event = fn;
        c->on_event_userdata = userdata;
}

const char *hv_client_last_error(HvClient *c)
{
        return c->last_error;
}

static void set_last_error(HvClient *c, const char *message)
{
        g_free(c->last_error);
        c->last_error = g_strdup(message);
}

/* Reads one message, waiting for it when `wait`. Events go to the handler; a reply
 * is returned in *ret_reply (NULL if the message was an event). */
static int read_message(HvClient *c, bool wait, Vmms__Hv__Reply **ret_reply, int *ret_fd)
{
        Vmms__Hv__Message *msg;
        size_t len;
        int fd = -1, r;

        for (;;) {
                r = hv_wire_recv(c->fd, c->buf, HV_WIRE_MESSAGE_MAX, &len, &fd);
                if (r != -EAGAIN || !wait)
                        break;
                struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                        return -errno;
        }
        if (r < 0)
                return r;
        msg = vmms__hv__message__unpack(NULL, len, c->buf);
        if (!msg) {
                if (fd >= 0)
                        close(fd);
                set_last_error(c, "malformed message from hvd");
                return -EBADMSG;
        }
        *ret_reply = NULL;
        if (msg->body_case == VMMS__HV__MESSAGE__BODY_EVENT) {
                if (c->on_event)
                        c->on_event(msg->event, c->on_event_userdata);
                vmms__hv__message__free_unpacked(msg, NULL);
                if (fd >= 0)
                        close(fd);
                return 0;
        }
        if (msg->body_case != VMMS__HV__MESSAGE__BODY_REPLY) {
                vmms__hv__message__free_unpacked(msg, NULL);
                if (fd >= 0)
                        close(fd);
                return -EBADMSG;
        }
        /* Keep the reply, free its envelope. */
        *ret_reply = msg->reply;
        msg->reply = NULL;
        msg->body_case = VMMS__HV__MESSAGE__BODY__NOT_SET;
        vmms__hv__message__free_unpacked(msg, NULL);
        if (ret_fd)
                *ret_fd = fd;
        else if (fd >= 0)
                close(fd);
        return 0;
}

int hv_client_dispatch(HvClient *c)
{
        for (;;) {
                Vmms__Hv__Reply *reply = NULL;
                int r = read_message(c, false, &reply, NULL);

                if (r == -EAGAIN)
                        return 0;
                if (r < 0)
                        return r;
                if (reply)
                        hv_client_reply_free(reply); /* a reply nobody waits for */
        }
}

void hv_client_reply_free(Vmms__Hv__Reply *reply)
{
        if (reply)
                vmms__hv__reply__free_unpacked(reply, NULL);
}

/* Sends `req` and waits for its reply. A reply carrying an error returns that error
 * (its message in hv_client_last_error) and no reply. */
static int call(HvClient *c, Vmms__Hv__Request *req, Vmms__Hv__Reply **ret_reply, int *ret_fd)
{
        int r;

        req->id = c->next_id++;
        r = hv_wire_send(c->fd, &req->base, -1);
        if (r == -EAGAIN) {
                struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};

                (void)poll(&pfd, 1, 5000);
                r = hv_wire_send(c->fd, &req->base, -1);
        }
        if (r < 0) {
                set_last_error(c, "cannot send to hvd");
                return r;
        }
        for (;;) {
                Vmms__Hv__Reply *reply = NULL;
                int fd = -1;

                r = read_message(c, true, &reply, &fd);
                if (r < 0) {
                        set_last_error(c, r == -ECONNRESET ? "hvd closed the connection" : g_strerror(-r));
                        return r;
                }
                if (!reply)
                        continue;
                if (reply->id != req->id) {
                        if (fd >= 0)
                                close(fd);
                        hv_client_reply_free(reply);
                        continue;
                }
                if (reply->error < 0) {
                        r = reply->error;
                        set_last_error(c, reply->error_message && *reply->error_message ? reply->error_message
                                                                                        : g_strerror(-r));
                        if (fd >= 0)
                                close(fd);
                        hv_client_reply_free(reply);
                        return r;
                }
                if (ret_fd)
                        *ret_fd = fd;
                else if (fd >= 0)
                        close(fd);
                if (ret_reply)
                        *ret_reply = reply;
                else
                        hv_client_reply_free(reply);
                return 0;
        }
}

/* Calls `req`, whose reply must carry `want`; otherwise -EPROTO with "hvd's reply to
 * <lack>" as the last error. */
static int call_expecting(HvClient *c, Vmms__Hv__Request *req, Vmms__Hv__Reply__BodyCase want,
                          const char *lack, Vmms__Hv__Reply **ret_reply)
{
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r = call(c, req, &reply, NULL);

        if (r < 0)
                return r;
        if (reply->body_case != want) {
                g_autofree char *message = g_strdup_printf("hvd's reply to %s", lack);

                set_last_error(c, message);
                return -EPROTO;
        }
        *ret_reply = g_steal_pointer(&reply);
        return 0;
}

static void processor_to_wire(const HvClientProcessor *processor, Vmms__Hv__ProcessorSettings *ret)
{
        vmms__hv__processor_settings__init(ret);
        if (!processor)
                return;
        ret->reserve = processor->reserve_pct;
        ret->maximum = processor->maximum_pct;
        ret->relative_weight = processor->relative_weight;
}

int hv_client_partition_create(HvClient *c, const char *name, uint32_t vp_count, uint64_t startup_bytes,
                               uint64_t maximum_bytes, const HvClientProcessor *processor, uint64_t *ret_id,
                               int *ret_ram_fd)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionCreate body = VMMS__HV__PARTITION_CREATE__INIT;
        Vmms__Hv__ProcessorSettings settings;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int fd = -1, r;

        body.name = (char *)name;
        body.vp_count = vp_count;
        body.startup_bytes = startup_bytes;
        body.maximum_bytes = maximum_bytes;
        processor_to_wire(processor, &settings);
        body.processor = &settings;
        body.concurrent_vps = processor && processor->concurrent_vps;
        body.restoring = processor && processor->restoring;
        body.cpu_compatibility = processor && processor->cpu_compatibility;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_CREATE;
        req.partition_create = &body;
        r = call(c, &req, &reply, &fd);
        if (r < 0)
                return r;
        if (reply->body_case != VMMS__HV__REPLY__BODY_PARTITION_CREATED || fd < 0) {
                if (fd >= 0)
                        close(fd);
                set_last_error(c, "hvd's reply to PartitionCreate lacks the partition or its RAM");
                return -EPROTO;
        }
        *ret_id = reply->partition_created->partition_id;
        *ret_ram_fd = fd;
        return 0;
}

int hv_client_partition_set_processor(HvClient *c, uint64_t partition_id, const HvClientProcessor *processor)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionSetProcessor body = VMMS__HV__PARTITION_SET_PROCESSOR__INIT;
        Vmms__Hv__ProcessorSettings settings;

        body.partition_id = partition_id;
        processor_to_wire(processor, &settings);
        body.processor = &settings;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_SET_PROCESSOR;
        req.partition_set_processor = &body;
        return call(c, &req, NULL, NULL);
}

int hv_client_vp_add(HvClient *c, uint64_t partition_id, uint64_t rip, uint64_t rsp, uint64_t rdi,
                     uint64_t rsi, uint32_t *ret_vp_index)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__VpAdd body = VMMS__HV__VP_ADD__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        body.partition_id = partition_id;
        body.rip = rip;
        body.rsp = rsp;
        body.rdi = rdi;
        body.rsi = rsi;
        req.body_case = VMMS__HV__REQUEST__BODY_VP_ADD;
        req.vp_add = &body;
        r = call_expecting(c, &req, VMMS__HV__REPLY__BODY_VP_ADDED, "VpAdd lacks the VP's index", &reply);
        if (r < 0)
                return r;
        *ret_vp_index = reply->vp_added->vp_index;
        return 0;
}

int hv_client_vp_start(HvClient *c, uint64_t partition_id, uint32_t vp_index, uint64_t rip, uint64_t rsp,
                       uint64_t rdi, uint64_t rsi)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__VpStart body = VMMS__HV__VP_START__INIT;

        body.partition_id = partition_id;
        body.vp_index = vp_index;
        body.rip = rip;
        body.rsp = rsp;
        body.rdi = rdi;
        body.rsi = rsi;
        req.body_case = VMMS__HV__REQUEST__BODY_VP_START;
        req.vp_start = &body;
        return call(c, &req, NULL, NULL);
}

int hv_client_partition_destroy(HvClient *c, uint64_t partition_id)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionDestroy body = VMMS__HV__PARTITION_DESTROY__INIT;

        body.partition_id = partition_id;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_DESTROY;
        req.partition_destroy = &body;
        return call(c, &req, NULL, NULL);
}

int hv_client_partition_signal(HvClient *c, uint64_t partition_id, uint32_t vp_index)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionSignal body = VMMS__HV__PARTITION_SIGNAL__INIT;

        body.partition_id = partition_id;
        body.vp_index = vp_index;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_SIGNAL;
        req.partition_signal = &body;
        return call(c, &req, NULL, NULL);
}

int hv_client_partition_pause(HvClient *c, uint64_t partition_id, bool paused)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionPause body = VMMS__HV__PARTITION_PAUSE__INIT;

        body.partition_id = partition_id;
        body.paused = paused;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_PAUSE;
        req.partition_pause = &body;
        return call(c, &req, NULL, NULL);
}

int hv_client_vp_state_get(HvClient *c, uint64_t partition_id, uint32_t vp_index, GBytes **ret_state)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__VpStateGet body = VMMS__HV__VP_STATE_GET__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        uint8_t *packed;
        size_t len;
        int r;

        body.partition_id = partition_id;
        body.vp_index = vp_index;
        req.body_case = VMMS__HV__REQUEST__BODY_VP_STATE_GET;
        req.vp_state_get = &body;
        r = call_expecting(c, &req, VMMS__HV__REPLY__BODY_VP_STATE, "VpStateGet lacks the VP's state",
                           &reply);
        if (r < 0)
                return r;
        len = vmms__hv__vp_state__get_packed_size(reply->vp_state);
        packed = g_malloc(len);
        vmms__hv__vp_state__pack(reply->vp_state, packed);
        *ret_state = g_bytes_new_take(packed, len);
        return 0;
}

int hv_client_vp_state_set(HvClient *c, uint64_t partition_id, const uint8_t *state, size_t len)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__VpStateSet body = VMMS__HV__VP_STATE_SET__INIT;
        Vmms__Hv__VpState *unpacked = vmms__hv__vp_state__unpack(NULL, len, state);
        int r;

        if (!unpacked) {
                set_last_error(c, "the VP state is not a vmms.hv.VpState message");
                return -EBADMSG;
        }
        body.partition_id = partition_id;
        body.state = unpacked;
        req.body_case = VMMS__HV__REQUEST__BODY_VP_STATE_SET;
        req.vp_state_set = &body;
        r = call(c, &req, NULL, NULL);
        vmms__hv__vp_state__free_unpacked(unpacked, NULL);
        return r;
}

int hv_client_partition_state_get(HvClient *c, uint64_t partition_id, HvClientPartitionState *ret)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionStateGet body = VMMS__HV__PARTITION_STATE_GET__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        body.partition_id = partition_id;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_STATE_GET;
        req.partition_state_get = &body;
        r = call_expecting(c, &req, VMMS__HV__REPLY__BODY_PARTITION_STATE,
                           "PartitionStateGet lacks the partition's state", &reply);
        if (r < 0)
                return r;
        *ret = (HvClientPartitionState){
                .reference_time_ns = reply->partition_state->reference_time_ns,
                .vp_count = reply->partition_state->vp_count,
                .visible_bytes = reply->partition_state->visible_bytes,
                .ballooned_bytes = reply->partition_state->ballooned_bytes,
                .hot_added_bytes = reply->partition_state->hot_added_bytes,
        };
        return 0;
}

int hv_client_partition_state_set(HvClient *c, uint64_t partition_id, uint64_t reference_time_ns)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionStateSet body = VMMS__HV__PARTITION_STATE_SET__INIT;

        body.partition_id = partition_id;
        body.reference_time_ns = reference_time_ns;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_STATE_SET;
        req.partition_state_set = &body;
        return call(c, &req, NULL, NULL);
}

static int dirty_log_switch(HvClient *c, uint64_t partition_id, bool on)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__DirtyLogStart start = VMMS__HV__DIRTY_LOG_START__INIT;
        Vmms__Hv__DirtyLogStop stop = VMMS__HV__DIRTY_LOG_STOP__INIT;

        if (on) {
                start.partition_id = partition_id;
                req.body_case = VMMS__HV__REQUEST__BODY_DIRTY_LOG_START;
                req.dirty_log_start = &start;
        } else {
                stop.partition_id = partition_id;
                req.body_case = VMMS__HV__REQUEST__BODY_DIRTY_LOG_STOP;
                req.dirty_log_stop = &stop;
        }
        return call(c, &req, NULL, NULL);
}

int hv_client_dirty_log_start(HvClient *c, uint64_t partition_id)
{
        return dirty_log_switch(c, partition_id, true);
}

int hv_client_dirty_log_stop(HvClient *c, uint64_t partition_id)
{
        return dirty_log_switch(c, partition_id, false);
}

int hv_client_dirty_log_harvest(HvClient *c, uint64_t partition_id, uint64_t *bitmap, uint64_t pages,
                                uint64_t *ret_dirty)
{
        uint64_t first = 0, dirty = 0;

        memset(bitmap, 0, (pages + 63) / 64 * sizeof(uint64_t));
        for (;;) {
                Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
                Vmms__Hv__DirtyLogHarvest body = VMMS__HV__DIRTY_LOG_HARVEST__INIT;
                g_autoptr(Vmms__Hv__Reply) reply = NULL;
                const Vmms__Hv__DirtyLog *log;
                int r;

                body.partition_id = partition_id;
                body.first_page = first;
                req.body_case = VMMS__HV__REQUEST__BODY_DIRTY_LOG_HARVEST;
                req.dirty_log_harvest = &body;
                r = call(c, &req, &reply, NULL);
                if (r < 0)
                        return r;
                log = reply->body_case == VMMS__HV__REPLY__BODY_DIRTY_LOG ? reply->dirty_log : NULL;
                if (!log || log->first_page != first || log->pages > pages - MIN(first, pages) ||
                    log->bitmap.len != (log->pages + 7) / 8) {
                        set_last_error(c, "hvd's dirty log reply does not match the request");
                        return -EPROTO;
                }
                if (log->pages == 0)
                        break;
                for (uint64_t k = 0; k < log->pages; k++)
                        if (log->bitmap.data[k / 8] & (1u << (k % 8))) {
                                uint64_t page = first + k;

                                bitmap[page / 64] |= 1ull << (page % 64);
                                dirty++;
                        }
                first += log->pages;
                if (first >= pages)
                        break;
        }
        *ret_dirty = dirty;
        return 0;
}

/* Calls `req`, whose reply must carry PartitionMemory, and copies its figures out. */
static int call_memory(HvClient *c, Vmms__Hv__Request *req, const char *what, HvClientMemory *ret_memory,
                       Vmms__Hv__Reply **ret_reply)
{
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        const Vmms__Hv__PartitionMemory *m;
        int r;

        r = call(c, req, &reply, NULL);
        if (r < 0)
                return r;
        if (reply->body_case != VMMS__HV__REPLY__BODY_PARTITION_MEMORY) {
                g_autofree char *message =
                        g_strdup_printf("hvd's reply to %s lacks the partition's memory", what);

                set_last_error(c, message);
                return -EPROTO;
        }
        m = reply->partition_memory;
        if (ret_memory)
                *ret_memory = (HvClientMemory){
                        .visible_bytes = m->visible_bytes,
                        .assigned_bytes = m->assigned_bytes,
                        .ballooned_bytes = m->ballooned_bytes,
                        .maximum_bytes = m->maximum_bytes,
                        .resident_bytes = m->resident_bytes,
                        .hot_added_bytes = m->hot_added_bytes,
                        .refused_pages = m->refused_pages,
                        .pool_available_bytes = m->pool_available_bytes,
                };
        if (ret_reply)
                *ret_reply = g_steal_pointer(&reply);
        return 0;
}

int hv_client_partition_hot_add(HvClient *c, uint64_t partition_id, uint64_t bytes,
                                HvClientMemory *ret_memory)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionHotAdd body = VMMS__HV__PARTITION_HOT_ADD__INIT;

        body.partition_id = partition_id;
        body.bytes = bytes;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_HOT_ADD;
        req.partition_hot_add = &body;
        return call_memory(c, &req, "PartitionHotAdd", ret_memory, NULL);
}

static int page_result(HvClient *c, const Vmms__Hv__Reply *reply, size_t n, bool *ret_accepted,
                       HvClientPageTally *ret_tally)
{
        const Vmms__Hv__PageResult *pages = reply->partition_memory->pages;

        if (!pages) {
                set_last_error(c, "hvd's reply lacks the verdict on the pages");
                return -EPROTO;
        }
        if (ret_accepted) {
                for (size_t i = 0; i < n; i++)
                        ret_accepted[i] = true;
                for (size_t i = 0; i < pages->n_refused_indices; i++)
                        if (pages->refused_indices[i] < n)
                                ret_accepted[pages->refused_indices[i]] = false;
        }
        if (ret_tally)
                *ret_tally = (HvClientPageTally){
                        .accepted = pages->accepted,
                        .refused_outside_ram = pages->refused_outside_ram,
                        .refused_duplicate = pages->refused_duplicate,
                        .refused_wrong_state = pages->refused_wrong_state,
                };
        return 0;
}

/* PartitionBalloon and PartitionUnballoon carry the same fields. */
static int call_pages(HvClient *c, bool balloon, uint64_t partition_id, const uint64_t *pfns, size_t n,
                      bool *ret_accepted, HvClientPageTally *ret_tally, HvClientMemory *ret_memory)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionBalloon to_balloon = VMMS__HV__PARTITION_BALLOON__INIT;
        Vmms__Hv__PartitionUnballoon to_unballoon = VMMS__HV__PARTITION_UNBALLOON__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        if (balloon) {
                to_balloon.partition_id = partition_id;
                to_balloon.pfns = (uint64_t *)pfns;
                to_balloon.n_pfns = n;
                req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_BALLOON;
                req.partition_balloon = &to_balloon;
        } else {
                to_unballoon.partition_id = partition_id;
                to_unballoon.pfns = (uint64_t *)pfns;
                to_unballoon.n_pfns = n;
                req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_UNBALLOON;
                req.partition_unballoon = &to_unballoon;
        }
        r = call_memory(c, &req, balloon ? "PartitionBalloon" : "PartitionUnballoon", ret_memory, &reply);
        if (r < 0)
                return r;
        return page_result(c, reply, n, ret_accepted, ret_tally);
}

int hv_client_partition_balloon(HvClient *c, uint64_t partition_id, const uint64_t *pfns, size_t n,
                                bool *ret_accepted, HvClientPageTally *ret_tally, HvClientMemory *ret_memory)
{
        return call_pages(c, true, partition_id, pfns, n, ret_accepted, ret_tally, ret_memory);
}

int hv_client_partition_unballoon(HvClient *c, uint64_t partition_id, const uint64_t *pfns, size_t n,
                                  bool *ret_accepted, HvClientPageTally *ret_tally,
                                  HvClientMemory *ret_memory)
{
        return call_pages(c, false, partition_id, pfns, n, ret_accepted, ret_tally, ret_memory);
}

int hv_client_partition_memory_get(HvClient *c, uint64_t partition_id, HvClientMemory *ret_memory)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__PartitionMemoryGet body = VMMS__HV__PARTITION_MEMORY_GET__INIT;

        body.partition_id = partition_id;
        req.body_case = VMMS__HV__REQUEST__BODY_PARTITION_MEMORY_GET;
        req.partition_memory_get = &body;
        return call_memory(c, &req, "PartitionMemoryGet", ret_memory, NULL);
}

int hv_client_watchdog_arm(HvClient *c, uint32_t timeout_ms, bool *ret_fired)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__WatchdogArm body = VMMS__HV__WATCHDOG_ARM__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        body.timeout_ms = timeout_ms;
        req.body_case = VMMS__HV__REQUEST__BODY_WATCHDOG_ARM;
        req.watchdog_arm = &body;
        r = call(c, &req, &reply, NULL);
        if (r < 0)
                return r;
        if (reply->body_case != VMMS__HV__REPLY__BODY_WATCHDOG_STATE) {
                set_last_error(c, "hvd answered WatchdogArm without its state");
                return -EPROTO;
        }
        *ret_fired = reply->watchdog_state->fired;
        return 0;
}

int hv_client_counters_request(HvClient *c, uint64_t *ret_id)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__CountersGet body = VMMS__HV__COUNTERS_GET__INIT;
        int r;

        req.body_case = VMMS__HV__REQUEST__BODY_COUNTERS_GET;
        req.counters_get = &body;
        req.id = c->next_id++;
        r = hv_wire_send(c->fd, &req.base, -1);
        if (r < 0) {
                set_last_error(c, "cannot send to hvd");
                return r;
        }
        *ret_id = req.id;
        return 0;
}

int hv_client_reply_take(HvClient *c, Vmms__Hv__Reply **ret_reply)
{
        for (;;) {
                Vmms__Hv__Reply *reply = NULL;
                int r = read_message(c, false, &reply, NULL);

                if (r < 0) {
                        if (r != -EAGAIN)
                                set_last_error(c, r == -ECONNRESET ? "hvd closed the connection"
                                                                   : g_strerror(-r));
                        return r;
                }
                if (reply) {
                        *ret_reply = reply;
                        return 0;
                }
        }
}

int hv_client_compatibility_vector_get(HvClient *c, uint64_t partition_id, bool normalized,
                                       Vmms__Hv__Reply **ret_reply)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__CompatibilityVectorGet body = VMMS__HV__COMPATIBILITY_VECTOR_GET__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        body.partition_id = partition_id;
        body.normalized = normalized;
        req.body_case = VMMS__HV__REQUEST__BODY_COMPATIBILITY_VECTOR_GET;
        req.compatibility_vector_get = &body;
        r = call_expecting(c, &req, VMMS__HV__REPLY__BODY_COMPATIBILITY_VECTOR,
                           "CompatibilityVectorGet lacks a vector", &reply);
        if (r < 0)
                return r;
        *ret_reply = g_steal_pointer(&reply);
        return 0;
}

int hv_client_counters_get(HvClient *c, Vmms__Hv__Reply **ret_reply)
{
        Vmms__Hv__Request req = VMMS__HV__REQUEST__INIT;
        Vmms__Hv__CountersGet body = VMMS__HV__COUNTERS_GET__INIT;
        g_autoptr(Vmms__Hv__Reply) reply = NULL;
        int r;

        req.body_case = VMMS__HV__REQUEST__BODY_COUNTERS_GET;
        req.counters_get = &body;
        r = call_expecting(c, &req, VMMS__HV__REPLY__BODY_COUNTERS, "CountersGet lacks counters", &reply);
        if (r < 0)
                return r;
        *ret_reply = g_steal_pointer(&reply);
        return 0;
}
