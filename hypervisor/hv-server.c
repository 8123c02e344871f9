/* Root-interface server. Each connection owns the partitions it creates; when it
 * closes (its worker exited or died) they are destroyed and their memory returned.
 * A client is not trusted: a malformed or empty request gets an error reply (never a
 * teardown), a request may touch only the connection's own partitions (counters are
 * readable by all), and a connection holds at most its limits (HvConnectionLimits:
 * partitions, VPs, assigned memory). Every HV_MEMORY_RECONCILE_MS, and before memory
 * figures are reported, ballooned pages a guest touched again are charged back; a
 * partition whose pool or quota cannot cover them is stopped, saying why. */
#include <errno.h>
#include <glib-unix.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-memory.h"
#include "hv-server.h"
#include "hv-state.h"
#include "hv-wire.h"
#include "hv.pb-c.h"

struct HvServer {
        Hv *hv;
        int listen_fd;
        guint listen_source;
        char *path;
        GHashTable *connections; /* HvConnection* set */
        HvConnectionLimits limits;
        guint reconcile_source;
        guint watchdog_source; /* WatchdogArm: pauses every partition when it fires */
        bool watchdog_fired;
};

typedef struct HvConnection {
        HvServer *server;
        int fd;
        guint source;
        GHashTable *partitions; /* id -> HvPartition*, owned here */
        uint32_t vps;           /* over its partitions */
        HvQuota quota;          /* its partitions' assigned memory, against the limit */
        uint8_t *buf;
} HvConnection;

/* Takes a partition off the connection's books and destroys it. */
static void connection_destroy_partition(HvConnection *c, HvPartition *p)
{
        c->vps -= MIN(c->vps, (uint32_t)p->vp_count);
        c->quota.memory_used_bytes -= MIN(c->quota.memory_used_bytes, p->assigned_bytes);
        hv_partition_destroy(c->server->hv, p);
}

static void connection_free(HvConnection *c)
{
        if (!c)
                return;
        if (c->partitions) {
                g_autoptr(GList) owned = g_hash_table_get_values(c->partitions);

                for (GList *l = owned; l; l = l->next) {
                        HvPartition *p = l->data;

                        g_message("partition %" G_GUINT64_FORMAT " (%s): its worker disconnected, destroying",
                                  p->id, p->name);
                        connection_destroy_partition(c, p);
                }
                g_hash_table_unref(c->partitions);
        }
        if (c->source)
                g_source_remove(c->source);
        if (c->fd >= 0)
                close(c->fd);
        g_free(c->buf);
        g_free(c);
}

static void connection_close(HvConnection *c)
{
        g_hash_table_remove(c->server->connections, c);
        connection_free(c);
}

static int send_reply(HvConnection *c, Vmms__Hv__Reply *reply, int pass_fd)
{
        Vmms__Hv__Message msg = VMMS__HV__MESSAGE__INIT;

        msg.body_case = VMMS__HV__MESSAGE__BODY_REPLY;
        msg.reply = reply;
        return hv_wire_send(c->fd, &msg.base, pass_fd);
}

static void reply_error(Vmms__Hv__Reply *reply, int error, char *message)
{
        reply->error = error;
        reply->error_message = message;
}

static HvPartition *owned_partition(HvConnection *c, uint64_t id, Vmms__Hv__Reply *reply)
{
        HvPartition *p = g_hash_table_lookup(c->partitions, &id);

        if (!p)
                reply_error(reply, -ENOENT,
                            g_strdup_printf(
                                    "partition %" G_GUINT64_FORMAT " does not exist on this connection", id));
        return p;
}

/* Out-of-range settings are refused naming the field; a missing message is all defaults. */
static int processor_from_wire(const Vmms__Hv__ProcessorSettings *wire, HvProcessorSettings *ret,
                               char **ret_error)
{
        if (!wire) {
                *ret = HV_PROCESSOR_DEFAULTS;
                return 0;
        }
        return hv_processor_settings_from_wire(wire->reserve, wire->maximum, wire->relative_weight, ret,
                                               ret_error);
}

/* A new partition of `vps` VPs and `bytes` of memory within the connection's limits? */
static int check_limits(HvConnection *c, uint32_t partitions, uint32_t vps, uint64_t bytes, char **ret_error)
{
        const HvConnectionLimits *limits = &c->server->limits;
        uint32_t held = g_hash_table_size(c->partitions);

        if (held + partitions > limits->partitions) {
                *ret_error = g_strdup_printf("this connection holds %u partitions, its limit (hvd "
                                             "--connection-partitions %u)",
                                             held, limits->partitions);
                return -EDQUOT;
        }
        if (vps > limits->vps || c->vps > limits->vps - vps) {
                *ret_error = g_strdup_printf("%u more VPs would make this connection's %u exceed its limit "
                                             "(hvd --connection-vps %u)",
                                             vps, c->vps, limits->vps);
                return -EDQUOT;
        }
        if (bytes >
            c->quota.memory_limit_bytes - MIN(c->quota.memory_used_bytes, c->quota.memory_limit_bytes)) {
                *ret_error =
                        g_strdup_printf("%" G_GUINT64_FORMAT " bytes would exceed this connection's memory "
                                        "limit of %" G_GUINT64_FORMAT " bytes (%" G_GUINT64_FORMAT
                                        " held; hvd --connection-memory)",
                                        bytes, c->quota.memory_limit_bytes, c->quota.memory_used_bytes);
                return -EDQUOT;
        }
        return 0;
}

