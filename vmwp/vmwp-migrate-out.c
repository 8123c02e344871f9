/* Live migration's sender (pre-copy), the source worker's side.
 *
 * Round 0 sends every page of visible RAM that is not a hole (all-zero pages as zero
 * records: the destination's fresh memfd reads zeros already, so a hole needs nothing).
 * Each later round harvests the pages written since the last harvest (hvd's dirty log
 * for the guest's stores, the worker's own bitmap for what VMBus wrote) and sends them:
 * data, zero, or, where the page is a hole now (the balloon punched it), a discard
 * record. It stops iterating when what is left fits the downtime target at the
 * bandwidth measured over the last round (QEMU's rule, threshold = bandwidth x downtime)
 * and the rounds stopped paying (the set did not halve, or it is down to what a few
 * milliseconds hold: a guest that dirties a tenth of the link's speed would otherwise
 * stop at the whole target and be paused for it), or after max_rounds. Auto-converge
 * is judged once a second, not once a round (a round of a big guest lasts seconds):
 * the sender harvests every second while it sends (into `next`, the round after's
 * set), and a second in which the guest dirtied more than half of what was sent counts
 * against convergence; two such lower the VPs' cap by 20 %, then each further two by
 * 10 % more (QEMU's CPU_THROTTLE_INITIAL/INCREMENT and its per-second check), down to
 * 1 % of what the VM had; the cap comes back when the migration ends. Then the VPs
 * pause, the last harvest is complete (nothing runs) and is added to the set that ended
 * the iteration (never sent: dropping it lost pages, which memsoak caught), and those
 * pages, the VP, device, Dynamic Memory and reference-clock state, the paging disk and
 * END follow.
 *
 * Threads: the sender thread reads guest RAM and blocks only on the stream fd. Every
 * hvd call, every device and every change to the worker happens on the main thread:
 * the sender posts a request there and waits for it (main_call). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-client.h"
#include "vmwp-migrate.h"

#define PAGE HV_PAGE_SIZE
#define RUN_MAX_PAGES 256u /* 1 MiB of data per run: a MEMORY section holds a few */
#define THROTTLE_INITIAL 20u
#define THROTTLE_INCREMENT 10u
#define THROTTLE_MAX 99u
#define TICK_US 1000000u /* auto-converge's period */
/* Rounds go on while they halve what is left, down to what this many ms of the link
 * carry: below that, the pause's fixed costs dominate anyway. */
#define CONVERGED_MS 3u

typedef enum MainCallKind {
        CALL_HARVEST,
        CALL_THROTTLE,
        CALL_FINAL,
        CALL_END,
} MainCallKind;

struct VmwpMigration {
        VmwpSaveParts parts;
        int fd;
        VmwpMigrateOptions opt;
        const VmwpMigrateWorkerOps *ops;
        void *userdata;
        GThread *thread;
        atomic_bool cancel;
        atomic_bool thread_done;
        bool freeing;
        int64_t t0_us;

        /* A request to the main thread and its answer. */
        GMutex lock;
        GCond cond;
        MainCallKind call;
        uint32_t call_arg;
        bool call_done;
        int call_result;
        char *call_error;

        uint64_t bitmap_pages; /* maximum RAM's pages: both bitmaps' size */
        uint64_t visible_at_start;
        uint64_t *harvest;        /* the set the sender sends now */
        uint64_t *next;           /* main thread ORs each harvest into it: the next round's set */
        uint64_t harvested_pages; /* what the last harvest found (pages, with repeats) */
        uint64_t *scratch;        /* hvd's part of a harvest */
        uint64_t *own;            /* the worker's own writes (VmwpGuestRam.dirty) */
        GByteArray *state;        /* the final device/VP sections, framed */
        bool vm_was_paused;
        bool paused_by_us;
        bool tracking;
        uint32_t throttle;
        uint64_t paused_mono_us;

        /* Auto-converge's once-a-second judgement (the sender thread's). */
        bool ticking; /* pre-copy: the VPs run */
        uint64_t tick_us, tick_bytes, tick_dirty;
        uint32_t high_dirty;

        /* The outcome, for CALL_END. */
        bool ok;
        char *reason;
        VmwpMigrateDone done;

