/* Partitions: guest RAM as a sparse memfd shared with the worker, and their VPs. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv.h"
#include "vmms-limits.h"

G_STATIC_ASSERT(VMMS_PROCESSOR_COUNT_MAX == HV_MAX_VPS_PER_PARTITION);

static void vp_free(HvVp *vp, const HvEngineOps *engine)
{
        if (!vp)
                return;
        engine->vp_free(vp->engine);
        g_free(vp);
}

/* hv.proto's scalars have no presence, so 0 is "unset": Maximum and RelativeWeight take
 * their defaults (proto/vmms-limits.h says why 0 is never a cap). Everything else is checked
 * against the table vmctl and vmmsd use, naming the wire field; a reservation above the
 * cap could never be honoured. */
int hv_processor_settings_from_wire(uint32_t reserve_pct, uint32_t maximum_pct, uint32_t relative_weight,
                                    HvProcessorSettings *ret, char **ret_error)
{
        HvProcessorSettings settings = {
                .reserve_pct = reserve_pct,
                .maximum_pct = maximum_pct ? maximum_pct : VMMS_PROCESSOR_MAXIMUM_DEFAULT,
                .relative_weight = relative_weight ? relative_weight : VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT,
        };
        const struct {
                VmmsLimitId limit;
                uint32_t value;
        } checks[] = {
                {VMMS_LIMIT_PROCESSOR_RESERVE, settings.reserve_pct},
                {VMMS_LIMIT_PROCESSOR_MAXIMUM, settings.maximum_pct},
                {VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT, settings.relative_weight},
        };
        char message[128];

        for (size_t i = 0; i < G_N_ELEMENTS(checks); i++)
                if (!vmms_limit_check(checks[i].limit, vmms_limit(checks[i].limit)->field, checks[i].value,
                                      message, sizeof(message))) {
                        *ret_error = g_strdup(message);
                        return -EINVAL;
                }
        if (settings.reserve_pct > settings.maximum_pct) {
                *ret_error = g_strdup_printf("reserve %u exceeds maximum %u: a VP cannot be guaranteed more "
                                             "than its cap",
                                             settings.reserve_pct, settings.maximum_pct);
                return -EINVAL;
        }
        *ret = settings;
        return 0;
}

/* Builds the VP that would be number p->vp_count, with its engine, without publishing
 * it in p->vps: the caller does that once the scheduler has it. */
int hv_partition_vp_new(HvPartition *p, HvVp **ret)
{
        uint32_t index = p->vp_count;
        HvVp *vp;
        int r;

        if (index >= p->max_vp_count)
                return -ENOSPC;
        vp = g_new0(HvVp, 1);
        vp->partition = p;
        vp->index = index;
        r = p->hv->engine->vp_create(vp, &vp->engine);
        if (r < 0) {
                g_free(vp);
                return r;
        }
        *ret = vp;
        return 0;
}

/* Builds a partition with its RAM and VPs; the caller charges the pool and adds the
 * VPs to the scheduler. vps[] is sized for max_vp_count so hot-add never moves it. */
int hv_partition_new(Hv *hv, const char *name, uint32_t vp_count, uint32_t max_vp_count,
                     uint64_t startup_bytes, uint64_t maximum_bytes, HvPartition **ret)
{
        g_autoptr(HvPartition) p = NULL;
        g_autofree char *memfd_name = NULL;
        int r;

        g_assert(vp_count <= max_vp_count);
        p = g_new0(HvPartition, 1);
        p->hv = hv;
        p->ram_fd = -1;
        p->name = g_strdup(name);
        p->maximum_bytes = maximum_bytes;
        p->visible_bytes = startup_bytes;
        p->max_vp_count = max_vp_count;
        p->vps = g_new0(HvVp *, max_vp_count);
        p->processor = HV_PROCESSOR_DEFAULTS;
        p->ganged = true;
        p->home_node = -1;
        g_mutex_init(&p->console_lock);
        p->console = g_byte_array_new();
        g_mutex_init(&p->mailbox_lock);
        g_queue_init(&p->mailbox);
        g_mutex_init(&p->dirty_lock);
        g_cond_init(&p->dirty_cond);

        memfd_name = g_strdup_printf("vmms-ram-%s", name);
        p->ram_fd = memfd_create(memfd_name, MFD_CLOEXEC);
        if (p->ram_fd < 0)
                return -errno;
        if (ftruncate(p->ram_fd, (off_t)maximum_bytes) < 0)
                return -errno;
        p->ram = mmap(NULL, maximum_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, p->ram_fd, 0);
        if (p->ram == MAP_FAILED) {
                p->ram = NULL;
                return -errno;
        }
        for (uint32_t i = 0; i < vp_count; i++) {
                HvVp *vp;

                r = hv_partition_vp_new(p, &vp);
                if (r < 0)
                        return r;
                p->vps[i] = vp;
                p->vp_count = i + 1;
        }
        *ret = g_steal_pointer(&p);
        return 0;
}