static int handle_partition_create(HvConnection *c, const Vmms__Hv__PartitionCreate *req,
                                   Vmms__Hv__Reply *reply, Vmms__Hv__PartitionCreated *created, int *ret_fd)
{
        Hv *hv = c->server->hv;
        HvPartitionSpec spec = {
                .name = req->name,
                .vp_count = req->vp_count,
                .max_vp_count = req->maximum_vp_count,
                .startup_bytes = req->startup_bytes,
                .maximum_bytes = req->maximum_bytes,
                .concurrent_vps = req->concurrent_vps,
                .restoring = req->restoring,
                .cpuid_normalized = req->cpu_compatibility,
        };
        HvPartition *p;
        char *error = NULL;
        int r;

        /* A request hvd would refuse anyway (a bad field, more than the pool) gets that
         * answer; the connection's limits come after. */
        r = 0;
        if (req->vp_count >= 1 && req->vp_count <= HV_MAX_VPS_PER_PARTITION &&
            req->startup_bytes <= hv_pool_available(&hv->pool))
                r = check_limits(c, 1, req->vp_count, req->startup_bytes, &error);
        if (r >= 0)
                r = processor_from_wire(req->processor, &spec.processor, &error);
        if (r >= 0)
                r = hv_partition_create(hv, &spec, &p, &error);
        if (r < 0) {
                reply_error(reply, r, error ? error : g_strdup(g_strerror(-r)));
                return 0;
        }
        p->owner = c;
        p->quota = &c->quota;
        c->quota.memory_used_bytes += p->assigned_bytes;
        c->vps += p->vp_count;
        g_hash_table_insert(c->partitions, &p->id, p);
        created->partition_id = p->id;
        created->ram_bytes = p->maximum_bytes;
        reply->body_case = VMMS__HV__REPLY__BODY_PARTITION_CREATED;
        reply->partition_created = created;
        *ret_fd = p->ram_fd;
        g_message("partition %" G_GUINT64_FORMAT " (%s): created, %u VPs%s%s, %" G_GUINT64_FORMAT
                  " bytes, reserve %u%% maximum %u%% weight %u, node %d",
                  p->id, p->name, (uint32_t)p->vp_count, p->ganged ? " ganged" : " concurrent",
                  p->cpuid_normalized ? ", normalized CPUID" : "", p->assigned_bytes,
                  p->processor.reserve_pct, p->processor.maximum_pct, p->processor.relative_weight,
                  p->home_node);
        return 0;
}

static void handle_partition_set_processor(HvConnection *c, const Vmms__Hv__PartitionSetProcessor *req,
                                           Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        HvProcessorSettings settings;
        char *error = NULL;
        int r;

        if (!p)
                return;
        r = processor_from_wire(req->processor, &settings, &error);
        if (r >= 0)
                r = hv_partition_set_processor(c->server->hv, p, &settings, &error);
        if (r < 0) {
                reply_error(reply, r, error ? error : g_strdup(g_strerror(-r)));
                return;
        }
        g_message("partition %" G_GUINT64_FORMAT " (%s): reserve %u%% maximum %u%% weight %u", p->id, p->name,
                  settings.reserve_pct, settings.maximum_pct, settings.relative_weight);
}

static void handle_vp_add(HvConnection *c, const Vmms__Hv__VpAdd *req, Vmms__Hv__Reply *reply,
                          Vmms__Hv__VpAdded *added)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        HvVpRegs regs = {.rip = req->rip, .rsp = req->rsp, .rdi = req->rdi, .rsi = req->rsi};
        char *error = NULL;
        uint32_t index, index_before = p ? p->vp_count : 0;
        int r;

        if (!p)
                return;
        r = check_limits(c, 0, 1, 0, &error);
        if (r >= 0)
                r = hv_partition_vp_add(c->server->hv, p, &regs, &index, &error);
        c->vps += p->vp_count - index_before; /* a VP added that then failed to start counts too */
        if (r < 0) {
                reply_error(reply, r, error ? error : g_strdup(g_strerror(-r)));
                return;
        }
        added->vp_index = index;
        reply->body_case = VMMS__HV__REPLY__BODY_VP_ADDED;
        reply->vp_added = added;
        g_message("partition %" G_GUINT64_FORMAT " (%s): vp %u added", p->id, p->name, index);
}

static void handle_vp_start(HvConnection *c, const Vmms__Hv__VpStart *req, Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        HvVpRegs regs = {.rip = req->rip, .rsp = req->rsp, .rdi = req->rdi, .rsi = req->rsi};
        int r;

        if (!p)
                return;
        r = hv_partition_vp_start(p, req->vp_index, &regs);
        if (r == -EINVAL)
                reply_error(
                        reply, r,
                        g_strdup_printf("vp_index %u is out of range 0-%u", req->vp_index, p->vp_count - 1));
        else if (r == -ERANGE)
                reply_error(reply, r, g_strdup("rip or rsp lies outside the partition's visible RAM"));
        else if (r == -EBUSY)
                reply_error(reply, r, g_strdup_printf("vp %u has already been started", req->vp_index));
        else if (r < 0)
                reply_error(reply, r, g_strdup(g_strerror(-r)));
}

static void handle_partition_destroy(HvConnection *c, const Vmms__Hv__PartitionDestroy *req,
                                     Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);

        if (!p)
                return;
        g_hash_table_remove(c->partitions, &p->id);
        g_message("partition %" G_GUINT64_FORMAT " (%s): destroyed", p->id, p->name);
        connection_destroy_partition(c, p);
}

static void handle_partition_signal(HvConnection *c, const Vmms__Hv__PartitionSignal *req,
                                    Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);

        if (!p)
                return;
        if (req->vp_index >= p->vp_count) {
                reply_error(
                        reply, -EINVAL,
                        g_strdup_printf("vp_index %u is out of range 0-%u", req->vp_index, p->vp_count - 1));
                return;
        }
        hv_sched_vp_signal(c->server->hv->sched, p->vps[req->vp_index]);
}

/* The self-fence: nobody re-armed the watchdog in time, so every partition stops
 * running guest code (hv.proto WatchdogArm). */