        /* Progress, written by the sender, read by the main thread. */
        _Atomic uint32_t round;
        _Atomic uint64_t bytes_sent, remaining, dirty_rate, bandwidth, data_pages, zero_pages,
                discarded_pages;
        _Atomic uint32_t throttle_pct;
        atomic_bool paused;
};

/* ---- The main thread's side ---- */

/* What was written since the last harvest, hvd's log and the worker's own marks, ORed
 * into m->next; m->harvested_pages counts it. */
static int main_harvest(VmwpMigration *m, char **ret_error)
{
        uint64_t pages = m->parts.guest_ram->visible_bytes / PAGE, dirty, found = 0;
        int r = hv_client_dirty_log_harvest(m->parts.hv, m->parts.partition_id, m->scratch, pages, &dirty);

        if (r < 0) {
                *ret_error = g_strdup_printf("hvd refused the dirty-page harvest: %s",
                                             hv_client_last_error(m->parts.hv));
                return r;
        }
        for (uint64_t i = 0; i < (m->bitmap_pages + 63) / 64; i++) {
                uint64_t bits = m->scratch[i] | __atomic_exchange_n(&m->own[i], 0, __ATOMIC_ACQ_REL);

                found += (uint64_t)__builtin_popcountll(bits);
                m->next[i] |= bits;
        }
        m->harvested_pages = found;
        return 0;
}

static int state_append(void *ctx, const void *data, size_t len)
{
        g_byte_array_append(ctx, data, (guint)len);
        return 0;
}

/* Pauses the VPs, drains what the guest said before, takes the last (complete) harvest
 * and the device and VP state, framed as the stream's sections. */
static int main_final(VmwpMigration *m, char **ret_error)
{
        VmwpSectionWriter w;
        int r;

        if (!m->vm_was_paused) {
                r = m->ops->pause(m->userdata, true, ret_error);
                if (r < 0)
                        return r;
                m->paused_by_us = true;
        }
        m->paused_mono_us = (uint64_t)g_get_monotonic_time();
        m->done.paused_unix_ns = (uint64_t)g_get_real_time() * 1000;
        (void)hv_client_dispatch(m->parts.hv);
        for (int i = 0; i < 64 && vmwp_vmbus_process(m->parts.vmbus); i++)
                ;
        r = main_harvest(m, ret_error);
        if (r < 0)
                return r;
        if (m->parts.guest_ram->visible_bytes != m->visible_at_start) {
                *ret_error = g_strdup_printf("the VM's memory grew from %" G_GUINT64_FORMAT
                                             " to %" G_GUINT64_FORMAT " bytes during the migration",
                                             m->visible_at_start, m->parts.guest_ram->visible_bytes);
                return -EBUSY;
        }
        vmwp_section_writer_init_stream(&w, state_append, m->state);
        r = vmwp_save_write_device_state(&w, &m->parts, ret_error);
        vmwp_section_writer_clear(&w);
        return r;
}

/* Tracking off, the VM's own cap back; and on failure the VPs run again. */
static void main_cleanup(VmwpMigration *m, bool resume)
{
        g_autofree char *ignored = NULL, *ignored2 = NULL;

        __atomic_store_n(&m->parts.guest_ram->dirty, NULL, __ATOMIC_RELEASE);
        if (m->tracking)
                (void)hv_client_dirty_log_stop(m->parts.hv, m->parts.partition_id);
        m->tracking = false;
        if (m->throttle)
                (void)m->ops->throttle(m->userdata, 0, &ignored);
        m->throttle = 0;
        if (resume && m->paused_by_us)
                (void)m->ops->pause(m->userdata, false, &ignored2);
        if (resume)
                m->paused_by_us = false;
}