/* The VPs must be out of the scheduler (hv_sched_partition_stop). Guest RAM is punched
 * out before it is closed, so host memory returns even while a worker that has not
 * exited yet still holds the memfd. */
void hv_partition_free(HvPartition *p)
{
        if (!p)
                return;
        hv_dirty_free(p);
        for (uint32_t i = 0; p->vps && i < p->vp_count; i++)
                vp_free(p->vps[i], p->hv->engine);
        g_free(p->vps);
        if (p->ram)
                munmap(p->ram, p->maximum_bytes);
        if (p->ram_fd >= 0) {
                (void)fallocate(p->ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                                (off_t)p->maximum_bytes);
                close(p->ram_fd);
        }
        if (p->console)
                g_byte_array_unref(p->console);
        g_mutex_clear(&p->console_lock);
        g_queue_clear_full(&p->mailbox, g_free);
        g_mutex_clear(&p->mailbox_lock);
        g_free(p->ballooned);
        g_free(p->name);
        g_free(p);
}

int hv_partition_vp_start(HvPartition *p, uint32_t vp_index, const HvVpRegs *regs)
{
        if (vp_index >= p->vp_count)
                return -EINVAL;
        if (!hv_partition_range_valid(p, regs->rip, 1) || regs->rsp < 8 ||
            !hv_partition_range_valid(p, regs->rsp - 8, 8))
                return -ERANGE;
        return hv_sched_vp_start(p->hv->sched, p->vps[vp_index], regs);
}

/* Host memory really backing guest RAM, measured, never estimated. */
uint64_t hv_partition_reference_time_ns(const HvPartition *p)
{
        __int128 t = (__int128)hv_reference_time_ns(p->hv) + atomic_load(&p->reference_offset_ns);

        return t > 0 ? (uint64_t)t : 0;
}

/* A deadline already past stays a deadline (1), one past the end of time is none (0). */
uint64_t hv_partition_deadline_to_host(const HvPartition *p, uint64_t guest_ns)
{
        __int128 t = (__int128)guest_ns - atomic_load(&p->reference_offset_ns) + p->hv->clock_base_ns;

        if (guest_ns == 0 || t >= (__int128)UINT64_MAX)
                return 0;
        return t > 0 ? (uint64_t)t : 1;
}

uint64_t hv_partition_deadline_to_guest(const HvPartition *p, uint64_t host_ns)
{
        __int128 t = (__int128)host_ns - p->hv->clock_base_ns + atomic_load(&p->reference_offset_ns);

        if (host_ns == 0 || t >= (__int128)UINT64_MAX)
                return 0;
        return t > 0 ? (uint64_t)t : 1;
}

uint64_t hv_partition_resident_bytes(const HvPartition *p)
{
        struct stat st;

        if (fstat(p->ram_fd, &st) < 0)
                return 0;
        return (uint64_t)st.st_blocks * 512u;
}

/* Whether [gpa, gpa + len) lies inside the RAM the guest may use now. */
bool hv_partition_range_valid(const HvPartition *p, uint64_t gpa, uint64_t len)
{
        uint64_t visible = atomic_load(&p->visible_bytes);

        return gpa < visible && len <= visible - gpa;
}

/* On an LP thread: buffer console bytes and have the main thread send them. Bytes
 * beyond the buffer are dropped and counted; a slow worker never stalls an LP. */
void hv_partition_console_write(HvPartition *p, const uint8_t *data, size_t len)
{
        bool queue = false;

        g_mutex_lock(&p->console_lock);
        if (p->console->len + len > HV_CONSOLE_BUFFER_MAX) {
                size_t room = HV_CONSOLE_BUFFER_MAX - p->console->len;

                p->console_dropped_bytes += len - room;
                len = room;
        }
        g_byte_array_append(p->console, data, (guint)len);
        if (!p->console_flush_queued && p->console->len > 0) {
                p->console_flush_queued = true;
                queue = true;
        }
        g_mutex_unlock(&p->console_lock);
        if (queue)
                hv_queue_console_flush(p);
}