static gboolean on_watchdog_fired(gpointer userdata)
{
        HvServer *server = userdata;
        GHashTableIter it;
        gpointer p;
        guint n = 0;

        server->watchdog_source = 0;
        server->watchdog_fired = true;
        g_hash_table_iter_init(&it, server->hv->partitions);
        while (g_hash_table_iter_next(&it, NULL, &p)) {
                hv_sched_partition_pause(server->hv->sched, p, true);
                n++;
        }
        g_message("watchdog: not armed again in time: %u partition%s paused (self-fence)", n,
                  n == 1 ? "" : "s");
        return G_SOURCE_REMOVE;
}

static void handle_watchdog_arm(HvConnection *c, const Vmms__Hv__WatchdogArm *req, Vmms__Hv__Reply *reply,
                                Vmms__Hv__WatchdogState *state)
{
        HvServer *server = c->server;

        if (server->watchdog_source)
                g_source_remove(server->watchdog_source);
        server->watchdog_source =
                req->timeout_ms ? g_timeout_add(req->timeout_ms, on_watchdog_fired, server) : 0;
        state->fired = server->watchdog_fired;
        server->watchdog_fired = false;
        reply->body_case = VMMS__HV__REPLY__BODY_WATCHDOG_STATE;
        reply->watchdog_state = state;
}

static void handle_partition_pause(HvConnection *c, const Vmms__Hv__PartitionPause *req,
                                   Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);

        if (!p)
                return;
        hv_sched_partition_pause(c->server->hv->sched, p, req->paused);
        if (!req->paused)
                p->restoring = false; /* its state is its own from now on */
        g_message("partition %" G_GUINT64_FORMAT " (%s): %s", p->id, p->name,
                  req->paused ? "paused" : "resumed");
}

/* Save and restore (hv-state.c does the work and the checking). */
static void handle_vp_state_get(HvConnection *c, const Vmms__Hv__VpStateGet *req, Vmms__Hv__Reply *reply,
                                Vmms__Hv__VpState *state, GPtrArray *arena)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        char *error = NULL;
        int r;

        if (!p)
                return;
        r = hv_state_vp_get(c->server->hv, p, req->vp_index, state, arena, &error);
        if (r < 0) {
                reply_error(reply, r, error);
                return;
        }
        reply->body_case = VMMS__HV__REPLY__BODY_VP_STATE;
        reply->vp_state = state;
}

static void handle_vp_state_set(HvConnection *c, const Vmms__Hv__VpStateSet *req, Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        char *error = NULL;
        int r;

        if (!p)
                return;
        r = hv_state_vp_set(c->server->hv, p, req->state, &error);
        if (r < 0)
                reply_error(reply, r, error);
}

static void handle_partition_state_get(HvConnection *c, const Vmms__Hv__PartitionStateGet *req,
                                       Vmms__Hv__Reply *reply, Vmms__Hv__PartitionState *state)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        char *error = NULL;
        int r;

        if (!p)
                return;
        r = hv_state_partition_get(p, state, &error);
        if (r < 0) {
                reply_error(reply, r, error);
                return;
        }
        reply->body_case = VMMS__HV__REPLY__BODY_PARTITION_STATE;
        reply->partition_state = state;
}

static void handle_partition_state_set(HvConnection *c, const Vmms__Hv__PartitionStateSet *req,
                                       Vmms__Hv__Reply *reply)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        char *error = NULL;
        int r;

        if (!p)
                return;
        r = hv_state_partition_set(p, req->reference_time_ns, &error);
        if (r < 0)
                reply_error(reply, r, error);
}

/* Live migration's dirty tracking (hv-dirty.c). The bitmap of a harvest lives in the
 * arena until the reply is sent. */
static void handle_dirty_log(HvConnection *c, Vmms__Hv__Request__BodyCase op, uint64_t partition_id,
                             uint64_t first_page, Vmms__Hv__Reply *reply, Vmms__Hv__DirtyLog *log,
                             GPtrArray *arena)
{
        HvPartition *p = owned_partition(c, partition_id, reply);
        uint64_t *words, pages, dirty;
        int r;

        if (!p)
                return;
        if (op == VMMS__HV__REQUEST__BODY_DIRTY_LOG_START) {
                r = hv_dirty_start(p);
                if (r < 0)
                        reply_error(reply, r, g_strdup("the partition's dirty pages are tracked already"));
                else
                        g_message("partition %" G_GUINT64_FORMAT " (%s): dirty tracking on", p->id, p->name);
                return;
        }
        if (op == VMMS__HV__REQUEST__BODY_DIRTY_LOG_STOP) {
                r = hv_dirty_stop(p);
                if (r < 0)
                        reply_error(reply, r, g_strdup("the partition's dirty pages are not tracked"));
                else
                        g_message("partition %" G_GUINT64_FORMAT " (%s): dirty tracking off", p->id, p->name);
                return;
        }
        words = g_new(uint64_t, (HV_DIRTY_HARVEST_PAGES + 63) / 64);
        g_ptr_array_add(arena, words);
        r = hv_dirty_harvest(p, first_page, words, &pages, &dirty);
        if (r < 0) {
                reply_error(reply, r, g_strdup("the partition's dirty pages are not tracked"));
                return;
        }
        for (uint64_t i = 0; i < (pages + 63) / 64; i++)
                words[i] = GUINT64_TO_LE(words[i]);
        log->first_page = first_page;
        log->pages = pages;
        log->bitmap.data = (uint8_t *)words;
        log->bitmap.len = (pages + 7) / 8;
        log->dirty_pages = dirty;
        reply->body_case = VMMS__HV__REPLY__BODY_DIRTY_LOG;
        reply->dirty_log = log;
}