static gboolean on_main_call(gpointer data)
{
        VmwpMigration *m = data;
        g_autofree char *error = NULL;
        int r = 0;

        switch (m->call) {
        case CALL_HARVEST:
                r = main_harvest(m, &error);
                break;
        case CALL_THROTTLE:
                r = m->ops->throttle(m->userdata, m->call_arg, &error);
                if (r >= 0)
                        m->throttle = m->call_arg;
                break;
        case CALL_FINAL:
                r = main_final(m, &error);
                break;
        case CALL_END:
                main_cleanup(m, !m->ok);
                if (!m->freeing)
                        m->ops->ended(m->userdata, m->ok, !m->ok && atomic_load(&m->cancel), m->reason,
                                      &m->done);
                break;
        }
        g_mutex_lock(&m->lock);
        m->call_result = r;
        m->call_error = g_steal_pointer(&error);
        m->call_done = true;
        g_cond_signal(&m->cond);
        g_mutex_unlock(&m->lock);
        return G_SOURCE_REMOVE;
}

/* On the sender thread: runs `call` on the main thread and waits for it. */
static int main_call(VmwpMigration *m, MainCallKind call, uint32_t arg, char **ret_error)
{
        GSource *source = g_idle_source_new();
        int r;

        g_mutex_lock(&m->lock);
        m->call = call;
        m->call_arg = arg;
        m->call_done = false;
        g_mutex_unlock(&m->lock);
        g_source_set_callback(source, on_main_call, m, NULL);
        g_source_attach(source, NULL);
        g_source_unref(source);
        g_mutex_lock(&m->lock);
        while (!m->call_done)
                g_cond_wait(&m->cond, &m->lock);
        r = m->call_result;
        if (ret_error)
                *ret_error = g_steal_pointer(&m->call_error);
        g_clear_pointer(&m->call_error, g_free);
        g_mutex_unlock(&m->lock);
        return r;
}

/* ---- The sender thread ---- */

static uint64_t now_us(void)
{
        return (uint64_t)g_get_monotonic_time();
}

/* Writes all of it to the stream: non-blocking writes, waiting for room in slices so a
 * cancel is seen, and held to the bandwidth limit. */
static int stream_write(void *ctx, const void *data, size_t len)
{
        VmwpMigration *m = ctx;
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n;

                if (atomic_load(&m->cancel))
                        return -ECANCELED;
                n = write(m->fd, p, MIN(len, (size_t)1 << 20));
                if (n > 0) {
                        uint64_t sent = atomic_fetch_add(&m->bytes_sent, (uint64_t)n) + (uint64_t)n;

                        p += n;
                        len -= (size_t)n;
                        if (m->opt.max_bandwidth_bytes_per_s) {
                                uint64_t due = (uint64_t)m->t0_us +
                                               sent * 1000000 / m->opt.max_bandwidth_bytes_per_s;
                                uint64_t now = now_us();

                                if (due > now)
                                        g_usleep((gulong)MIN(due - now, (uint64_t)100000));
                        }
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        struct pollfd pfd = {.fd = m->fd, .events = POLLOUT};

                        (void)poll(&pfd, 1, 100);
                        continue;
                }
                return n < 0 ? -errno : -EPIPE;
        }
        return 0;
}

/* A harvest into the next round's set (pre-copy only) and, once a second has passed
 * since the last judgement, auto-converge's: a second in which the guest dirtied more
 * than half of what was sent counts; two such step the throttle (QEMU's rule). `force`:
 * harvest now (a round ends) even within the second. */
static int sender_tick(VmwpMigration *m, bool force, char **ret_error)
{
        uint64_t now = now_us(), sent, dirty_bytes;
        uint32_t pct;
        int r;

        if (!m->ticking || (!force && now - m->tick_us < TICK_US))
                return 0;
        r = main_call(m, CALL_HARVEST, 0, ret_error);
        if (r < 0)
                return r;
        m->tick_dirty += m->harvested_pages;
        if (now - m->tick_us < TICK_US)
                return 0;
        sent = atomic_load(&m->bytes_sent) - m->tick_bytes;
        dirty_bytes = m->tick_dirty * PAGE;
        m->tick_us = now;
        m->tick_bytes += sent;
        m->tick_dirty = 0;
        if (!m->opt.auto_converge || dirty_bytes <= sent / 2 || ++m->high_dirty < 2)
                return 0;
        m->high_dirty = 0;
        pct = m->throttle ? MIN(m->throttle + THROTTLE_INCREMENT, THROTTLE_MAX) : THROTTLE_INITIAL;
        if (pct == m->throttle)
                return 0;
        r = main_call(m, CALL_THROTTLE, pct, ret_error);
        if (r < 0)
                return r;
        g_message("vmwp: migration throttles the VPs by %u %%: %" G_GUINT64_FORMAT
                  " bytes dirtied in a second that sent %" G_GUINT64_FORMAT,
                  pct, dirty_bytes, sent);
        atomic_store(&m->throttle_pct, pct);
        m->done.max_throttle_percent = MAX(m->done.max_throttle_percent, pct);
        return 0;
}