GBytes *hv_partition_console_take(HvPartition *p)
{
        GBytes *bytes;

        g_mutex_lock(&p->console_lock);
        bytes = g_byte_array_free_to_bytes(p->console);
        p->console = g_byte_array_new();
        p->console_flush_queued = false;
        g_mutex_unlock(&p->console_lock);
        return bytes;
}

static void mailbox_assert_locked(HvPartition *p)
{
        /* GMutex cannot say who holds it; a failed trylock proves someone does. */
        g_assert(!g_mutex_trylock(&p->mailbox_lock) || (g_mutex_unlock(&p->mailbox_lock), false));
}

/* Queues a flush unless one is queued. */
static bool mailbox_want_flush_locked(HvPartition *p)
{
        mailbox_assert_locked(p);
        if (p->mailbox_flush_queued)
                return false;
        p->mailbox_flush_queued = true;
        return true;
}

int hv_partition_post_message(HvPartition *p, const uint8_t *data, uint32_t len)
{
        HvGuestNote *note;
        bool flush;

        g_mutex_lock(&p->mailbox_lock);
        if (p->mailbox_messages >= HV_MAILBOX_MESSAGES_MAX) {
                p->guest_messages_refused++;
                g_mutex_unlock(&p->mailbox_lock);
                return -HV_STATUS_INSUFFICIENT_BUFFERS;
        }
        note = g_malloc(sizeof(*note) + len);
        note->kind = HV_GUEST_NOTE_MESSAGE;
        note->connection_id = 0;
        note->len = len;
        memcpy(note->data, data, len);
        g_queue_push_tail(&p->mailbox, note);
        p->mailbox_messages++;
        p->guest_messages++;
        flush = mailbox_want_flush_locked(p);
        g_mutex_unlock(&p->mailbox_lock);
        if (flush)
                hv_queue_mailbox_flush(p);
        return 0;
}

static bool signal_pending_locked(HvPartition *p, uint32_t connection_id)
{
        mailbox_assert_locked(p);
        for (GList *l = p->mailbox.head; l; l = l->next) {
                const HvGuestNote *note = l->data;

                if (note->kind == HV_GUEST_NOTE_SIGNAL && note->connection_id == connection_id)
                        return true;
        }
        return false;
}

/* A signal only says "look at this channel", so one pending per connection id is as
 * good as many; the queue stays bounded however often the guest signals. */
int hv_partition_signal_event(HvPartition *p, uint32_t connection_id)
{
        HvGuestNote *note;
        bool flush;

        g_mutex_lock(&p->mailbox_lock);
        if (signal_pending_locked(p, connection_id)) {
                p->guest_signals++;
                p->guest_signals_coalesced++;
                g_mutex_unlock(&p->mailbox_lock);
                return 0;
        }
        if (p->mailbox_signals >= HV_MAILBOX_SIGNALS_MAX) {
                g_mutex_unlock(&p->mailbox_lock);
                return -HV_STATUS_INSUFFICIENT_BUFFERS;
        }
        note = g_new0(HvGuestNote, 1);
        note->kind = HV_GUEST_NOTE_SIGNAL;
        note->connection_id = connection_id;
        g_queue_push_tail(&p->mailbox, note);
        p->mailbox_signals++;
        p->guest_signals++;
        flush = mailbox_want_flush_locked(p);
        g_mutex_unlock(&p->mailbox_lock);
        if (flush)
                hv_queue_mailbox_flush(p);
        return 0;
}

/* A note is out of the queue while it is being sent, so a signal arriving meanwhile is
 * queued anew rather than merged into one the worker may already have acted on. */
HvGuestNote *hv_partition_mailbox_pop(HvPartition *p)
{
        HvGuestNote *note;

        g_mutex_lock(&p->mailbox_lock);
        note = g_queue_pop_head(&p->mailbox);
        if (!note)
                p->mailbox_flush_queued = false;
        else if (note->kind == HV_GUEST_NOTE_MESSAGE)
                p->mailbox_messages--;
        else
                p->mailbox_signals--;
        g_mutex_unlock(&p->mailbox_lock);
        return note;
}

void hv_partition_mailbox_push_back(HvPartition *p, HvGuestNote *note)
{
        g_mutex_lock(&p->mailbox_lock);
        if (note->kind == HV_GUEST_NOTE_SIGNAL && signal_pending_locked(p, note->connection_id)) {
                g_free(note); /* signalled again meanwhile: the queued one covers both */
        } else {
                g_queue_push_head(&p->mailbox, note);
                if (note->kind == HV_GUEST_NOTE_MESSAGE)
                        p->mailbox_messages++;
                else
                        p->mailbox_signals++;
        }
        g_mutex_unlock(&p->mailbox_lock);
}