/* A vector into the reply, its strings and leaves pointing into `v` or the arena. */
static Vmms__Hv__CompatibilityVector *vector_to_wire(const HvCompatVector *v, GPtrArray *arena)
{
        Vmms__Hv__CompatibilityVector *out = g_new0(Vmms__Hv__CompatibilityVector, 1);
        Vmms__Hv__CpuidLeaf *leaves = g_new0(Vmms__Hv__CpuidLeaf, v->n_cpuid);

        g_ptr_array_add(arena, out);
        g_ptr_array_add(arena, leaves);
        vmms__hv__compatibility_vector__init(out);
        out->engine = (char *)v->engine;
        out->engine_version = (char *)v->engine_version;
        out->cpu_model = (char *)v->cpu_model;
        out->cpuid_hash = (char *)v->cpuid_hash;
        out->guest_abi_version = v->guest_abi_version;
        out->protocol_version = v->protocol_version;
        out->normalized = v->normalized;
        out->n_cpuid = v->n_cpuid;
        out->cpuid = g_new0(Vmms__Hv__CpuidLeaf *, v->n_cpuid);
        g_ptr_array_add(arena, out->cpuid);
        for (size_t i = 0; i < v->n_cpuid; i++) {
                vmms__hv__cpuid_leaf__init(&leaves[i]);
                leaves[i].leaf = v->cpuid[i].leaf;
                leaves[i].subleaf = v->cpuid[i].subleaf;
                leaves[i].eax = v->cpuid[i].eax;
                leaves[i].ebx = v->cpuid[i].ebx;
                leaves[i].ecx = v->cpuid[i].ecx;
                leaves[i].edx = v->cpuid[i].edx;
                out->cpuid[i] = &leaves[i];
        }
        return out;
}

static void handle_compatibility_vector_get(HvConnection *c, const Vmms__Hv__CompatibilityVectorGet *req,
                                            Vmms__Hv__Reply *reply, GPtrArray *arena)
{
        Hv *hv = c->server->hv;
        bool normalized = req->normalized;

        if (req->partition_id) {
                HvPartition *p = owned_partition(c, req->partition_id, reply);

                if (!p)
                        return;
                if (req->normalized) {
                        reply_error(reply, -EINVAL,
                                    g_strdup("normalized is the partition's own: send it only with "
                                             "partition_id 0"));
                        return;
                }
                normalized = p->cpuid_normalized;
        }
        reply->body_case = VMMS__HV__REPLY__BODY_COMPATIBILITY_VECTOR;
        reply->compatibility_vector =
                vector_to_wire(normalized ? &hv->vector_normalized : &hv->vector_host, arena);
}

/* Stops every VP of `p` for good and tells its worker why, as a fault would: the worker
 * records the reason and exits, and its partition goes with its connection. */
static void stop_partition(HvConnection *c, HvPartition *p, const char *reason)
{
        Hv *hv = c->server->hv;

        g_warning("partition %" G_GUINT64_FORMAT " (%s): stopped: %s", p->id, p->name, reason);
        hv_sched_partition_stop(hv->sched, p);
        hv_memory_release_retouched(p);
        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvEvent event = {.kind = HV_EVENT_VP_STOPPED, .vp_index = i, .reason = reason};

                if (hv->on_event)
                        (void)hv->on_event(p, &event, hv->on_event_userdata);
        }
}

/* Charges back the ballooned pages `p`'s guest touched again, or stops it. */
static void reconcile_partition(HvConnection *c, HvPartition *p)
{
        g_autofree char *error = NULL;
        uint64_t pages;
        int r;

        if (atomic_load(&p->dying))
                return;
        r = hv_memory_reconcile(p, &pages, &error);
        if (r < 0) {
                g_autofree char *reason = g_strdup_printf("memory: %s", error);

                stop_partition(c, p, reason);
        } else if (pages > 0)
                g_message("partition %" G_GUINT64_FORMAT " (%s): the guest touched %" G_GUINT64_FORMAT
                          " ballooned pages again; charged back, assigned %" G_GUINT64_FORMAT,
                          p->id, p->name, pages, p->assigned_bytes);
}

static void reconcile_all(HvServer *server)
{
        GHashTableIter iter;
        gpointer key;

        g_hash_table_iter_init(&iter, server->connections);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
                HvConnection *c = key;
                g_autoptr(GList) owned = g_hash_table_get_values(c->partitions);

                for (GList *l = owned; l; l = l->next)
                        reconcile_partition(c, l->data);
        }
}

static gboolean on_reconcile_timer(gpointer userdata)
{
        reconcile_all(userdata);
        return G_SOURCE_CONTINUE;
}

/* hv.proto PartitionMemory: the figures of the partition and the pool it draws on. */
static void fill_partition_memory(Hv *hv, const HvPartition *p, Vmms__Hv__PartitionMemory *memory)
{
        memory->visible_bytes = atomic_load(&p->visible_bytes);
        memory->assigned_bytes = p->assigned_bytes;
        memory->ballooned_bytes = p->ballooned_pages * HV_PAGE_SIZE;
        memory->maximum_bytes = p->maximum_bytes;
        memory->resident_bytes = hv_partition_resident_bytes(p);
        memory->hot_added_bytes = p->hot_added_bytes;
        memory->refused_pages = p->refused_pages;
        memory->pool_available_bytes = hv_pool_available(&hv->pool);
}

static void reply_memory(HvConnection *c, HvPartition *p, Vmms__Hv__Reply *reply, GPtrArray *arena)
{
        Vmms__Hv__PartitionMemory *memory = g_new0(Vmms__Hv__PartitionMemory, 1);

        reconcile_partition(c, p); /* figures are reported reconciled */
        g_ptr_array_add(arena, memory);
        vmms__hv__partition_memory__init(memory);
        fill_partition_memory(c->server->hv, p, memory);
        reply->body_case = VMMS__HV__REPLY__BODY_PARTITION_MEMORY;
        reply->partition_memory = memory;
}

static void handle_partition_hot_add(HvConnection *c, const Vmms__Hv__PartitionHotAdd *req,
                                     Vmms__Hv__Reply *reply, GPtrArray *arena)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);
        uint64_t visible;
        char *error = NULL;
        int r;

        if (!p)
                return;
        visible = atomic_load(&p->visible_bytes);
        r = hv_memory_hot_add(p, req->bytes, &error);
        if (r < 0) {
                reply_error(reply, r, error ? error : g_strdup(g_strerror(-r)));
                return;
        }
        reply_memory(c, p, reply, arena);
        g_message("partition %" G_GUINT64_FORMAT " (%s): hot-added %" G_GUINT64_FORMAT
                  " bytes at 0x%" G_GINT64_MODIFIER "x, visible %" G_GUINT64_FORMAT,
                  p->id, p->name, req->bytes, visible, visible + req->bytes);
}