/* Runs of one kind, gathered page by page, flushed into MEMORY sections of at most
 * VMWP_STREAM_SECTION_MAX payload bytes. */
typedef struct RunBuilder {
        VmwpMigration *m;
        VmwpSectionWriter *w;
        char **error; /* where a failed tick says why */
        bool open;    /* a MEMORY section is begun */
        uint64_t start, pages;
        VmwpRunKind kind;
        uint64_t counts[3];
} RunBuilder;

static int run_flush(RunBuilder *b)
{
        uint64_t len = b->pages * PAGE, need = VMWP_RUN_HEADER_BYTES + (b->kind == VMWP_RUN_DATA ? len : 0);
        int r = 0;

        if (b->pages == 0)
                return 0;
        if (b->open && b->w->section_len + need > VMWP_STREAM_SECTION_MAX) {
                r = vmwp_section_end(b->w);
                b->open = false;
        }
        if (r >= 0 && !b->open) {
                vmwp_section_begin(b->w, VMWP_SAVE_MEMORY);
                b->open = true;
        }
        if (r >= 0)
                r = vmwp_section_append_run(b->w, b->start, b->kind, b->m->parts.ram + b->start, len);
        b->counts[b->kind] += b->pages;
        atomic_fetch_add(b->kind == VMWP_RUN_DATA   ? &b->m->data_pages
                         : b->kind == VMWP_RUN_ZERO ? &b->m->zero_pages
                                                    : &b->m->discarded_pages,
                         b->pages);
        b->pages = 0;
        if (r >= 0)
                r = sender_tick(b->m, false, b->error);
        return r;
}

static int run_add(RunBuilder *b, uint64_t gpa, VmwpRunKind kind)
{
        int r = 0;

        if (b->pages && (kind != b->kind || gpa != b->start + b->pages * PAGE || b->pages == RUN_MAX_PAGES))
                r = run_flush(b);
        if (b->pages == 0) {
                b->start = gpa;
                b->kind = kind;
        }
        b->pages++;
        return r;
}

static int run_close(RunBuilder *b)
{
        int r = run_flush(b);

        if (r >= 0 && b->open)
                r = vmwp_section_end(b->w);
        b->open = false;
        return r;
}

static bool page_zero(const uint8_t *page)
{
        const uint64_t *q = (const uint64_t *)page;

        for (size_t i = 0; i < PAGE / 8; i++)
                if (q[i])
                        return false;
        return true;
}

/* Pages [first, end) (page numbers): holes are discards (or nothing, in round 0, where
 * the destination has never seen them), the rest data or zero. */
static int send_range(RunBuilder *b, uint64_t first, uint64_t end, bool round0)
{
        VmwpMigration *m = b->m;
        uint64_t page = first;
        int r = 0;

        while (r >= 0 && page < end) {
                off_t data = lseek(m->parts.ram_fd, (off_t)(page * PAGE), SEEK_DATA), hole;
                uint64_t data_page = data < 0 ? end : MIN((uint64_t)data / PAGE, end);

                for (; r >= 0 && page < data_page; page++)
                        if (!round0)
                                r = run_add(b, page * PAGE, VMWP_RUN_DISCARD);
                if (page >= end)
                        break;
                hole = lseek(m->parts.ram_fd, (off_t)(page * PAGE), SEEK_HOLE);
                data_page = hole < 0 ? end : MIN(((uint64_t)hole + PAGE - 1) / PAGE, end);
                if (data_page <= page)
                        data_page = page + 1;
                for (; r >= 0 && page < data_page; page++)
                        r = run_add(b, page * PAGE,
                                    page_zero(m->parts.ram + page * PAGE) ? VMWP_RUN_ZERO : VMWP_RUN_DATA);
                if (atomic_load(&m->cancel))
                        return -ECANCELED;
        }
        return r;
}