/* Balloon and unballoon: each page judged alone, the refused ones listed in the reply. */
static void handle_partition_pages(HvConnection *c, uint64_t partition_id, const uint64_t *pfns, size_t n,
                                   bool to_balloon, Vmms__Hv__Reply *reply, GPtrArray *arena)
{
        HvPartition *p = owned_partition(c, partition_id, reply);
        g_autofree HvPageVerdict *verdicts = NULL;
        Vmms__Hv__PageResult *pages;
        HvPageTally tally;
        char *error = NULL;
        size_t refused = 0;
        int r;

        if (!p)
                return;
        verdicts = g_new(HvPageVerdict, n ? n : 1);
        r = to_balloon ? hv_memory_balloon(p, pfns, n, verdicts, &tally, &error)
                       : hv_memory_unballoon(p, pfns, n, verdicts, &tally, &error);
        if (r < 0) {
                reply_error(reply, r, error ? error : g_strdup(g_strerror(-r)));
                return;
        }
        reply_memory(c, p, reply, arena);
        pages = g_new0(Vmms__Hv__PageResult, 1);
        g_ptr_array_add(arena, pages);
        vmms__hv__page_result__init(pages);
        pages->accepted = tally.accepted;
        pages->refused_outside_ram = tally.outside_ram;
        pages->refused_duplicate = tally.duplicate;
        pages->refused_wrong_state = tally.wrong_state;
        pages->refused_indices = g_new(uint32_t, n - tally.accepted + 1);
        g_ptr_array_add(arena, pages->refused_indices);
        for (size_t i = 0; i < n; i++)
                if (verdicts[i] != HV_PAGE_ACCEPTED)
                        pages->refused_indices[refused++] = (uint32_t)i;
        pages->n_refused_indices = refused;
        reply->partition_memory->pages = pages;
        if (refused > 0)
                g_message("partition %" G_GUINT64_FORMAT
                          " (%s): %s refused %zu of %zu pages (%u outside RAM, "
                          "%u duplicates, %u %s)",
                          p->id, p->name, to_balloon ? "balloon" : "unballoon", refused, n, tally.outside_ram,
                          tally.duplicate, tally.wrong_state,
                          to_balloon ? "already ballooned" : "not ballooned");
}

static void handle_partition_memory_get(HvConnection *c, const Vmms__Hv__PartitionMemoryGet *req,
                                        Vmms__Hv__Reply *reply, GPtrArray *arena)
{
        HvPartition *p = owned_partition(c, req->partition_id, reply);

        if (p)
                reply_memory(c, p, reply, arena);
}

static gint compare_partitions(gconstpointer a, gconstpointer b)
{
        const HvPartition *pa = *(HvPartition *const *)a, *pb = *(HvPartition *const *)b;

        return pa->id < pb->id ? -1 : pa->id > pb->id;
}