/* The pages set in m->harvest, in runs of consecutive pages. */
static int send_dirty(RunBuilder *b, uint64_t *ret_pages)
{
        VmwpMigration *m = b->m;
        uint64_t pages = m->visible_at_start / PAGE, n = 0;
        int r = 0;

        for (uint64_t page = 0; r >= 0 && page < pages;) {
                uint64_t word = m->harvest[page / 64] >> (page % 64), end;

                if (!word) {
                        page = (page / 64 + 1) * 64;
                        continue;
                }
                page += (uint64_t)__builtin_ctzll(word);
                if (page >= pages)
                        break;
                for (end = page; end < pages && (m->harvest[end / 64] & (1ull << (end % 64))); end++)
                        ;
                r = send_range(b, page, end, false);
                n += end - page;
                page = end;
        }
        *ret_pages = n;
        return r;
}

static uint64_t count_bits(const uint64_t *bitmap, uint64_t pages)
{
        uint64_t n = 0;

        for (uint64_t i = 0; i < (pages + 63) / 64; i++)
                n += (uint64_t)__builtin_popcountll(bitmap[i]);
        return n;
}

static int sender_run(VmwpMigration *m, char **ret_error)
{
        uint32_t downtime_ms =
                m->opt.max_downtime_ms ? m->opt.max_downtime_ms : VMWP_MIGRATE_DOWNTIME_DEFAULT_MS;
        uint32_t max_rounds = m->opt.max_rounds ? m->opt.max_rounds : VMWP_MIGRATE_ROUNDS_DEFAULT;
        uint8_t header[VMWP_FORMAT_HEADER_BYTES];
        VmwpSectionWriter w;
        RunBuilder b = {.m = m, .w = &w, .error = ret_error};
        uint64_t round_start, round_bytes_before, sent_in_round = 0, round_us = 1, final_before, pages_sent;
        uint64_t words = (m->bitmap_pages + 63) / 64, last_bytes = m->visible_at_start;
        uint32_t rounds = 0;
        int r;

        vmwp_section_writer_init_stream(&w, stream_write, m);
        vmwp_format_header_encode(header, VMWP_STREAM_MAGIC, VMWP_STREAM_VERSION, 0, 0);
        r = stream_write(m, header, sizeof(header));
        if (r >= 0)
                r = vmwp_save_write_config(&w, &m->parts);

        /* Round 0: everything that is not a hole. */
        round_start = m->tick_us = now_us();
        round_bytes_before = m->tick_bytes = atomic_load(&m->bytes_sent);
        m->ticking = true;
        if (r >= 0)
                r = send_range(&b, 0, m->visible_at_start / PAGE, true);
        if (r >= 0)
                r = run_close(&b);
        for (;;) {
                uint64_t dirty, dirty_bytes, bandwidth, now, *sent_set;

                if (r < 0)
                        break;
                now = now_us();
                round_us = MAX(now - round_start, 1);
                sent_in_round = atomic_load(&m->bytes_sent) - round_bytes_before;
                r = sender_tick(m, true, ret_error);
                if (r < 0)
                        break;
                /* The set gathered while this round was sent is the next round's. */
                sent_set = m->harvest;
                m->harvest = m->next;
                m->next = sent_set;
                memset(m->next, 0, words * sizeof(uint64_t));
                dirty = count_bits(m->harvest, m->visible_at_start / PAGE);
                dirty_bytes = dirty * PAGE;
                bandwidth = sent_in_round * 1000000 / round_us;
                atomic_store(&m->remaining, dirty_bytes);
                atomic_store(&m->bandwidth, bandwidth);
                atomic_store(&m->dirty_rate, dirty_bytes * 1000000 / round_us);
                g_message("vmwp: migration round %u: sent %" G_GUINT64_FORMAT " bytes in %" G_GUINT64_FORMAT
                          " us, %" G_GUINT64_FORMAT " pages dirty since, throttle %u %%",
                          rounds, sent_in_round, round_us, dirty, m->throttle);
                if (rounds >= max_rounds)
                        break;
                if (dirty_bytes <= bandwidth / 1000 * downtime_ms &&
                    (dirty_bytes <= bandwidth / 1000 * CONVERGED_MS || dirty_bytes * 2 > last_bytes))
                        break;
                last_bytes = dirty_bytes;
                rounds++;
                atomic_store(&m->round, rounds);
                round_start = now_us();
                round_bytes_before = atomic_load(&m->bytes_sent);
                r = send_dirty(&b, &pages_sent);
                if (r >= 0)
                        r = run_close(&b);
        }
        m->ticking = false;
        if (r < 0) {
                vmwp_section_writer_clear(&w);
                return r;
        }

        /* The final pass, paused. */
        r = main_call(m, CALL_FINAL, 0, ret_error);
        for (uint64_t i = 0; i < words; i++)
                m->harvest[i] |= m->next[i];
        atomic_store(&m->paused, true);
        atomic_store(&m->round, ++rounds);
        final_before = atomic_load(&m->bytes_sent);
        if (r >= 0)
                r = send_dirty(&b, &pages_sent);
        if (r >= 0)
                r = run_close(&b);
        if (r >= 0)
                g_message("vmwp: migration final pass: %" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT
                          " us after the pause",
                          pages_sent, now_us() - m->paused_mono_us);
        if (r >= 0)
                r = stream_write(m, m->state->data, m->state->len);
        if (r >= 0)
                r = vmwp_save_write_disk(&w, &m->parts, VMWP_STREAM_SECTION_MAX, &m->done.disk_bytes,
                                         ret_error);
        if (r >= 0)
                r = vmwp_section_whole(&w, VMWP_SAVE_END, NULL, 0);
        vmwp_section_writer_clear(&w);
        if (r < 0)
                return r;
        atomic_store(&m->remaining, 0);
        m->done.paused_ns = (now_us() - m->paused_mono_us) * 1000;
        m->done.final_bytes = atomic_load(&m->bytes_sent) - final_before;
        m->done.rounds = rounds;
        return 0;
}

static gpointer sender_thread(gpointer data)
{
        VmwpMigration *m = data;
        g_autofree char *error = NULL;
        int r = sender_run(m, &error);

        close(m->fd);
        m->fd = -1;
        m->ok = r >= 0;
        if (r >= 0) {
                m->done.bytes_sent = atomic_load(&m->bytes_sent);
                m->done.data_pages = atomic_load(&m->data_pages);
                m->done.zero_pages = atomic_load(&m->zero_pages);
                m->done.discarded_pages = atomic_load(&m->discarded_pages);
                m->done.duration_ms = (now_us() - (uint64_t)m->t0_us) / 1000;
        } else if (r == -ECANCELED && atomic_load(&m->cancel))
                m->reason = g_strdup("cancelled");
        else if (error)
                m->reason = g_steal_pointer(&error);
        else if (r == -EPIPE || r == -ECONNRESET)
                m->reason = g_strdup_printf("the destination went away (%s)", g_strerror(-r));
        else
                m->reason = g_strdup_printf("cannot write the migration stream: %s", g_strerror(-r));
        (void)main_call(m, CALL_END, 0, NULL);
        atomic_store(&m->thread_done, true);
        return NULL;
}

/* ---- Public ---- */

int vmwp_migration_start(const VmwpSaveParts *parts, int fd, const VmwpMigrateOptions *options,
                         bool vm_paused, const VmwpMigrateWorkerOps *ops, void *userdata, VmwpMigration **ret,
                         char **ret_error)
{
        g_autoptr(VmwpMigration) m = NULL;
        uint64_t words;
        int flags, r;

        if (options->max_downtime_ms > VMWP_MIGRATE_DOWNTIME_MAX_MS ||
            options->max_rounds > VMWP_MIGRATE_ROUNDS_MAX ||
            (options->max_bandwidth_bytes_per_s &&
             options->max_bandwidth_bytes_per_s < VMWP_MIGRATE_BANDWIDTH_MIN)) {
                *ret_error = g_strdup_printf(
                        "max_downtime_ms %u, max_rounds %u, max_bandwidth_bytes_per_s %" G_GUINT64_FORMAT
                        ": expected at most %u, at most %u, and 0 or at least %llu",
                        options->max_downtime_ms, options->max_rounds, options->max_bandwidth_bytes_per_s,
                        VMWP_MIGRATE_DOWNTIME_MAX_MS, VMWP_MIGRATE_ROUNDS_MAX, VMWP_MIGRATE_BANDWIDTH_MIN);
                close(fd);
                return -EINVAL;
        }
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                *ret_error = g_strdup("the migration fd is not writable");
                close(fd);
                return -EINVAL;
        }
        m = g_new0(VmwpMigration, 1);
        m->parts = *parts;
        m->fd = fd;
        m->opt = *options;
        m->ops = ops;
        m->userdata = userdata;
        m->t0_us = g_get_monotonic_time();
        g_mutex_init(&m->lock);
        g_cond_init(&m->cond);
        m->bitmap_pages = parts->guest_ram->maximum_bytes / PAGE;
        words = (m->bitmap_pages + 63) / 64;
        m->harvest = g_new0(uint64_t, words);
        m->next = g_new0(uint64_t, words);
        m->scratch = g_new0(uint64_t, words);
        m->own = g_new0(uint64_t, words);
        m->state = g_byte_array_new();
        m->visible_at_start = parts->guest_ram->visible_bytes;
        m->vm_was_paused = vm_paused;
        r = hv_client_dirty_log_start(parts->hv, parts->partition_id);
        if (r < 0) {
                *ret_error = g_strdup_printf("hvd cannot track the VM's dirty pages: %s",
                                             hv_client_last_error(parts->hv));
                return r;
        }
        m->tracking = true;
        __atomic_store_n(&parts->guest_ram->dirty, m->own, __ATOMIC_RELEASE);
        atomic_store(&m->paused, false);
        m->thread = g_thread_new("vmwp-migrate", sender_thread, m);
        *ret = g_steal_pointer(&m);
        return 0;
}