/* Builds the counters; every allocation goes to `arena`, freed after the reply is sent. */
static Vmms__Hv__Counters *build_counters(Hv *hv, GPtrArray *arena)
{
        static const char *const root_threads[] = {"main", "timer"};
        Vmms__Hv__Counters *counters = g_new0(Vmms__Hv__Counters, 1);
        uint32_t n_lps = hv_sched_lp_count(hv->sched);
        HvThreadStat host;
        HvLpSample *lps = g_new0(HvLpSample, n_lps);
        g_autoptr(GPtrArray) partitions = g_ptr_array_new();
        GHashTableIter iter;
        gpointer value;

        g_ptr_array_add(arena, counters);
        g_ptr_array_add(arena, lps);
        vmms__hv__counters__init(counters);
        counters->time_ns = hv_reference_time_ns(hv);
        counters->pool_total_bytes = hv->pool.total_bytes;
        counters->pool_used_bytes = hv->pool.used_bytes;

        hv_sched_sample_lps(hv->sched, lps);
        counters->n_lps = n_lps;
        counters->lps = g_new0(Vmms__Hv__LpCounters *, n_lps);
        g_ptr_array_add(arena, counters->lps);
        for (uint32_t i = 0; i < n_lps; i++) {
                Vmms__Hv__LpCounters *lc = g_new0(Vmms__Hv__LpCounters, 1);

                g_ptr_array_add(arena, lc);
                vmms__hv__lp_counters__init(lc);
                lc->index = i;
                lc->guest_ns = lps[i].guest_ns;
                lc->hypervisor_ns = lps[i].hypervisor_ns;
                lc->idle_ns = lps[i].idle_ns;
                lc->context_switches = lps[i].context_switches;
                lc->scheduler_ns = lps[i].scheduler_ns;
                lc->dispatches = lps[i].dispatches;
                lc->node = lps[i].node;
                if (hv_thread_stat(lps[i].tid, &host) >= 0) {
                        lc->host_run_ns = host.run_ns;
                        lc->host_wait_ns = host.wait_ns;
                }
                counters->lps[i] = lc;
        }
        counters->scheduler = (char *)hv_sched_policy_name(hv->sched);
        counters->numa_nodes = hv_sched_node_count(hv->sched);
        counters->reserved_pct = (uint32_t)hv->reserved_pct;
        counters->capacity_pct = (uint32_t)hv_capacity_pct(hv);
        counters->io_boost = hv_sched_io_boost(hv->sched);
        counters->n_root_vps = G_N_ELEMENTS(root_threads);
        counters->root_vps = g_new0(Vmms__Hv__RootVpCounters *, counters->n_root_vps);
        g_ptr_array_add(arena, counters->root_vps);
        for (size_t i = 0; i < G_N_ELEMENTS(root_threads); i++) {
                Vmms__Hv__RootVpCounters *rc = g_new0(Vmms__Hv__RootVpCounters, 1);
                pid_t tid = i == 0 ? hv->main_tid : hv_sched_timer_tid(hv->sched);

                g_ptr_array_add(arena, rc);
                vmms__hv__root_vp_counters__init(rc);
                rc->name = (char *)root_threads[i];
                if (hv_thread_stat(tid, &host) >= 0) {
                        rc->run_ns = host.run_ns;
                        rc->wait_ns = host.wait_ns;
                        rc->dispatches = host.timeslices;
                }
                counters->root_vps[i] = rc;
        }

        g_hash_table_iter_init(&iter, hv->partitions);
        while (g_hash_table_iter_next(&iter, NULL, &value))
                g_ptr_array_add(partitions, value);
        g_ptr_array_sort(partitions, compare_partitions);
        counters->n_partitions = partitions->len;
        counters->partitions = g_new0(Vmms__Hv__PartitionCounters *, partitions->len);
        g_ptr_array_add(arena, counters->partitions);
        for (guint i = 0; i < partitions->len; i++) {
                HvPartition *p = partitions->pdata[i];
                Vmms__Hv__PartitionCounters *pc = g_new0(Vmms__Hv__PartitionCounters, 1);

                g_ptr_array_add(arena, pc);
                vmms__hv__partition_counters__init(pc);
                pc->partition_id = p->id;
                pc->name = p->name;
                pc->assigned_bytes = p->assigned_bytes;
                pc->maximum_bytes = p->maximum_bytes;
                pc->resident_bytes = hv_partition_resident_bytes(p);
                g_mutex_lock(&p->console_lock);
                pc->console_dropped_bytes = p->console_dropped_bytes;
                g_mutex_unlock(&p->console_lock);
                pc->processor = g_new0(Vmms__Hv__ProcessorSettings, 1);
                g_ptr_array_add(arena, pc->processor);
                vmms__hv__processor_settings__init(pc->processor);
                pc->processor->reserve = p->processor.reserve_pct; /* main thread is its only writer */
                pc->processor->maximum = p->processor.maximum_pct;
                pc->processor->relative_weight = p->processor.relative_weight;
                pc->maximum_vp_count = p->max_vp_count;
                pc->visible_bytes = atomic_load(&p->visible_bytes);
                pc->ballooned_bytes = p->ballooned_pages * HV_PAGE_SIZE;
                pc->hot_added_bytes = p->hot_added_bytes;
                pc->refused_pages = p->refused_pages;
                pc->retouched_pages = p->retouched_pages;
                pc->concurrent_vps = !p->ganged;
                pc->cpu_compatibility = p->cpuid_normalized;
                pc->cpuid_normalized = atomic_load(&p->cpuid_normalized_answers);
                g_mutex_lock(&p->mailbox_lock);
                pc->guest_messages = p->guest_messages;
                pc->guest_messages_refused = p->guest_messages_refused;
                pc->guest_signals = p->guest_signals;
                pc->guest_signals_coalesced = p->guest_signals_coalesced;
                g_mutex_unlock(&p->mailbox_lock);
                pc->n_vps = p->vp_count;
                pc->vps = g_new0(Vmms__Hv__VpCounters *, pc->n_vps);
                g_ptr_array_add(arena, pc->vps);
                for (uint32_t v = 0; v < pc->n_vps; v++) {
                        Vmms__Hv__VpCounters *vc = g_new0(Vmms__Hv__VpCounters, 1);
                        HvVpSample sample;

                        g_ptr_array_add(arena, vc);
                        vmms__hv__vp_counters__init(vc);
                        hv_sched_sample_vp(hv->sched, p->vps[v], &sample);
                        vc->index = v;
                        vc->state = (char *)hv_vp_state_to_string(sample.state);
                        vc->run_ns = sample.counters.run_ns;
                        vc->guest_ns = sample.counters.guest_ns;
                        vc->dispatches = sample.counters.dispatches;
                        vc->wait_ns = sample.counters.wait_ns;
                        vc->signals = sample.counters.signals;
                        vc->preferred_lp_dispatches = sample.counters.preferred_lp_dispatches;
                        vc->home_node_dispatches = sample.counters.home_node_dispatches;
                        vc->home_node = sample.home_node;
                        vc->wake_dispatches = sample.counters.wake_dispatches;
                        vc->wake_wait_ns = sample.counters.wake_wait_ns;
                        vc->wake_wait_max_ns = sample.counters.wake_wait_max_ns;
                        vc->yields = sample.counters.yields;
                        vc->share_ppm = sample.policy.share_ppm;
                        vc->lag_ns = sample.policy.lag_ns;
                        vc->cap_throttles = sample.policy.cap_throttles;
                        vc->boosts = sample.policy.boosts;
                        vc->cap_window_max_ns = sample.policy.cap_window_max_ns;
                        vc->hypercalls = atomic_load(&p->vps[v]->hypercalls);
                        vc->invalid_hypercalls = atomic_load(&p->vps[v]->invalid_hypercalls);
                        pc->vps[v] = vc;
                }
                counters->partitions[i] = pc;
        }
        return counters;
}