void vmwp_migration_progress(VmwpMigration *m, VmwpMigrateProgress *ret)
{
        *ret = (VmwpMigrateProgress){
                .round = atomic_load(&m->round),
                .ram_bytes = m->visible_at_start,
                .bytes_sent = atomic_load(&m->bytes_sent),
                .bytes_remaining = atomic_load(&m->remaining),
                .dirty_bytes_per_s = atomic_load(&m->dirty_rate),
                .bandwidth_bytes_per_s = atomic_load(&m->bandwidth),
                .throttle_percent = atomic_load(&m->throttle_pct),
                .paused = atomic_load(&m->paused),
                .data_pages = atomic_load(&m->data_pages),
                .zero_pages = atomic_load(&m->zero_pages),
                .discarded_pages = atomic_load(&m->discarded_pages),
        };
}

void vmwp_migration_cancel(VmwpMigration *m)
{
        atomic_store(&m->cancel, true);
}

int vmwp_migration_abort(VmwpMigration *m, bool stay_paused, char **ret_error)
{
        if (!atomic_load(&m->thread_done) || !m->ok) {
                *ret_error = g_strdup("no finished migration to abort");
                return -EINVAL;
        }
        main_cleanup(m, false);
        if (!stay_paused && m->paused_by_us) {
                int r = m->ops->pause(m->userdata, false, ret_error);

                if (r < 0)
                        return r;
        }
        m->paused_by_us = false;
        return 0;
}

void vmwp_migration_free(VmwpMigration *m)
{
        if (!m)
                return;
        if (m->thread) {
                m->freeing = true;
                atomic_store(&m->cancel, true);
                /* The sender may be waiting for the main thread: keep serving it. */
                while (!atomic_load(&m->thread_done)) {
                        if (!g_main_context_iteration(NULL, FALSE))
                                g_usleep(1000);
                }
                g_thread_join(m->thread);
        }
        if (m->fd >= 0)
                close(m->fd);
        g_free(m->harvest);
        g_free(m->next);
        g_free(m->scratch);
        g_free(m->own);
        if (m->state)
                g_byte_array_unref(m->state);
        g_free(m->reason);
        g_free(m->call_error);
        g_mutex_clear(&m->lock);
        g_cond_clear(&m->cond);
        g_free(m);
}