static void handle_request(HvConnection *c, const uint8_t *data, size_t len)
{
        Vmms__Hv__Request *req = vmms__hv__request__unpack(NULL, len, data);
        Vmms__Hv__Reply reply = VMMS__HV__REPLY__INIT;
        Vmms__Hv__PartitionCreated created = VMMS__HV__PARTITION_CREATED__INIT;
        Vmms__Hv__VpAdded added = VMMS__HV__VP_ADDED__INIT;
        Vmms__Hv__VpState vp_state = VMMS__HV__VP_STATE__INIT;
        Vmms__Hv__PartitionState partition_state = VMMS__HV__PARTITION_STATE__INIT;
        Vmms__Hv__DirtyLog dirty_log = VMMS__HV__DIRTY_LOG__INIT;
        Vmms__Hv__WatchdogState watchdog_state = VMMS__HV__WATCHDOG_STATE__INIT;
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        int pass_fd = -1, r;

        if (!req) {
                reply_error(&reply, -EBADMSG, g_strdup("malformed request: not a vmms.hv.Request message"));
        } else {
                reply.id = req->id;
                switch (req->body_case) {
                case VMMS__HV__REQUEST__BODY_PARTITION_CREATE:
                        handle_partition_create(c, req->partition_create, &reply, &created, &pass_fd);
                        break;
                case VMMS__HV__REQUEST__BODY_VP_START:
                        handle_vp_start(c, req->vp_start, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_DESTROY:
                        handle_partition_destroy(c, req->partition_destroy, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_SIGNAL:
                        handle_partition_signal(c, req->partition_signal, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_PAUSE:
                        handle_partition_pause(c, req->partition_pause, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_SET_PROCESSOR:
                        handle_partition_set_processor(c, req->partition_set_processor, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_VP_ADD:
                        handle_vp_add(c, req->vp_add, &reply, &added);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_HOT_ADD:
                        handle_partition_hot_add(c, req->partition_hot_add, &reply, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_BALLOON:
                        handle_partition_pages(c, req->partition_balloon->partition_id,
                                               req->partition_balloon->pfns, req->partition_balloon->n_pfns,
                                               true, &reply, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_UNBALLOON:
                        handle_partition_pages(c, req->partition_unballoon->partition_id,
                                               req->partition_unballoon->pfns,
                                               req->partition_unballoon->n_pfns, false, &reply, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_MEMORY_GET:
                        handle_partition_memory_get(c, req->partition_memory_get, &reply, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_VP_STATE_GET:
                        handle_vp_state_get(c, req->vp_state_get, &reply, &vp_state, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_VP_STATE_SET:
                        handle_vp_state_set(c, req->vp_state_set, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_STATE_GET:
                        handle_partition_state_get(c, req->partition_state_get, &reply, &partition_state);
                        break;
                case VMMS__HV__REQUEST__BODY_PARTITION_STATE_SET:
                        handle_partition_state_set(c, req->partition_state_set, &reply);
                        break;
                case VMMS__HV__REQUEST__BODY_DIRTY_LOG_START:
                        handle_dirty_log(c, req->body_case, req->dirty_log_start->partition_id, 0, &reply,
                                         &dirty_log, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_DIRTY_LOG_HARVEST:
                        handle_dirty_log(c, req->body_case, req->dirty_log_harvest->partition_id,
                                         req->dirty_log_harvest->first_page, &reply, &dirty_log, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_DIRTY_LOG_STOP:
                        handle_dirty_log(c, req->body_case, req->dirty_log_stop->partition_id, 0, &reply,
                                         &dirty_log, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_COMPATIBILITY_VECTOR_GET:
                        handle_compatibility_vector_get(c, req->compatibility_vector_get, &reply, arena);
                        break;
                case VMMS__HV__REQUEST__BODY_WATCHDOG_ARM:
                        handle_watchdog_arm(c, req->watchdog_arm, &reply, &watchdog_state);
                        break;
                case VMMS__HV__REQUEST__BODY_COUNTERS_GET:
                        reconcile_all(c->server);
                        reply.body_case = VMMS__HV__REPLY__BODY_COUNTERS;
                        reply.counters = build_counters(c->server->hv, arena);
                        break;
                default:
                        reply_error(&reply, -EOPNOTSUPP, g_strdup("request has no known body"));
                        break;
                }
        }
        if (reply.error < 0) /* reply_error's message is ours; the default is protobuf-c's constant "" */
                g_ptr_array_add(arena, reply.error_message);
        r = send_reply(c, &reply, pass_fd);
        if (r < 0)
                g_warning("cannot send a reply: %s", g_strerror(-r));
        if (req)
                vmms__hv__request__free_unpacked(req, NULL);
}

/* A SOCK_SEQPACKET read of 0 bytes is either an empty packet or the end: only a peer
 * that is gone leaves the socket hung up. */
static bool peer_hung_up(int fd)
{
        struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};

        if (poll(&pfd, 1, 0) < 0)
                return true;
        return pfd.revents & (POLLRDHUP | POLLHUP | POLLERR);
}

static gboolean on_connection_readable(gint fd, GIOCondition condition, gpointer userdata)
{
        HvConnection *c = userdata;

        (void)fd;
        (void)condition;
        for (;;) {
                size_t len;
                int r = hv_wire_recv(c->fd, c->buf, HV_WIRE_MESSAGE_MAX, &len, NULL);

                if (r == -EAGAIN)
                        return G_SOURCE_CONTINUE;
                if (r == -EMSGSIZE || (r == -ECONNRESET && !peer_hung_up(c->fd))) {
                        Vmms__Hv__Reply reply = VMMS__HV__REPLY__INIT;
                        g_autofree char *message =
                                g_strdup(r == -EMSGSIZE ? "request larger than the 1 MiB limit"
                                                        : "empty request: a vmms.hv.Request needs a body");

                        reply_error(&reply, r == -EMSGSIZE ? -EMSGSIZE : -EBADMSG, message);
                        send_reply(c, &reply, -1);
                        continue;
                }
                if (r < 0) {
                        c->source = 0; /* removed by returning G_SOURCE_REMOVE */
                        connection_close(c);
                        return G_SOURCE_REMOVE;
                }
                handle_request(c, c->buf, len);
        }
}

static gboolean on_accept(gint fd, GIOCondition condition, gpointer userdata)
{
        HvServer *server = userdata;
        HvConnection *c;
        int conn;

        (void)condition;
        conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn < 0)
                return G_SOURCE_CONTINUE;
        c = g_new0(HvConnection, 1);
        c->server = server;
        c->fd = conn;
        c->buf = g_malloc(HV_WIRE_MESSAGE_MAX);
        c->partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
        c->quota.memory_limit_bytes = server->limits.memory_bytes;
        c->source = g_unix_fd_add(conn, G_IO_IN | G_IO_HUP | G_IO_ERR, on_connection_readable, c);
        g_hash_table_add(server->connections, c);
        return G_SOURCE_CONTINUE;
}

static int on_hv_event(HvPartition *p, const HvEvent *event, void *userdata)
{
        HvConnection *c = p->owner;
        Vmms__Hv__Message msg = VMMS__HV__MESSAGE__INIT;
        Vmms__Hv__Event ev = VMMS__HV__EVENT__INIT;
        Vmms__Hv__ConsoleOutput console = VMMS__HV__CONSOLE_OUTPUT__INIT;
        Vmms__Hv__VpStopped stopped = VMMS__HV__VP_STOPPED__INIT;
        Vmms__Hv__GuestMessage message = VMMS__HV__GUEST_MESSAGE__INIT;
        Vmms__Hv__GuestSignal signal = VMMS__HV__GUEST_SIGNAL__INIT;
        int r;

        (void)userdata;
        if (!c)
                return 0;
        msg.body_case = VMMS__HV__MESSAGE__BODY_EVENT;
        msg.event = &ev;
        ev.partition_id = p->id;
        switch (event->kind) {
        case HV_EVENT_CONSOLE: {
                gsize size;
                const uint8_t *data = g_bytes_get_data(event->console, &size);

                ev.body_case = VMMS__HV__EVENT__BODY_CONSOLE;
                ev.console = &console;
                console.data.data = (uint8_t *)data;
                console.data.len = size;
                break;
        }
        case HV_EVENT_VP_STOPPED:
                ev.body_case = VMMS__HV__EVENT__BODY_VP_STOPPED;
                ev.vp_stopped = &stopped;
                stopped.vp_index = event->vp_index;
                stopped.reason = (char *)(event->reason ? event->reason : "");
                g_message("partition %" G_GUINT64_FORMAT " (%s): vp %u stopped: %s", p->id, p->name,
                          event->vp_index, stopped.reason);
                break;
        case HV_EVENT_GUEST_MESSAGE:
                ev.body_case = VMMS__HV__EVENT__BODY_GUEST_MESSAGE;
                ev.guest_message = &message;
                message.data.data = (uint8_t *)event->note->data;
                message.data.len = event->note->len;
                break;
        case HV_EVENT_GUEST_SIGNAL:
                ev.body_case = VMMS__HV__EVENT__BODY_GUEST_SIGNAL;
                ev.guest_signal = &signal;
                signal.connection_id = event->note->connection_id;
                break;
        }
        r = hv_wire_send(c->fd, &msg.base, -1);
        if (r < 0 && event->kind == HV_EVENT_CONSOLE) {
                g_mutex_lock(&p->console_lock);
                p->console_dropped_bytes += console.data.len;
                g_mutex_unlock(&p->console_lock);
        }
        return r == -EAGAIN ? r
                            : 0; /* another failure: the connection is closing, and the partition with it */
}

int hv_server_new(Hv *hv, const char *socket_path, const HvConnectionLimits *limits, HvServer **ret)
{
        g_autoptr(HvServer) server = g_new0(HvServer, 1);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        g_autofree char *temp_path = NULL;
        int sndbuf = 4 << 20;

        server->hv = hv;
        server->limits =
                limits ? *limits
                       : (HvConnectionLimits){
                                 .partitions = HV_CONNECTION_PARTITIONS_DEFAULT,
                                 .vps = HV_CONNECTION_VPS_DEFAULT,
                                 .memory_bytes = hv->pool.total_bytes * HV_CONNECTION_MEMORY_DEFAULT_PCT /
                                                 100 / HV_PAGE_SIZE * HV_PAGE_SIZE,
                         };
        server->listen_fd = -1;
        server->path = g_strdup(socket_path);
        server->connections = g_hash_table_new(NULL, NULL);
        /* Bound and listening under a temporary name, then renamed into place: whoever sees the
         * socket (vmmsd, vmwp, the tests wait for the file) can connect at once; a connect between
         * bind() and listen() on the real name would be refused. */
        temp_path = g_strconcat(socket_path, ".new", NULL);
        if (strlen(temp_path) >= sizeof(addr.sun_path))
                return -ENAMETOOLONG;
        strcpy(addr.sun_path, temp_path);
        server->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (server->listen_fd < 0)
                return -errno;
        (void)setsockopt(server->listen_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        (void)unlink(temp_path);
        if (bind(server->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
                return -errno;
        if (chmod(temp_path, 0600) < 0 || listen(server->listen_fd, 64) < 0 ||
            rename(temp_path, socket_path) < 0) {
                int r = -errno;

                (void)unlink(temp_path);
                return r;
        }
        server->listen_source = g_unix_fd_add(server->listen_fd, G_IO_IN, on_accept, server);
        server->reconcile_source = g_timeout_add(HV_MEMORY_RECONCILE_MS, on_reconcile_timer, server);
        hv->on_event = on_hv_event;
        hv->on_event_userdata = server;
        *ret = g_steal_pointer(&server);
        return 0;
}

void hv_server_free(HvServer *server)
{
        if (!server)
                return;
        if (server->connections) {
                g_autoptr(GList) conns = g_hash_table_get_keys(server->connections);

                for (GList *l = conns; l; l = l->next)
                        connection_free(l->data);
                g_hash_table_unref(server->connections);
        }
        if (server->hv && server->hv->on_event == on_hv_event)
                server->hv->on_event = NULL;
        if (server->listen_source)
                g_source_remove(server->listen_source);
        if (server->watchdog_source)
                g_source_remove(server->watchdog_source);
        if (server->reconcile_source)
                g_source_remove(server->reconcile_source);
        if (server->listen_fd >= 0) {
                close(server->listen_fd);
                unlink(server->path);
        }
        g_free(server->path);
        g_free(server);
}
