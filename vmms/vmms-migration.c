/* Move-VM between hosts (vmms-migration.h has the protocol and the guarantees): the
 * source's mover and the destination's listener, both on vmmsd's main loop with
 * asynchronous TLS reads and writes, and what a restarted vmmsd does with the moves
 * its store says were in flight. Local file I/O (the saved state) is plain. */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hv-abi.h"
#include "vmms-cluster.h"
#include "vmms-compat.h"
#include "vmms-engine.h"
#include "vmms-migration.h"
#include "vmms.pb-c.h"

#define MIGRATION_ENGINE "bundled"
#define IO_TIMEOUT_S 30
#define START_TIMEOUT_MS 60000
#define POLL_MS 20
#define PROGRESS_INTERVAL_MS 100
#define MAX_DOWNTIME_DEFAULT_MS 300 /* QEMU's and Cloud Hypervisor's default */
#define MAX_DOWNTIME_LIMIT_MS 60000
#define HOST_NAME_MAX_LEN 253
/* What the TCP connection may hold in flight each way (the kernel doubles it). Left
 * to autotuning, megabytes of pre-copy still queued when the source pauses reach the
 * destination's worker inside the downtime. */
#define LINK_SOCKET_BUFFER_BYTES (512 * 1024)
/* A saved state holds at most the guest's memory plus its VP and device state. */
#define STATE_OVERHEAD_BYTES (64u << 20)

static const char MAGIC[4] = {'V', 'M', 'M', 'G'};

static const char *const frame_names[VMMS_MIGRATION_FRAME_COUNT] = {
        [VMMS_MIGRATION_HELLO] = "HELLO",         [VMMS_MIGRATION_OFFER] = "OFFER",
        [VMMS_MIGRATION_ACCEPT] = "ACCEPT",       [VMMS_MIGRATION_REFUSE] = "REFUSE",
        [VMMS_MIGRATION_STATE] = "STATE",         [VMMS_MIGRATION_DONE] = "DONE",
        [VMMS_MIGRATION_STARTED] = "STARTED",     [VMMS_MIGRATION_FAILED] = "FAILED",
        [VMMS_MIGRATION_READY] = "READY",         [VMMS_MIGRATION_COMMIT] = "COMMIT",
        [VMMS_MIGRATION_COMMITTED] = "COMMITTED", [VMMS_MIGRATION_BEGIN] = "BEGIN",
};

struct VmmsMigration {
        VmmsManager *m;
        VmmsAccess *access;
        GTlsCertificate *cert;
        GTlsDatabase *ca;
        char *host_name;
        GSocketService *service;
        GHashTable *moves;    /* vm id -> Move: the moves this host is sending */
        GHashTable *arriving; /* vm id -> Incoming: the moves accepted here, until their link ends */
        char *stop_at;        /* VMMS_MIGRATION_STOP_AT, tests only */
};

void vmms_migration_header_write(uint8_t out[VMMS_MIGRATION_HEADER_SIZE], VmmsMigrationFrame type,
                                 uint32_t length)
{
        memcpy(out, MAGIC, 4);
        out[4] = (uint8_t)type;
        out[5] = (uint8_t)(type >> 8);
        out[6] = out[7] = 0;
        for (int i = 0; i < 4; i++)
                out[8 + i] = (uint8_t)(length >> (8 * i));
}

int vmms_migration_header_parse(const uint8_t in[VMMS_MIGRATION_HEADER_SIZE], VmmsMigrationFrame *ret_type,
                                uint32_t *ret_length, char **ret_error)
{
        uint32_t type = in[4] | (uint32_t)in[5] << 8;
        uint32_t length = 0;

        for (int i = 0; i < 4; i++)
                length |= (uint32_t)in[8 + i] << (8 * i);
        if (memcmp(in, MAGIC, 4) != 0) {
                *ret_error = g_strdup("the peer does not speak the vmms migration protocol (bad magic)");
                return -EPROTO;
        }
        if (type == 0 || type >= VMMS_MIGRATION_FRAME_COUNT) {
                *ret_error = g_strdup_printf("the peer sent an unknown frame type %u", type);
                return -EPROTO;
        }
        if (in[6] || in[7]) {
                *ret_error = g_strdup_printf("the peer sent a %s frame with its reserved bytes set",
                                             frame_names[type]);
                return -EPROTO;
        }
        if (length > VMMS_MIGRATION_PAYLOAD_MAX) {
                *ret_error = g_strdup_printf("the peer sent a %s frame of %u bytes; at most %u",
                                             frame_names[type], length, VMMS_MIGRATION_PAYLOAD_MAX);
                return -EPROTO;
        }
        *ret_type = type;
        *ret_length = length;
        return 0;
}

/* ---- A framed TLS link, shared by both sides ----
 * One read may be in flight at a time; writes queue, in order. The owner is freed
 * (its free_fn) once it has closed the link and no operation is pending.
 *
 * Reads and writes are non-blocking loops: a frame goes through as many TLS records
 * as the socket takes at once in one main-loop dispatch (GIO's read_all and
 * write_all_async take one dispatch per 16 KB record, which was most of the relay's
 * CPU), and a pollable source waits when it takes no more. Callbacks always come from
 * a dispatch, never from link_read or link_write themselves. */

typedef struct Link Link;
typedef void (*LinkFrameFn)(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error);
typedef void (*LinkWroteFn)(Link *link, const char *error);

struct Link {
        GIOStream *tls;
        GCancellable *cancel;
        unsigned pending;
        bool closed;
        void (*free_fn)(Link *link);
        /* The frame being read: `got` bytes of header, then of payload. */
        uint8_t header[VMMS_MIGRATION_HEADER_SIZE];
        VmmsMigrationFrame type;
        uint32_t length;
        uint8_t *payload;
        gsize got;
        char *read_error;
        LinkFrameFn on_frame;
        /* Frames to write, in order (LinkFrame); the head is being written, waiting
         * for room when out_source is set. */
        GQueue out;
        GSource *out_source;
};

typedef struct LinkFrame {
        Link *link;
        const uint8_t *data; /* `owned`'s, or the caller's until `fn` */
        uint8_t *owned;
        gsize size, put;
        char *error;
        LinkWroteFn fn;
} LinkFrame;

static void link_release(Link *link)
{
        if (--link->pending == 0 && link->closed)
                link->free_fn(link);
}

static void link_close(Link *link)
{
        if (link->closed)
                return;
        link->closed = true;
        g_cancellable_cancel(link->cancel);
        if (link->tls)
                g_io_stream_close_async(link->tls, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
        link->pending++;
        link_release(link);
}

static void link_clear(Link *link)
{
        g_clear_object(&link->tls);
        g_clear_object(&link->cancel);
        g_clear_pointer(&link->payload, g_free);
        g_clear_pointer(&link->read_error, g_free);
}

/* Reads what the socket has of the frame; G_SOURCE_CONTINUE while it needs more. */
/* Reads what there is of the frame; false while it needs more. Reading always comes
 * before waiting: GnuTLS may hold records it has decrypted that the socket no longer
 * shows, and a pollable source would not wake for them. */
static bool link_read_some(Link *link)
{
        GPollableInputStream *in = G_POLLABLE_INPUT_STREAM(g_io_stream_get_input_stream(link->tls));

        while (!link->closed && !link->read_error) {
                g_autoptr(GError) error = NULL;
                bool in_header = link->got < sizeof(link->header);
                uint8_t *to = in_header ? link->header + link->got
                                        : link->payload + (link->got - sizeof(link->header));
                gsize want = in_header ? sizeof(link->header) - link->got
                                       : link->length - (link->got - sizeof(link->header));
                gssize n;

                if (want == 0)
                        break;
                n = g_pollable_input_stream_read_nonblocking(in, to, want, link->cancel, &error);
                if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                        return false;
                if (n <= 0) {
                        link->read_error = g_strdup(error ? error->message : "the connection was closed");
                        break;
                }
                link->got += (gsize)n;
                if (in_header && link->got == sizeof(link->header)) {
                        if (vmms_migration_header_parse(link->header, &link->type, &link->length,
                                                        &link->read_error) < 0)
                                break;
                        link->payload = g_malloc(MAX(link->length, 1));
                }
        }
        return true;
}

/* The frame is read (or failed): to its reader, from a dispatch of its own. */
static gboolean on_link_frame_read(gpointer userdata)
{
        Link *link = userdata;
        g_autofree char *why = g_steal_pointer(&link->read_error);
        g_autoptr(GBytes) payload = NULL;

        if (!link->closed && why) {
                g_clear_pointer(&link->payload, g_free);
                link->on_frame(link, 0, NULL, why);
        } else if (!link->closed) {
                payload = g_bytes_new_take(g_steal_pointer(&link->payload), link->length);
                link->on_frame(link, link->type, payload, NULL);
        }
        link_release(link);
        return G_SOURCE_REMOVE;
}

static gboolean on_link_readable(GObject *stream, gpointer userdata)
{
        (void)stream;
        if (!link_read_some(userdata))
                return G_SOURCE_CONTINUE;
        return on_link_frame_read(userdata);
}

/* Reads the next frame; `fn` gets it, or an error (the link should then be closed). */
static void link_read(Link *link, LinkFrameFn fn)
{
        GSource *source;

        link->on_frame = fn;
        link->got = 0;
        g_clear_pointer(&link->payload, g_free);
        g_clear_pointer(&link->read_error, g_free);
        link->pending++;
        if (link_read_some(link)) {
                source = g_idle_source_new();
                g_source_set_priority(source, G_PRIORITY_DEFAULT);
                g_source_set_callback(source, on_link_frame_read, link, NULL);
        } else {
                source = g_pollable_input_stream_create_source(
                        G_POLLABLE_INPUT_STREAM(g_io_stream_get_input_stream(link->tls)), link->cancel);
                g_source_set_callback(source, G_SOURCE_FUNC(on_link_readable), link, NULL);
        }
        g_source_attach(source, NULL);
        g_source_unref(source);
}

/* After a frame is written (or failed): its `fn`, from a dispatch of its own. */
static gboolean on_link_frame_written(gpointer userdata)
{
        LinkFrame *f = userdata;
        Link *link = f->link;

        if (!link->closed && f->fn)
                f->fn(link, f->error);
        g_free(f->owned);
        g_free(f->error);
        g_free(f);
        link_release(link);
        return G_SOURCE_REMOVE;
}

static gboolean on_link_writable(GObject *stream, gpointer userdata);

/* Writes queued frames as far as the socket takes them, then waits for room. */
static void link_flush(Link *link)
{
        GPollableOutputStream *out = G_POLLABLE_OUTPUT_STREAM(g_io_stream_get_output_stream(link->tls));
        LinkFrame *f;

        while ((f = g_queue_peek_head(&link->out))) {
                while (!link->closed && !f->error && f->put < f->size) {
                        g_autoptr(GError) error = NULL;
                        gssize n = g_pollable_output_stream_write_nonblocking(
                                out, f->data + f->put, f->size - f->put, link->cancel, &error);

                        if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
                                link->out_source = g_pollable_output_stream_create_source(out, link->cancel);
                                g_source_set_callback(link->out_source, G_SOURCE_FUNC(on_link_writable), link,
                                                      NULL);
                                g_source_attach(link->out_source, NULL);
                                g_source_unref(link->out_source);
                                return;
                        }
                        if (n < 0)
                                f->error = g_strdup(error->message);
                        else
                                f->put += (gsize)n;
                }
                g_queue_pop_head(&link->out);
                g_idle_add_full(G_PRIORITY_DEFAULT, on_link_frame_written, f, NULL);
        }
}

static gboolean on_link_writable(GObject *stream, gpointer userdata)
{
        Link *link = userdata;

        (void)stream;
        link->out_source = NULL;
        link_flush(link);
        return G_SOURCE_REMOVE;
}

/* Queues `size` bytes of `data`, a whole frame (freed after if `owned`, else kept by
 * the caller until `fn`), and writes at once what the socket takes: READY, COMMIT and
 * COMMITTED leave before whatever their sender does next. `fn` always comes from a
 * later dispatch; frames go out in the order they were queued. */
static void link_write_raw(Link *link, const uint8_t *data, uint8_t *owned, gsize size, LinkWroteFn fn)
{
        LinkFrame *f = g_new0(LinkFrame, 1);

        f->link = link;
        f->data = data;
        f->owned = owned;
        f->size = size;
        f->fn = fn;
        link->pending++;
        g_queue_push_tail(&link->out, f);
        if (!link->out_source)
                link_flush(link);
}

static void link_write(Link *link, VmmsMigrationFrame type, const void *payload, uint32_t length,
                       LinkWroteFn fn)
{
        uint8_t *buf = g_malloc(VMMS_MIGRATION_HEADER_SIZE + length);
        gsize size = VMMS_MIGRATION_HEADER_SIZE + length;

        vmms_migration_header_write(buf, type, length);
        if (length)
                memcpy(buf + VMMS_MIGRATION_HEADER_SIZE, payload, length);
        link_write_raw(link, buf, buf, size, fn);
}

/* A frame whose payload the caller has put after VMMS_MIGRATION_HEADER_SIZE free bytes
 * at `frame`, kept until `fn`: sent without a copy. */
static void link_write_in_place(Link *link, VmmsMigrationFrame type, uint8_t *frame, uint32_t length,
                                LinkWroteFn fn)
{
        vmms_migration_header_write(frame, type, length);
        link_write_raw(link, frame, NULL, VMMS_MIGRATION_HEADER_SIZE + length, fn);
}

/* A frame whose payload is an a{sv} (floating `dict` is sunk). */
static void link_write_dict(Link *link, VmmsMigrationFrame type, GVariant *dict, LinkWroteFn fn)
{
        g_autoptr(GVariant) v = g_variant_ref_sink(dict);

        link_write(link, type, g_variant_get_data(v), (uint32_t)g_variant_get_size(v), fn);
}

static GVariantDict *dict_from_payload(GBytes *payload)
{
        g_autoptr(GVariant) v = g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, payload, FALSE);

        return g_variant_dict_new(v);
}

/* A string key of at most `max` bytes, valid UTF-8 without control characters. */
static bool dict_string(GVariantDict *d, const char *key, size_t max, char **ret, char **ret_error)
{
        const char *s = NULL;

        if (!g_variant_dict_lookup(d, key, "&s", &s)) {
                *ret_error = g_strdup_printf("the peer's message has no string '%s'", key);
                return false;
        }
        if (strlen(s) > max) {
                *ret_error = g_strdup_printf("the peer's '%s' is longer than %zu bytes", key, max);
                return false;
        }
        for (const char *c = s; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\n' && *c != '\t') {
                        *ret_error = g_strdup_printf("the peer's '%s' has control characters", key);
                        return false;
                }
        *ret = g_strdup(s);
        return true;
}

static bool dict_get(GVariantDict *d, const char *key, const char *type, void *ret, char **ret_error)
{
        if (g_variant_dict_lookup(d, key, type, ret))
                return true;
        *ret_error = g_strdup_printf("the peer's message has no '%s' of type %s", key, type);
        return false;
}

/* The subject and CN of the peer's verified certificate. */
static void peer_caller(GTlsConnection *tls, VmmsCaller *ret)
{
        GTlsCertificate *cert = g_tls_connection_get_peer_certificate(tls);
        g_autofree char *subject = NULL, *cn = NULL;

        if (cert && g_tls_connection_get_peer_certificate_errors(tls) == 0) {
                subject = g_tls_certificate_get_subject_name(cert);
                cn = subject ? vmms_subject_common_name(subject) : NULL;
        }
        vmms_caller_init_tls(ret, subject, cn);
}

/* GTls rejects a peer certificate unless told to accept it: accept exactly those the
 * CA verifies. Host names are not checked (hosts are named by address); the peer list
 * says which certificates are hosts. */
static gboolean on_accept_certificate(GTlsConnection *conn, GTlsCertificate *cert,
                                      GTlsCertificateFlags errors, gpointer userdata)
{
        (void)conn;
        (void)cert;
        (void)userdata;
        return (errors & ~G_TLS_CERTIFICATE_BAD_IDENTITY) == 0;
}

/* ---- Processor compatibility (vmms-compat.h) ----
 * OFFER carries the VM's vector as this host gives it (normalized or not, as the VM is
 * set); the destination compares it with its own for the same setting before any other
 * check and refuses naming every difference (REFUSE reason s, differences a(sss)). */

/* The VM's processor here; NULL with why when hvd cannot say. */
static char *local_vector(VmmsManager *m, bool normalized, VmmsCompatVector *ret)
{
        const Vmms__Hv__CompatibilityVector *v = vmms_manager_compat_vector(m, normalized);

        if (!v)
                return g_strdup_printf("its hypervisor cannot say what processor it gives VMs (%s)",
                                       vmms_manager_hypervisor_status(m));
        vmms_compat_vector_from_hv(v, ret);
        return NULL;
}

static void offer_add_processor(VmmsMigration *mig, const VmmsVm *vm, GVariantDict *d)
{
        g_auto(VmmsCompatVector) v = {0};
        bool normalized = vm->def.processor.compatibility_for_migration;
        g_autofree char *why = local_vector(mig->m, normalized, &v);

        g_variant_dict_insert(d, "processor-compatibility", "b", normalized);
        if (!why) /* without it the destination refuses, saying so */
                g_variant_dict_insert_value(d, "processor", vmms_compat_vector_to_variant(&v));
}

/* The offer's vector against this host's: NULL, or why not (with the differences,
 * when both could be read and they differ). */
static char *offer_check_processor(VmmsManager *m, GVariantDict *d, bool normalized,
                                   GPtrArray **ret_differences)
{
        g_auto(VmmsCompatVector) source = {0}, here = {0};
        g_autoptr(GVariant) wire = g_variant_dict_lookup_value(d, "processor", G_VARIANT_TYPE_VARDICT);
        g_autoptr(GPtrArray) differences = NULL;
        g_autofree char *why = NULL, *list = NULL;

        if (!wire)
                return g_strdup("the source did not say what processor the VM has (no 'processor' vector)");
        if (!vmms_compat_vector_from_variant(wire, &source, &why))
                return g_steal_pointer(&why);
        why = local_vector(m, normalized, &here);
        if (why)
                return g_steal_pointer(&why);
        differences = vmms_compat_compare(&source, &here);
        if (differences->len == 0)
                return NULL;
        list = vmms_compat_differences_format(differences, 8);
        *ret_differences = g_steal_pointer(&differences);
        return g_strdup_printf("processor not compatible%s: %s",
                               normalized ? ""
                                          : " (Set-VMProcessor -CompatibilityForMigrationEnabled $true "
                                            "gives the VM a processor every host can give)",
                               list);
}

/* ---- Test hooks ---- */

/* VMMS_MIGRATION_STOP_AT (vmms-migration.h): a test stops this vmmsd at a phase. */
static void phase_reached(VmmsMigration *mig, const char *phase)
{
        if (!mig->stop_at || strcmp(mig->stop_at, phase) != 0)
                return;
        g_message("migration: stopping at %s (VMMS_MIGRATION_STOP_AT)", phase);
        (void)raise(SIGSTOP);
}

/* Where a move's time goes, for the log line at its end: "name +ms" per step, each
 * measured from the step before. */
typedef struct Timeline {
        int64_t last_us;
        GString *steps;
} Timeline;

static void timeline_mark(Timeline *t, const char *step)
{
        int64_t now = g_get_monotonic_time();

        if (!t->steps)
                t->steps = g_string_new(NULL);
        else
                g_string_append_printf(t->steps, " %s +%.1f", step, (double)(now - t->last_us) / 1000.0);
        t->last_us = now;
}

static void timeline_clear(Timeline *t)
{
        if (t->steps)
                g_string_free(t->steps, TRUE);
        t->steps = NULL;
}

/* ---- The source: MoveVm ---- */

typedef struct Move {
        Link link; /* first: a Link* is a Move* */
        VmmsMigration *mig;
        VmmsVm *vm; /* in its "move" job until the move ends, so it stays */
        char vm_id[37];
        char *destination;
        const char *phase; /* MoveVmResult.phase */
        bool ended;
        bool cancelled; /* Stop-VMMigration */
        bool saving;    /* the worker writes the state: a failure waits for it */
        char *deferred; /* why the move ends, once the save is done */
        VmmsErrorCode deferred_code;
        bool row;          /* its 'out' row is in the store */
        bool commit_sent;  /* from here on the destination may run the VM */
        bool handing_over; /* the cluster moves the VM's owner key to the destination */
        int fd;
        uint64_t total;
        uint64_t sent;
        uint32_t max_downtime_ms;
        int64_t started_us;
        int64_t paused_us;
        int64_t sending_us;
        int64_t notified_us;
        uint8_t *chunk;      /* a STATE frame: header room, then what was read */
        GPtrArray *watchers; /* WatchMoveVm calls */
        /* Live: the worker writes the stream into stream_fd's peer; it is relayed as
         * STATE frames, one read per written frame (the worker waits when we do). */
        bool live;
        bool direct; /* the VM's engine moves it itself (vmms-engine.h): no stream here */
        int stream_fd;
        guint stream_source;
        bool stream_eof, out_done, done_sent;
        uint32_t round, throttle;
        uint64_t remaining, dirty_rate, bandwidth;
        Timeline timeline;
} Move;

static void move_free(Link *link)
{
        Move *mv = (Move *)link;

        link_clear(link);
        if (mv->fd >= 0)
                close(mv->fd);
        if (mv->stream_fd >= 0)
                close(mv->stream_fd);
        g_free(mv->destination);
        g_free(mv->deferred);
        g_free(mv->chunk);
        g_ptr_array_unref(mv->watchers);
        timeline_clear(&mv->timeline);
        g_free(mv);
}

/* A live stream's length is known only at its end: what was sent plus what the worker
 * says is left. */
static uint64_t move_total(const Move *mv)
{
        if (mv->live && !mv->stream_eof)
                return mv->sent + mv->remaining;
        return mv->total;
}

static uint32_t move_percent(const Move *mv)
{
        uint64_t total = move_total(mv);

        if (g_strcmp0(mv->phase, "completed") == 0)
                return 100;
        return total ? (uint32_t)(MIN(mv->sent, total) * 99 / total) : 0;
}

static Vmms__V1__MoveVmResult *progress_new(Move *mv, VmmsCall *call, const char *message)
{
        Vmms__V1__MoveVmResult *out = vmms_call_new0(call, Vmms__V1__MoveVmResult);
        int64_t now = g_get_monotonic_time();
        int64_t sending = mv->sending_us ? now - mv->sending_us : 0;

        vmms__v1__move_vm_result__init(out);
        out->vm_id = vmms_call_strdup(call, mv->vm_id);
        out->destination_host = vmms_call_strdup(call, mv->destination);
        out->phase = vmms_call_strdup(call, mv->phase);
        out->data_total = move_total(mv);
        out->data_processed = mv->sent;
        out->data_remaining = out->data_total > mv->sent ? out->data_total - mv->sent : 0;
        out->percent = move_percent(mv);
        out->memory_iteration = mv->live ? mv->round : mv->sending_us ? 1 : 0;
        out->memory_dirty_rate = mv->dirty_rate;
        out->auto_converge_throttle = mv->throttle;
        out->memory_bps = sending > 0 ? (uint64_t)((double)mv->sent * 1e6 / (double)sending) : 0;
        out->mode = vmms_call_strdup(call, mv->live ? "live" : "quick");
        out->time_elapsed_ms = (uint64_t)(now - mv->started_us) / 1000;
        if (g_strcmp0(mv->phase, "completed") == 0)
                out->downtime_ms = (uint64_t)(now - mv->paused_us) / 1000;
        out->message = vmms_call_strdup(call, message ? message : "");
        return out;
}

/* Tells the watchers (and Get-VM's Status) how far the move is: on every phase, and
 * while sending at most every PROGRESS_INTERVAL_MS. */
static void move_progress(Move *mv, const char *phase, bool force)
{
        int64_t now = g_get_monotonic_time();

        if (phase != mv->phase) {
                mv->phase = phase;
                force = true;
        }
        if (mv->vm)
                mv->vm->move_percent = (int)move_percent(mv);
        if (!force && now - mv->notified_us < PROGRESS_INTERVAL_MS * 1000)
                return;
        mv->notified_us = now;
        for (guint i = 0; i < mv->watchers->len; i++) {
                VmmsCall *call = mv->watchers->pdata[i];

                vmms_call_send(call, &progress_new(mv, call, NULL)->base);
        }
}

/* The move is over: the last item to each watcher, whose stream then ends. */
static void move_unregister(Move *mv, const char *phase, const char *message)
{
        mv->phase = phase;
        g_hash_table_remove(mv->mig->moves, mv->vm_id);
        if (mv->vm)
                mv->vm->move_percent = -1;
        while (mv->watchers->len) {
                VmmsCall *call = g_ptr_array_steal_index(mv->watchers, 0);

                vmms_call_set_cancel(call, NULL, NULL);
                vmms_call_send(call, &progress_new(mv, call, message)->base);
                vmms_call_return(call, NULL);
                mv->link.pending--; /* the watch's; the caller closes the link next */
        }
}

static void move_clear_row(Move *mv)
{
        int r;

        if (!mv->row)
                return;
        r = vmms_store_move_clear(vmms_manager_store(mv->mig->m), mv->vm_id);
        if (r < 0)
                g_warning("Move-VM '%s': cannot clear its record in the store: %s", mv->vm_id,
                          g_strerror(-r));
        mv->row = r < 0;
}

static void move_stop_stream(Move *mv)
{
        if (mv->stream_source) {
                g_source_remove(mv->stream_source);
                mv->stream_source = 0;
                mv->link.pending--; /* the reader's; the caller closes the link next */
        }
        if (mv->stream_fd >= 0)
                close(mv->stream_fd);
        mv->stream_fd = -1;
}

/* Anything before COMMIT failed, or the destination said FAILED: the VM continues here.
 * Once COMMIT is out and no answer came, the destination may run it: the VM stays
 * Saved here, in doubt, and is never started by the move. */
static void move_fail(Move *mv, VmmsErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void move_fail(Move *mv, VmmsErrorCode code, const char *fmt, ...)
{
        g_autofree char *why = NULL;
        va_list ap;

        if (mv->ended)
                return;
        va_start(ap, fmt);
        why = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (mv->saving) {
                /* The worker is writing the state: the VM's fate waits for it
                 * (on_vm_saved); the destination may already let go. */
                if (!mv->deferred) {
                        mv->deferred = g_steal_pointer(&why);
                        mv->deferred_code = code;
                }
                link_close(&mv->link);
                return;
        }
        mv->ended = true;
        move_stop_stream(mv);
        move_unregister(mv, mv->cancelled ? "cancelled" : "failed", why);
        if (mv->commit_sent) {
                g_warning("Move-VM '%s' to %s: outcome unknown, the VM is kept Saved here: %s",
                          mv->vm->def.name, mv->destination, why);
                vmms_vm_move_in_doubt(mv->vm, mv->destination, why);
        } else {
                g_message("Move-VM '%s' to %s failed: %s", mv->vm->def.name, mv->destination, why);
                vmms_vm_move_abort(mv->vm, code, why);
        }
        move_clear_row(mv);
        link_close(&mv->link);
}

static void move_succeed(Move *mv)
{
        VmmsCall *call = vmms_vm_move_take_call(mv->vm);
        Vmms__V1__MoveVmResult *out = NULL;
        int64_t now = g_get_monotonic_time();
        VmmsError error = {0};

        mv->ended = true;
        mv->phase = "completed";
        if (call)
                out = progress_new(mv, call, NULL);
        g_message("Move-VM '%s' to %s: %" G_GUINT64_FORMAT " bytes, downtime %" G_GINT64_FORMAT
                  " ms, total %" G_GINT64_FORMAT " ms (%s migration)",
                  mv->vm->def.name, mv->destination, mv->sent, (now - mv->paused_us) / 1000,
                  (now - mv->started_us) / 1000, mv->live ? "live" : "quick");
        g_message("Move-VM '%s' steps (ms):%s; paused at %.1f, %u rounds", mv->vm->def.name,
                  mv->timeline.steps->str, (double)(mv->paused_us - mv->started_us) / 1000.0, mv->round);
        move_stop_stream(mv);
        move_unregister(mv, "completed", NULL);
        vmms_vm_move_finish(mv->vm); /* live: its worker here ends the VM */
        if (vmms_manager_vm_moved(mv->mig->m, mv->vm, mv->destination, &error) < 0) {
                g_warning("VM '%s' runs on %s now, but cannot be forgotten here: %s", mv->vm->def.name,
                          mv->destination, error.message);
                vmms_error_clear(&error);
        }
        mv->vm = NULL;
        move_clear_row(mv);
        if (call)
                vmms_call_return(call, &out->base);
        link_close(&mv->link);
}

static void on_commit_answer(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Move *mv = (Move *)link;
        g_autoptr(GVariantDict) d = NULL;
        g_autofree char *reason = NULL, *why = NULL;

        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE,
                          "the connection to %s was lost after it was told to commit: %s", mv->destination,
                          error);
                return;
        }
        if (type == VMMS_MIGRATION_COMMITTED) {
                timeline_mark(&mv->timeline, "committed");
                move_succeed(mv);
                return;
        }
        d = dict_from_payload(payload);
        if (type == VMMS_MIGRATION_FAILED && dict_string(d, "reason", 4096, &reason, &why)) {
                mv->commit_sent = false; /* it kept nothing of the VM and never ran it */
                move_fail(mv, VMMS_ERROR_FAILED_PRECONDITION, "%s could not resume it: %s", mv->destination,
                          reason);
        } else
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "%s answered %s to COMMIT%s%s", mv->destination,
                          frame_names[type], why ? ": " : "", why ? why : "");
}

static void on_commit_written(Link *link, const char *error)
{
        Move *mv = (Move *)link;

        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "cannot tell %s to commit: %s", mv->destination, error);
                return;
        }
        phase_reached(mv->mig, "commit-sent");
}

static void send_commit(Move *mv)
{
        GVariantDict commit;

        mv->commit_sent = true;
        g_variant_dict_init(&commit, NULL);
        link_write_dict(&mv->link, VMMS_MIGRATION_COMMIT, g_variant_dict_end(&commit), on_commit_written);
        link_read(&mv->link, on_commit_answer);
}

static void on_handed_over(const VmmsError *error, const char *host, void *userdata)
{
        Move *mv = userdata;

        mv->handing_over = false;
        if (!mv->link.closed && !mv->ended) {
                if (error) {
                        move_fail(mv, error->code, "%s", error->message);
                } else {
                        g_autofree char *what = g_strdup_printf("the cluster hands it to %s", host);

                        vmms_vm_record_event(mv->vm, "migration", what);
                        send_commit(mv);
                }
        }
        link_release(&mv->link);
}

static void live_maybe_done(Move *mv);

static void on_direct_handed_over(const VmmsError *error, const char *host, void *userdata)
{
        Move *mv = userdata;

        mv->handing_over = false;
        if (error) {
                g_autofree char *message = g_strdup_printf(
                        "Move-VM '%s': its engine moved it to %s, but the cluster could not hand it over: %s",
                        mv->vm->def.name, host ? host : mv->destination, error->message);

                g_warning("%s", message);
                vmms_manager_record_host_event(mv->mig->m, "migration", message);
        }
        if (!mv->link.closed && !mv->ended)
                live_maybe_done(mv);
        link_release(&mv->link);
}

/* A direct move's engine says the VM runs at the destination now: nothing here can take
 * it back, so this is the commit, recorded (and, in a cluster, the owner key handed over:
 * true while that runs) before DONE tells the destination. */
static bool direct_committed(Move *mv, const VmmsEngineMigration *m)
{
        VmmsCluster *cluster = vmms_manager_cluster(mv->mig->m);

        int r = vmms_store_move_set(vmms_manager_store(mv->mig->m), mv->vm_id, true, mv->destination,
                                    "committing");

        if (r < 0)
                g_warning("Move-VM '%s': cannot record the commit in the store: %s", mv->vm_id,
                          g_strerror(-r));
        mv->sent = m->bytes_sent;
        mv->stream_eof = true; /* the engine's stream, for move_total and DONE */
        mv->commit_sent = true;
        move_progress(mv, "committing", true);
        if (!cluster)
                return false;
        mv->handing_over = true;
        mv->link.pending++;
        vmms_cluster_hand_over(cluster, mv->vm, mv->destination, on_direct_handed_over, mv);
        return true;
}

/* After DONE of a direct move: the destination confirms (COMMITTED). The VM runs there
 * whatever it answers (its engine moved it; a destination that lost the link keeps a VM
 * that arrived), so the definition is given up here either way. */
static void on_direct_answer(Move *mv, VmmsMigrationFrame type, const char *error)
{
        if (type != VMMS_MIGRATION_COMMITTED || error) {
                g_autofree char *message = g_strdup_printf(
                        "Move-VM '%s': its engine moved it to %s, which did not confirm (%s); it runs there",
                        mv->vm->def.name, mv->destination, error ? error : frame_names[type]);

                g_warning("%s", message);
                vmms_manager_record_host_event(mv->mig->m, "migration", message);
        }
        move_succeed(mv);
}

static void on_ready_answer(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Move *mv = (Move *)link;
        g_autoptr(GVariantDict) d = NULL;
        g_autofree char *reason = NULL, *why = NULL;
        VmmsCluster *cluster = vmms_manager_cluster(mv->mig->m);
        int r;

        if (mv->direct) {
                on_direct_answer(mv, type, error);
                return;
        }
        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "the connection to %s was lost before it was ready: %s",
                          mv->destination, error);
                return;
        }
        if (type != VMMS_MIGRATION_READY) {
                d = dict_from_payload(payload);
                if (type == VMMS_MIGRATION_FAILED && dict_string(d, "reason", 4096, &reason, &why))
                        move_fail(mv, VMMS_ERROR_FAILED_PRECONDITION, "%s could not restore it: %s",
                                  mv->destination, reason);
                else
                        move_fail(mv, VMMS_ERROR_UNAVAILABLE, "%s answered %s to DONE%s%s", mv->destination,
                                  frame_names[type], why ? ": " : "", why ? why : "");
                return;
        }
        timeline_mark(&mv->timeline, "ready");
        phase_reached(mv->mig, "ready");
        /* A restart from here on must not start the VM here: recorded before COMMIT leaves. */
        r = vmms_store_move_set(vmms_manager_store(mv->mig->m), mv->vm_id, true, mv->destination,
                                "committing");
        if (r < 0) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "cannot record the commit in the store: %s",
                          g_strerror(-r));
                return;
        }
        timeline_mark(&mv->timeline, "store-committing");
        move_progress(mv, "committing", true);
        if (cluster) {
                /* The owner key goes to the destination first: if that fails, COMMIT never
                 * leaves and the VM continues here. Stop-VMMigration waits for the answer. */
                mv->handing_over = true;
                mv->link.pending++;
                vmms_cluster_hand_over(cluster, mv->vm, mv->destination, on_handed_over, mv);
                return;
        }
        send_commit(mv);
}

static void send_chunk(Move *mv);

static void on_chunk_written(Link *link, const char *error)
{
        Move *mv = (Move *)link;

        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "sending its state to %s failed: %s", mv->destination,
                          error);
                return;
        }
        if (mv->sent == MIN(mv->total, VMMS_MIGRATION_PAYLOAD_MAX))
                phase_reached(mv->mig, "sending");
        send_chunk(mv);
}

static void send_chunk(Move *mv)
{
        ssize_t n = read(mv->fd, mv->chunk + VMMS_MIGRATION_HEADER_SIZE, VMMS_MIGRATION_PAYLOAD_MAX);

        if (n < 0) {
                move_fail(mv, VMMS_ERROR_INTERNAL, "cannot read its saved state: %s", g_strerror(errno));
                return;
        }
        if (n == 0) {
                GVariantDict d;

                g_variant_dict_init(&d, NULL);
                g_variant_dict_insert(&d, "bytes", "t", mv->sent);
                link_write_dict(&mv->link, VMMS_MIGRATION_DONE, g_variant_dict_end(&d), NULL);
                move_progress(mv, "restoring", true);
                link_read(&mv->link, on_ready_answer);
                return;
        }
        mv->sent += (uint64_t)n;
        move_progress(mv, "sending", false);
        link_write_in_place(&mv->link, VMMS_MIGRATION_STATE, mv->chunk, (uint32_t)n, on_chunk_written);
}

/* After the engine's exit has been handled in full (a restart must not race it). */
static gboolean on_vm_saved_idle(gpointer userdata)
{
        Move *mv = userdata;
        g_autofree char *path = NULL;
        struct stat st;

        if (mv->deferred) {
                g_autofree char *why = g_steal_pointer(&mv->deferred);

                move_fail(mv, mv->deferred_code, "%s", why);
        }
        if (mv->ended) {
                link_release(&mv->link);
                return G_SOURCE_REMOVE;
        }
        path = vmms_vm_saved_path(mv->vm);
        mv->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (mv->fd < 0 || fstat(mv->fd, &st) < 0) {
                move_fail(mv, VMMS_ERROR_INTERNAL, "cannot read its saved state %s: %s", path,
                          g_strerror(errno));
                link_release(&mv->link);
                return G_SOURCE_REMOVE;
        }
        mv->total = (uint64_t)st.st_size;
        mv->chunk = g_malloc(VMMS_MIGRATION_HEADER_SIZE + VMMS_MIGRATION_PAYLOAD_MAX);
        mv->sending_us = g_get_monotonic_time();
        move_progress(mv, "sending", true);
        send_chunk(mv);
        link_release(&mv->link);
        return G_SOURCE_REMOVE;
}

static void on_vm_saved(VmmsVm *vm, const VmmsError *error, void *userdata)
{
        Move *mv = userdata;

        (void)vm;
        mv->saving = false;
        if (error) {
                g_autofree char *why = g_steal_pointer(&mv->deferred);

                if (why)
                        move_fail(mv, mv->deferred_code, "%s", why); /* the VM runs on */
                else
                        move_fail(mv, error->code, "%s", error->message);
                link_release(&mv->link);
                return;
        }
        g_idle_add(on_vm_saved_idle, mv); /* keeps the save's pending count */
}

static void write_begin(Move *mv, const char *mode)
{
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "mode", "s", mode);
        link_write_dict(&mv->link, VMMS_MIGRATION_BEGIN, g_variant_dict_end(&d), NULL);
}

/* Quick: the VM stops running here now (the downtime starts), saved, then sent. */
static void move_begin_quick(Move *mv, const char *why)
{
        g_autofree char *message =
                g_strdup_printf("moving to %s as a quick migration (saved, sent, restored paused there, then "
                                "committed: the guest is paused for the whole transfer%s%s)",
                                mv->destination, why ? "; " : "", why ? why : "");

        vmms_vm_record_event(mv->vm, "migration", message);
        write_begin(mv, "quick");
        mv->paused_us = g_get_monotonic_time();
        mv->saving = true;
        mv->link.pending++; /* until on_vm_saved */
        move_progress(mv, "saving", true);
        vmms_vm_move_save(mv->vm, on_vm_saved, mv);
}

static void live_maybe_done(Move *mv)
{
        GVariantDict d;

        if (mv->ended || mv->done_sent || !mv->stream_eof || !mv->out_done)
                return;
        mv->done_sent = true;
        mv->total = mv->sent;
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "bytes", "t", mv->direct ? 0 : mv->sent); /* what crossed this link */
        link_write_dict(&mv->link, VMMS_MIGRATION_DONE, g_variant_dict_end(&d), NULL);
        move_progress(mv, "restoring", true);
        link_read(&mv->link, on_ready_answer);
}

static void stream_arm(Move *mv);

static void on_stream_chunk_written(Link *link, const char *error)
{
        Move *mv = (Move *)link;

        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "sending its memory to %s failed: %s", mv->destination,
                          error);
                return;
        }
        if (mv->sent <= VMMS_MIGRATION_PAYLOAD_MAX)
                phase_reached(mv->mig, "sending");
        if (!mv->ended)
                stream_arm(mv);
}

static gboolean on_stream_readable(gint fd, GIOCondition condition, gpointer userdata)
{
        Move *mv = userdata;
        ssize_t n = read(fd, mv->chunk + VMMS_MIGRATION_HEADER_SIZE, VMMS_MIGRATION_PAYLOAD_MAX);

        (void)condition;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return G_SOURCE_CONTINUE;
        mv->stream_source = 0;
        if (n < 0) {
                move_fail(mv, VMMS_ERROR_INTERNAL, "cannot read its worker's stream: %s", g_strerror(errno));
        } else if (n == 0) {
                mv->stream_eof = true;
                timeline_mark(&mv->timeline, "stream-end");
                live_maybe_done(mv);
        } else {
                if (mv->sent == 0)
                        timeline_mark(&mv->timeline, "first-data");
                mv->sent += (uint64_t)n;
                move_progress(mv, "sending", false);
                link_write_in_place(&mv->link, VMMS_MIGRATION_STATE, mv->chunk, (uint32_t)n,
                                    on_stream_chunk_written);
        }
        link_release(&mv->link);
        return G_SOURCE_REMOVE;
}

static void stream_arm(Move *mv)
{
        mv->link.pending++;
        mv->stream_source =
                g_unix_fd_add(mv->stream_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_stream_readable, mv);
}

static void on_live_event(VmmsVm *vm, const VmmsEngineMigration *m, void *userdata)
{
        Move *mv = userdata;

        (void)vm;
        if (mv->ended)
                return;
        switch (m->kind) {
        case VMMS_ENGINE_MIGRATION_PROGRESS:
                if (mv->direct)
                        mv->sent = m->bytes_sent;
                mv->round = m->round;
                mv->remaining = m->bytes_remaining;
                mv->dirty_rate = m->dirty_bytes_per_s;
                mv->bandwidth = m->bandwidth_bytes_per_s;
                mv->throttle = m->throttle_percent;
                move_progress(mv, "sending", false);
                break;
        case VMMS_ENGINE_MIGRATION_SENT: {
                /* The downtime began when the worker paused the VPs (its clock is this host's). */
                int64_t ago_us = g_get_real_time() - (int64_t)(m->paused_unix_ns / 1000);

                mv->paused_us = g_get_monotonic_time() - MAX(ago_us, 0);
                mv->round = m->round;
                mv->remaining = 0;
                mv->throttle = m->throttle_percent;
                mv->out_done = true;
                if (mv->direct && direct_committed(mv, m))
                        break; /* DONE once the cluster handed it over */
                timeline_mark(&mv->timeline, "worker-sent");
                live_maybe_done(mv);
                break;
        }
        case VMMS_ENGINE_MIGRATION_FAILED:
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "its worker could not send it: %s",
                          m->reason && *m->reason ? m->reason : "no reason given");
                break;
        default:
                break;
        }
}

static void on_live_started(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata)
{
        Move *mv = userdata;
        g_autofree char *message = NULL;

        (void)vm;
        mv->saving = false;
        if (mv->deferred) {
                g_autofree char *why = g_steal_pointer(&mv->deferred);

                move_fail(mv, mv->deferred_code, "%s", why);
        } else if (unsupported) {
                move_stop_stream(mv);
                move_begin_quick(mv, error ? error->message : "this engine cannot move it live");
        } else if (error) {
                move_fail(mv, error->code, "%s", error->message);
        } else {
                mv->live = true;
                timeline_mark(&mv->timeline, "worker-started");
                message = g_strdup_printf(
                        "moving to %s live (pre-copy while it runs%s; maximum downtime %u ms)",
                        mv->destination, mv->direct ? ", by its engine" : "", mv->max_downtime_ms);
                vmms_vm_record_event(mv->vm, "migration", message);
                write_begin(mv, mv->direct ? "direct" : "live");
                mv->chunk = g_malloc(VMMS_MIGRATION_HEADER_SIZE + VMMS_MIGRATION_PAYLOAD_MAX);
                mv->sending_us = g_get_monotonic_time();
                move_progress(mv, "sending", true);
                if (!mv->direct) /* direct: nothing crosses this link but the frames */
                        stream_arm(mv);
        }
        link_release(&mv->link);
}

/* Live when the engine can (a socketpair: the worker writes one end, we relay the
 * other); quick otherwise. */
static void move_begin_transfer(Move *mv)
{
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                g_autofree char *why = g_strdup_printf("no socket for a live stream: %s", g_strerror(errno));

                move_begin_quick(mv, why);
                return;
        }
        g_unix_set_fd_nonblocking(sv[0], TRUE, NULL);
        mv->stream_fd = sv[0];
        mv->saving = true;
        mv->link.pending++; /* until on_live_started */
        vmms_vm_move_live(mv->vm, sv[1], mv->max_downtime_ms, on_live_started, on_live_event, mv);
        close(sv[1]);
}

/* Direct: the VM's engine moves it to where the destination's ACCEPT says, its memory
 * going to the host this link reached. */
static void move_begin_direct(Move *mv, GVariantDict *d)
{
        VmmsEngineDirectTarget target = {0};
        g_autoptr(GSocketConnectable) address = g_network_address_parse(mv->destination, 0, NULL);
        g_autofree char *why = NULL;

        if (!dict_string(d, "direct-uri", 4096, &target.uri, &why) ||
            !dict_string(d, "direct-console", 4096, &target.console_path, &why)) {
                move_fail(mv, VMMS_ERROR_FAILED_PRECONDITION, "%s cannot take a %s VM: %s", mv->destination,
                          mv->vm->def.engine, why);
                vmms_engine_direct_target_clear(&target);
                return;
        }
        mv->direct = true;
        mv->saving = true;
        mv->link.pending++; /* until on_live_started */
        vmms_vm_move_direct(mv->vm, &target, g_network_address_get_hostname(G_NETWORK_ADDRESS(address)),
                            mv->max_downtime_ms, on_live_started, on_live_event, mv);
        vmms_engine_direct_target_clear(&target);
}

static void on_offer_answer(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Move *mv = (Move *)link;
        g_autoptr(GVariantDict) d = NULL;
        g_autofree char *reason = NULL, *why = NULL;
        int r;

        if (error) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "%s did not answer the offer: %s", mv->destination,
                          error);
                return;
        }
        if (type == VMMS_MIGRATION_ACCEPT) {
                timeline_mark(&mv->timeline, "offer");
                /* Recorded before anything changes here, so a restart knows to settle it. */
                r = vmms_store_move_set(vmms_manager_store(mv->mig->m), mv->vm_id, true, mv->destination,
                                        "sending");
                if (r < 0) {
                        move_fail(mv, VMMS_ERROR_UNAVAILABLE, "cannot record the move in the store: %s",
                                  g_strerror(-r));
                        return;
                }
                mv->row = true;
                timeline_mark(&mv->timeline, "store-sending");
                phase_reached(mv->mig, "accepted");
                if (mv->ended) /* cancelled while stopped at the phase */
                        return;
                d = dict_from_payload(payload);
                if (vmms_vm_moves_direct(mv->vm))
                        move_begin_direct(mv, d);
                else
                        move_begin_transfer(mv);
                return;
        }
        d = dict_from_payload(payload);
        if (type == VMMS_MIGRATION_REFUSE && dict_string(d, "reason", 4096, &reason, &why))
                move_fail(mv, VMMS_ERROR_FAILED_PRECONDITION, "%s refused it: %s", mv->destination, reason);
        else
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "%s answered %s to the offer%s%s", mv->destination,
                          frame_names[type], why ? ": " : "", why ? why : "");
}
static GVariant *offer_new(VmmsMigration *mig, const VmmsVm *vm, bool compare_only)
{
        const VmmsVmDefinition *def = &vm->def;
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "id", "s", def->id);
        g_variant_dict_insert(&d, "name", "s", def->name);
        g_variant_dict_insert(&d, "vps", "u", def->processor.count);
        g_variant_dict_insert(&d, "reserve", "u", def->processor.reserve);
        g_variant_dict_insert(&d, "maximum", "u", def->processor.maximum);
        g_variant_dict_insert(&d, "weight", "u", def->processor.relative_weight);
        g_variant_dict_insert(&d, "dynamic", "b", def->memory.dynamic_memory_enabled);
        g_variant_dict_insert(&d, "startup", "t", def->memory.startup_bytes);
        g_variant_dict_insert(&d, "minimum", "t", def->memory.minimum_bytes);
        g_variant_dict_insert(&d, "maximum-bytes", "t", def->memory.maximum_bytes);
        g_variant_dict_insert(&d, "buffer", "u", def->memory.buffer);
        g_variant_dict_insert(&d, "priority", "u", def->memory.priority);
        g_variant_dict_insert(&d, "paging", "t", def->memory.paging_bytes);
        g_variant_dict_insert(&d, "goal-seeking", "b", def->memory.goal_seeking);
        g_variant_dict_insert(&d, "highly-available", "b", def->highly_available);
        g_variant_dict_insert(&d, "workload", "s", def->workload ? def->workload : "");
        g_variant_dict_insert(&d, "boot-args", "s", def->boot_args ? def->boot_args : "");
        g_variant_dict_insert(&d, "notes", "s", def->notes ? def->notes : "");
        g_variant_dict_insert(&d, "auto-start", "u", (uint32_t)def->automatic_start_action);
        g_variant_dict_insert(&d, "created", "x", def->created_unix_ms);
        g_variant_dict_insert(&d, "engine", "s", def->engine ? def->engine : MIGRATION_ENGINE);
        g_variant_dict_insert(&d, "needs", "t", MAX(def->memory.startup_bytes, vm->figures.assigned_bytes));
        offer_add_processor(mig, vm, &d);
        if (compare_only)
                g_variant_dict_insert(&d, "compare-only", "b", TRUE);
        return g_variant_dict_end(&d);
}

/* HELLO: who this host is, as a move and a compare both greet the destination. */
static GVariant *hello_new(VmmsMigration *mig)
{
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "version", "u", (uint32_t)VMMS_MIGRATION_VERSION);
        g_variant_dict_insert(&d, "host", "s", mig->host_name);
        g_variant_dict_insert(&d, "engine", "s", MIGRATION_ENGINE);
        g_variant_dict_insert(&d, "guest-abi", "u", (uint32_t)HV_ABI_VERSION);
        return g_variant_dict_end(&d);
}

/* A TLS connection over `conn` with this host's certificate and CA given at
 * construction: g_tls_{client,server}_connection_new would load the system's trust
 * store first (twice, on every connection: a quarter of a second of the main loop's
 * time on a loaded host) only for set_database to replace it. */
static GIOStream *tls_connection_new(GType type, GError **error, const char *first_property, ...)
{
        GTlsConnection *tls;
        va_list ap;

        va_start(ap, first_property);
        tls = G_TLS_CONNECTION(g_initable_new_valist(type, first_property, ap, NULL, error));
        va_end(ap);
        if (!tls)
                return NULL;
        g_signal_connect(tls, "accept-certificate", G_CALLBACK(on_accept_certificate), NULL);
        return G_IO_STREAM(tls);
}

/* The client side of TLS over `conn` to `destination`, presenting this host's
 * certificate and verifying the peer's against the CA; the link owns it. */
static bool link_tls_client_new(Link *link, VmmsMigration *mig, GSocketConnection *conn,
                                const char *destination, GError **error)
{
        g_autoptr(GSocketConnectable) identity = g_network_address_parse(destination, 0, NULL);
        GIOStream *tls =
                tls_connection_new(g_tls_backend_get_client_connection_type(g_tls_backend_get_default()),
                                   error, "base-io-stream", conn, "server-identity", identity, "certificate",
                                   mig->cert, "database", mig->ca, NULL);

        if (!tls)
                return false;
        link->tls = tls;
        return true;
}

static void on_hello_written(Link *link, const char *error)
{
        Move *mv = (Move *)link;

        if (error)
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "cannot greet %s: %s", mv->destination, error);
        else
                link_write_dict(link, VMMS_MIGRATION_OFFER, offer_new(mv->mig, mv->vm, false), NULL);
}

static void on_handshake_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Move *mv = userdata;
        g_autoptr(GError) error = NULL;
        g_auto(VmmsCaller) peer = {0};

        if (!g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), result, &error)) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "TLS with %s failed: %s", mv->destination,
                          error->message);
                link_release(&mv->link);
                return;
        }
        timeline_mark(&mv->timeline, "tls");
        peer_caller(G_TLS_CONNECTION(source), &peer);
        if (!mv->ended && !vmms_access_migration_peer(mv->mig->access, &peer)) {
                move_fail(mv, VMMS_ERROR_PERMISSION_DENIED,
                          "%s presents %s, which is not in this host's [access] migration-peers",
                          mv->destination, peer.description);
        } else if (!mv->ended) {
                /* The two frames are written one after the other: OFFER once HELLO is out. */
                link_write_dict(&mv->link, VMMS_MIGRATION_HELLO, hello_new(mv->mig), on_hello_written);
                link_read(&mv->link, on_offer_answer);
        }
        link_release(&mv->link);
}

static void on_connected(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Move *mv = userdata;
        g_autoptr(GError) error = NULL;
        g_autoptr(GSocketConnection) conn = NULL;

        conn = g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(source), result, &error);
        if (!conn) {
                move_fail(mv, VMMS_ERROR_UNAVAILABLE, "cannot connect to %s: %s", mv->destination,
                          error->message);
                link_release(&mv->link);
                return;
        }
        if (mv->ended) {
                link_release(&mv->link);
                return;
        }
        timeline_mark(&mv->timeline, "connect");
        (void)g_socket_set_option(g_socket_connection_get_socket(conn), SOL_SOCKET, SO_SNDBUF,
                                  LINK_SOCKET_BUFFER_BYTES, NULL);
        if (!link_tls_client_new(&mv->link, mv->mig, conn, mv->destination, &error)) {
                move_fail(mv, VMMS_ERROR_INTERNAL, "cannot set up TLS: %s", error->message);
                link_release(&mv->link);
                return;
        }
        g_tls_connection_handshake_async(G_TLS_CONNECTION(mv->link.tls), G_PRIORITY_DEFAULT, mv->link.cancel,
                                         on_handshake_done, mv); /* keeps the connect's pending count */
}

void vmms_migration_move(VmmsMigration *mig, VmmsVm *vm, const char *destination, uint32_t max_downtime_ms,
                         VmmsCall *call)
{
        g_autoptr(GSocketConnectable) parsed = NULL;
        g_autoptr(GSocketClient) client = NULL;
        g_autoptr(GError) error = NULL;
        Move *mv;

        parsed = destination && *destination ? g_network_address_parse(destination, 0, &error) : NULL;
        if (!parsed || g_network_address_get_port(G_NETWORK_ADDRESS(parsed)) == 0) {
                vmms_call_fail(
                        call, VMMS_ERROR_INVALID_ARGUMENT,
                        "cannot move VM '%s': destination '%s' is not HOST:PORT (its --migration-listen)",
                        vm->def.name, destination ? destination : "");
                return;
        }
        if (max_downtime_ms > MAX_DOWNTIME_LIMIT_MS) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT,
                               "cannot move VM '%s': a maximum downtime of %u ms is out of range 0-%u ms",
                               vm->def.name, max_downtime_ms, MAX_DOWNTIME_LIMIT_MS);
                return;
        }
        if (g_strcmp0(vm->def.engine, MIGRATION_ENGINE) != 0 && !vmms_vm_moves_direct(vm)) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot move VM '%s': it runs on the %s engine, which cannot migrate it",
                               vm->def.name, vm->def.engine);
                return;
        }
        if (!vmms_vm_move_begin(vm, call))
                return;
        mv = g_new0(Move, 1);
        mv->mig = mig;
        mv->vm = vm;
        g_strlcpy(mv->vm_id, vm->def.id, sizeof(mv->vm_id));
        mv->fd = -1;
        mv->stream_fd = -1;
        mv->destination = g_strdup(destination);
        mv->max_downtime_ms = max_downtime_ms ? max_downtime_ms : MAX_DOWNTIME_DEFAULT_MS;
        mv->started_us = g_get_monotonic_time();
        timeline_mark(&mv->timeline, "start");
        mv->phase = "connecting";
        mv->watchers = g_ptr_array_new();
        mv->link.cancel = g_cancellable_new();
        mv->link.free_fn = move_free;
        mv->link.pending = 1; /* the connect, then the handshake */
        g_hash_table_replace(mig->moves, mv->vm_id, mv);
        vm->move_percent = 0;
        client = g_socket_client_new();
        g_socket_client_set_timeout(client, IO_TIMEOUT_S);
        g_socket_client_connect_to_host_async(client, destination, 0, mv->link.cancel, on_connected, mv);
}

static void on_watch_cancel(VmmsCall *call, void *op_data)
{
        Move *mv = op_data;

        g_ptr_array_remove(mv->watchers, call);
        link_release(&mv->link);
}

void vmms_migration_watch(VmmsMigration *mig, VmmsVm *vm, VmmsCall *call)
{
        Move *mv = g_hash_table_lookup(mig->moves, vm->def.id);

        if (!mv) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s' is not being moved",
                               vm->def.name);
                return;
        }
        g_ptr_array_add(mv->watchers, call);
        mv->link.pending++; /* until the stream ends or its client goes */
        vmms_call_set_cancel(call, on_watch_cancel, mv);
        vmms_call_send(call, &progress_new(mv, call, NULL)->base);
}

typedef struct CancelWait {
        VmmsMigration *mig;
        char vm_id[37];
        VmmsCall *call;
} CancelWait;

/* Stop-VMMigration answers once the VM is back (its restart from the saved state done). */
static gboolean on_cancel_poll(gpointer userdata)
{
        CancelWait *w = userdata;
        VmmsVm *vm = vmms_manager_lookup(w->mig->m, w->vm_id, NULL);

        if (vm && (vm->job || g_hash_table_contains(w->mig->moves, w->vm_id)))
                return G_SOURCE_CONTINUE;
        if (vm)
                vm->ctx->reply(vm, w->call, vm->ctx->reply_data);
        else
                vmms_call_fail(w->call, VMMS_ERROR_NOT_FOUND, "VM %s is gone", w->vm_id);
        g_free(w);
        return G_SOURCE_REMOVE;
}

void vmms_migration_cancel(VmmsMigration *mig, VmmsVm *vm, VmmsCall *call)
{
        Move *mv = g_hash_table_lookup(mig->moves, vm->def.id);
        CancelWait *w;

        if (!mv) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot stop the migration of VM '%s': it is not being moved", vm->def.name);
                return;
        }
        if (mv->commit_sent || mv->handing_over) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot stop the migration of VM '%s': %s %s", vm->def.name,
                               mv->commit_sent ? "it has been told to commit it:"
                                               : "the cluster is handing it to",
                               mv->destination);
                return;
        }
        vmms_vm_record_event(vm, "migration", "Stop-VMMigration: cancelling the move");
        mv->cancelled = true;
        move_fail(mv, VMMS_ERROR_FAILED_PRECONDITION, "the move to %s was cancelled (Stop-VMMigration)",
                  mv->destination);
        w = g_new0(CancelWait, 1);
        w->mig = mig;
        g_strlcpy(w->vm_id, vm->def.id, sizeof(w->vm_id));
        w->call = call;
        g_timeout_add(POLL_MS, on_cancel_poll, w);
}

/* ---- The destination: the listener ---- */

typedef struct Incoming {
        Link link; /* first */
        VmmsMigration *mig;
        char *peer;   /* the source's certificate, for events */
        char *source; /* its host name from HELLO */
        bool hello, accepted, done;
        bool begun;        /* BEGIN came */
        bool compare_only; /* Compare-VM's OFFER: a compatibility check, never a move */
        bool arriving;     /* in mig->arriving */
        bool live;         /* the stream goes to the VM's worker (stream_conn), not to tmp_path */
        bool direct;       /* nothing is streamed: the VM's engine brings it (vmms-engine.h) */
        GIOStream *stream_conn;
        GBytes *writing; /* the STATE payload being written to the worker */
        gsize written;   /* of it */
        bool row;        /* its 'in' row is in the store */
        bool committed;  /* COMMIT arrived and was recorded: the VM is this host's */
        bool dropping;   /* the VM received is being killed and removed */
        bool drop_answer;
        char *drop_why;
        VmmsVmDefinition def;
        char *tmp_path;
        int fd;
        uint64_t received;
        uint64_t limit;
        guint poll_id;
        Timeline timeline;
} Incoming;

static void incoming_free(Link *link)
{
        Incoming *in = (Incoming *)link;

        link_clear(link);
        if (in->arriving)
                g_hash_table_remove(in->mig->arriving, in->def.id);
        if (in->fd >= 0)
                close(in->fd);
        if (in->tmp_path)
                (void)unlink(in->tmp_path);
        g_free(in->tmp_path);
        /* No VM of the move is left here (or it is this host's now): the row is spent. */
        if (in->row && !vmms_manager_lookup(in->mig->m, in->def.id, NULL))
                (void)vmms_store_move_clear(vmms_manager_store(in->mig->m), in->def.id);
        g_free(in->drop_why);
        if (in->stream_conn)
                (void)g_io_stream_close(in->stream_conn, NULL, NULL);
        g_clear_object(&in->stream_conn);
        g_clear_pointer(&in->writing, g_bytes_unref);
        g_free(in->peer);
        g_free(in->source);
        vmms_vm_definition_clear(&in->def);
        timeline_clear(&in->timeline);
        g_free(in);
}

static void incoming_drop(Incoming *in, const char *why, bool answer);

static const char *incoming_source(const Incoming *in)
{
        return in->source ? in->source : in->peer ? in->peer : "a peer";
}

/* Ends the incoming move, discarding what was received, with a host event. */
static void incoming_discard(Incoming *in, const char *why)
{
        g_autofree char *message = NULL;

        if (in->link.closed || in->dropping)
                return;
        if (in->live) {
                /* The VM exists here already (its worker reads the stream): it goes too. */
                incoming_drop(in, why, false);
                return;
        }
        message = g_strdup_printf("discarded an incoming move%s%s%s from %s: %s", in->def.name ? " of '" : "",
                                  in->def.name ? in->def.name : "", in->def.name ? "'" : "",
                                  in->source ? in->source
                                  : in->peer ? in->peer
                                             : "a peer",
                                  why);
        g_message("%s", message);
        vmms_manager_record_host_event(in->mig->m, "migration", message);
        link_close(&in->link);
}

static void on_answer_written(Link *link, const char *error)
{
        if (error)
                incoming_discard((Incoming *)link, error);
}

static void on_final_written(Link *link, const char *error)
{
        (void)error;
        link_close(link);
}

static void incoming_refuse_full(Incoming *in, VmmsMigrationFrame type, const char *why,
                                 GPtrArray *differences);

/* Answers REFUSE or FAILED naming `why`, then closes. */
static void incoming_refuse(Incoming *in, VmmsMigrationFrame type, const char *why)
{
        incoming_refuse_full(in, type, why, NULL);
}

/* REFUSE naming `why` and the processor's differences (a(sss), when there are any). */
static void incoming_refuse_differences(Incoming *in, const char *why, GPtrArray *differences)
{
        incoming_refuse_full(in, VMMS_MIGRATION_REFUSE, why, differences);
}

/* Compare-VM's answer when it would accept: ACCEPT, then the connection ends. */
static void incoming_compared(Incoming *in)
{
        GVariantDict d;

        g_message("compared VM '%s' from %s: it could move here", in->def.name, in->source);
        g_variant_dict_init(&d, NULL);
        link_write_dict(&in->link, VMMS_MIGRATION_ACCEPT, g_variant_dict_end(&d), on_final_written);
}

static void incoming_refuse_full(Incoming *in, VmmsMigrationFrame type, const char *why,
                                 GPtrArray *differences)
{
        g_autofree char *message =
                in->compare_only
                        ? g_strdup_printf("compared VM '%s' from %s: it could not move here: %s",
                                          in->def.name ? in->def.name : "?", incoming_source(in), why)
                        : g_strdup_printf("refused an incoming move%s%s%s from %s: %s",
                                          in->def.name ? " of '" : "", in->def.name ? in->def.name : "",
                                          in->def.name ? "'" : "", incoming_source(in), why);
        GVariantDict d;

        g_message("%s", message);
        vmms_manager_record_host_event(in->mig->m, "migration", message);
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "reason", "s", why);
        if (differences && differences->len)
                g_variant_dict_insert_value(&d, "differences",
                                            vmms_compat_differences_to_variant(differences));
        link_write_dict(&in->link, type, g_variant_dict_end(&d), on_final_written);
}

static bool offer_parse(GVariantDict *d, VmmsVmDefinition *def, uint64_t *ret_needs, char **ret_error)
{
        g_autofree char *id = NULL;
        uint32_t auto_start = 0;
        gboolean dynamic = FALSE, compatibility = FALSE, goal_seeking = FALSE, highly_available = FALSE;
        VmmsError error = {0};

        vmms_vm_definition_init_defaults(def);
        g_clear_pointer(&def->workload, g_free);
        g_clear_pointer(&def->boot_args, g_free);
        g_clear_pointer(&def->notes, g_free);
        g_clear_pointer(&def->name, g_free);
        if (!dict_string(d, "id", 36, &id, ret_error) ||
            !dict_string(d, "name", 1024, &def->name, ret_error) ||
            !dict_string(d, "workload", 1024, &def->workload, ret_error) ||
            !dict_string(d, "boot-args", 65536, &def->boot_args, ret_error) ||
            !dict_string(d, "notes", 65536, &def->notes, ret_error) ||
            !dict_get(d, "vps", "u", &def->processor.count, ret_error) ||
            !dict_get(d, "reserve", "u", &def->processor.reserve, ret_error) ||
            !dict_get(d, "maximum", "u", &def->processor.maximum, ret_error) ||
            !dict_get(d, "weight", "u", &def->processor.relative_weight, ret_error) ||
            !dict_get(d, "dynamic", "b", &dynamic, ret_error) ||
            !dict_get(d, "startup", "t", &def->memory.startup_bytes, ret_error) ||
            !dict_get(d, "minimum", "t", &def->memory.minimum_bytes, ret_error) ||
            !dict_get(d, "maximum-bytes", "t", &def->memory.maximum_bytes, ret_error) ||
            !dict_get(d, "buffer", "u", &def->memory.buffer, ret_error) ||
            !dict_get(d, "priority", "u", &def->memory.priority, ret_error) ||
            !dict_get(d, "paging", "t", &def->memory.paging_bytes, ret_error) ||
            !dict_get(d, "auto-start", "u", &auto_start, ret_error) ||
            !dict_get(d, "created", "x", &def->created_unix_ms, ret_error) ||
            !dict_get(d, "needs", "t", ret_needs, ret_error) ||
            !dict_get(d, "processor-compatibility", "b", &compatibility, ret_error))
                return false;
        def->processor.compatibility_for_migration = compatibility;
        if (!g_uuid_string_is_valid(id)) {
                *ret_error = g_strdup_printf("the offered id '%s' is not a UUID", id);
                return false;
        }
        if (auto_start >= VMMS_AUTO_START_COUNT) {
                *ret_error = g_strdup_printf("the offered automatic start action %u is unknown", auto_start);
                return false;
        }
        g_strlcpy(def->id, id, sizeof(def->id));
        def->memory.dynamic_memory_enabled = dynamic;
        /* Optional: a host from before goal seeking does not offer it (off); one that
         * offers it must send a boolean, as every other key. */
        if (g_variant_dict_contains(d, "goal-seeking") &&
            !dict_get(d, "goal-seeking", "b", &goal_seeking, ret_error))
                return false;
        def->memory.goal_seeking = goal_seeking;
        if (g_variant_dict_contains(d, "highly-available") &&
            !dict_get(d, "highly-available", "b", &highly_available, ret_error))
                return false;
        def->highly_available = highly_available;
        def->automatic_start_action = auto_start;
        g_free(def->engine);
        def->engine = NULL;
        /* Optional: a host from before direct moves offers bundled VMs only. */
        if (g_variant_dict_contains(d, "engine") && !dict_string(d, "engine", 64, &def->engine, ret_error))
                return false;
        if (!def->engine)
                def->engine = g_strdup(MIGRATION_ENGINE);
        def->state = VMMS_VM_SAVED;
        if (!vmms_vm_name_valid(def->name, &error) || !vmms_vm_processor_valid(&def->processor, &error) ||
            !vmms_vm_memory_valid(&def->memory, &error) ||
            !vmms_vm_workload_valid(def->workload, def->boot_args, def->notes, &error)) {
                *ret_error = g_strdup_printf("the offered definition is not valid: %s", error.message);
                vmms_error_clear(&error);
                return false;
        }
        return true;
}

/* What this host checks before it accepts: NULL, or why not. */
static char *offer_check(Incoming *in, uint64_t needs)
{
        VmmsManager *m = in->mig->m;
        const Vmms__Hv__Counters *sample = vmms_manager_last_sample(m);
        g_autoptr(GArray) engines = vmms_manager_engines(m);
        uint64_t reserve = vmms_manager_config(m)->memory_reserve, free_bytes;
        bool engine_ok = false;
        const char *engine_why = NULL;

        for (guint i = 0; i < engines->len; i++) {
                VmmsEngineInfo *e = &g_array_index(engines, VmmsEngineInfo, i);

                if (g_strcmp0(e->name, in->def.engine) == 0) {
                        engine_ok = e->available;
                        engine_why = e->why_not;
                }
        }
        if (!vmms_manager_engine(m, in->def.engine))
                return g_strdup_printf("it has no %s engine", in->def.engine);
        if (!engine_ok)
                return g_strdup_printf("its %s engine cannot run VMs now (%s)", in->def.engine,
                                       g_strcmp0(in->def.engine, MIGRATION_ENGINE) == 0 || !engine_why
                                               ? vmms_manager_hypervisor_status(m)
                                               : engine_why);
        if (vmms_manager_lookup(m, in->def.name, NULL))
                return g_strdup_printf("a VM named '%s' already exists there", in->def.name);
        if (vmms_manager_lookup(m, in->def.id, NULL))
                return g_strdup_printf("a VM with id %s already exists there", in->def.id);
        if (!sample)
                return g_strdup_printf("its hypervisor has not reported its memory pool yet (%s)",
                                       vmms_manager_hypervisor_status(m));
        free_bytes = sample->pool_total_bytes > sample->pool_used_bytes + reserve
                             ? sample->pool_total_bytes - sample->pool_used_bytes - reserve
                             : 0;
        if (needs > free_bytes) {
                g_autofree char *need = vmms_format_bytes(needs), *have = vmms_format_bytes(free_bytes);

                return g_strdup_printf("the VM needs %s of memory but its pool has %s free", need, have);
        }
        return NULL;
}

static void on_incoming_frame(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error);

/* Waits until the VM received is gone or has ended, removes it, then answers FAILED
 * (or just closes). A VM that cannot be removed leaves the source in doubt instead. */
/* The newest error the VM received recorded (its worker's refusal of the stream or the
 * state, naming what was wrong), to go with FAILED: the VM and its events go next. */
static char *incoming_vm_error(VmmsManager *m, const VmmsVm *vm)
{
        g_autoptr(GPtrArray) events = NULL;

        if (vmms_store_event_list(vmms_manager_store(m), vm->def.id, 0, 5, true, &events) < 0)
                return NULL;
        for (guint i = events->len; i > 0; i--) {
                const VmmsEventRecord *e = events->pdata[i - 1];

                if (g_strcmp0(e->kind, "error") == 0)
                        return g_strdup(e->message);
        }
        return NULL;
}

static gboolean on_drop_poll(gpointer userdata)
{
        Incoming *in = userdata;
        VmmsManager *m = in->mig->m;
        VmmsVm *vm = vmms_manager_lookup(m, in->def.id, NULL);
        g_autofree char *message = NULL, *worker_why = NULL;
        VmmsError error = {0};

        if (vm && (vm->job || vmms_vm_is_live(vm)))
                return G_SOURCE_CONTINUE;
        in->poll_id = 0;
        worker_why = vm ? incoming_vm_error(m, vm) : NULL;
        if (worker_why) {
                char *why = g_strdup_printf("%s: %s", in->drop_why, worker_why);

                g_free(in->drop_why);
                in->drop_why = why;
        }
        message = g_strdup_printf("discarded an incoming move of '%s' from %s: %s", in->def.name,
                                  incoming_source(in), in->drop_why);
        if (vm && vmms_manager_vm_remove(m, vm, &error) < 0) {
                g_autofree char *doubt =
                        g_strdup_printf("%s; it cannot be removed (%s): the source %s keeps its copy Saved: "
                                        "Start-VM on one host, Remove-VM on the other",
                                        in->drop_why, error.message, incoming_source(in));

                vmms_error_clear(&error);
                vmms_vm_record_event(vm, "error", doubt);
                link_close(&in->link);
        } else {
                g_message("%s", message);
                vmms_manager_record_host_event(m, "migration", message);
                if (in->drop_answer && !in->link.closed) {
                        GVariantDict d;

                        g_variant_dict_init(&d, NULL);
                        g_variant_dict_insert(&d, "reason", "s", in->drop_why);
                        link_write_dict(&in->link, VMMS_MIGRATION_FAILED, g_variant_dict_end(&d),
                                        on_final_written);
                } else {
                        link_close(&in->link);
                }
        }
        link_release(&in->link);
        return G_SOURCE_REMOVE;
}

/* A direct move's VM arrived and runs here: its engine's migration is over, so the
 * source has nothing left to continue; it stays this host's whatever the link does. */
static void incoming_keep(Incoming *in, VmmsVm *vm, const char *why)
{
        g_autofree char *message = g_strdup_printf("kept VM '%s', which its engine moved here from %s (%s)",
                                                   in->def.name, incoming_source(in), why);

        g_message("%s", message);
        vmms_manager_record_host_event(in->mig->m, "migration", message);
        vmms_vm_move_commit(vm, incoming_source(in), NULL, NULL);
        (void)vmms_store_move_clear(vmms_manager_store(in->mig->m), in->def.id);
        in->row = false;
        link_close(&in->link);
}

/* The VM received must not run here: it is killed (it never ran: it was restored
 * paused) and removed; with `answer`, FAILED tells the source to continue it. */
static void incoming_drop(Incoming *in, const char *why, bool answer)
{
        VmmsVm *vm = vmms_manager_lookup(in->mig->m, in->def.id, NULL);

        if (in->dropping)
                return;
        if (in->direct && vm && !vm->job && vm->def.state == VMMS_VM_MIGRATING) {
                incoming_keep(in, vm, why);
                return;
        }
        in->dropping = true;
        in->drop_why = g_strdup(why);
        in->drop_answer = answer;
        if (in->committed) {
                /* Back to 'receiving': a restart must not resume what is being dropped. */
                (void)vmms_store_move_set(vmms_manager_store(in->mig->m), in->def.id, false,
                                          incoming_source(in), "receiving");
                in->committed = false;
        }
        if (!answer)
                g_cancellable_cancel(in->link.cancel); /* nothing more is read or written */
        if (vm) {
                vmms_vm_move_watch_restore(vm, NULL, NULL);
                vmms_vm_move_discard(vm, why);
        }
        if (in->poll_id) {
                g_source_remove(in->poll_id);
                link_release(&in->link);
        }
        in->link.pending++;
        in->poll_id = g_timeout_add(POLL_MS, on_drop_poll, in);
}

static void on_incoming_link_lost(Incoming *in, const char *error)
{
        g_autofree char *why = g_strdup_printf("the source was lost before it committed: %s", error);

        incoming_drop(in, why, false);
}

static void on_committed_written(Link *link, const char *error)
{
        (void)error; /* the VM is this host's either way */
        link_close(link);
}

static void on_resumed(VmmsVm *vm, const VmmsError *error, void *userdata)
{
        Incoming *in = userdata;
        g_autofree char *message = NULL;
        GVariantDict d;

        (void)vm;
        if (error) {
                g_autofree char *why = g_strdup_printf("it could not be resumed here: %s", error->message);

                incoming_drop(in, why, true);
                link_release(&in->link);
                return;
        }
        timeline_mark(&in->timeline, "resumed");
        phase_reached(in->mig, "resumed");
        /* The source's downtime ends with COMMITTED: it goes first. */
        g_variant_dict_init(&d, NULL);
        link_write_dict(&in->link, VMMS_MIGRATION_COMMITTED, g_variant_dict_end(&d), on_committed_written);
        message = g_strdup_printf("moved here from %s", incoming_source(in));
        vmms_vm_record_event(vm, "moved", message);
        (void)vmms_store_move_clear(vmms_manager_store(in->mig->m), in->def.id);
        in->row = false;
        timeline_mark(&in->timeline, "store-cleared");
        g_message("incoming move of '%s' steps (ms):%s", in->def.name, in->timeline.steps->str);
        link_release(&in->link);
}

/* The VM is this host's: recorded, then resumed (moved direct: only recorded Running),
 * then COMMITTED. */
static void incoming_commit(Incoming *in, VmmsVm *vm)
{
        int r = vmms_store_move_set(vmms_manager_store(in->mig->m), in->def.id, false, incoming_source(in),
                                    "committed");

        if (r < 0) {
                g_autofree char *why = g_strdup_printf("cannot record the commit: %s", g_strerror(-r));

                incoming_drop(in, why, true);
                return;
        }
        in->committed = true;
        timeline_mark(&in->timeline, "store-committed");
        phase_reached(in->mig, "commit-received");
        in->link.pending++;
        vmms_vm_move_commit(vm, incoming_source(in), on_resumed, in);
}

static void on_commit_frame(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Incoming *in = (Incoming *)link;
        VmmsVm *vm = vmms_manager_lookup(in->mig->m, in->def.id, NULL);

        (void)payload;
        if (in->dropping)
                return;
        if (error) {
                on_incoming_link_lost(in, error);
                return;
        }
        timeline_mark(&in->timeline, "commit");
        if (type != VMMS_MIGRATION_COMMIT) {
                g_autofree char *why = g_strdup_printf("it sent %s instead of COMMIT", frame_names[type]);

                incoming_drop(in, why, false);
                return;
        }
        if (!vm || vm->job || vm->def.state != VMMS_VM_MIGRATING) {
                g_autofree char *why =
                        g_strdup_printf("the VM restored here is %s (see Get-VMEvent %s)",
                                        vm ? vmms_vm_state_to_string(vm->def.state) : "gone", in->def.name);

                incoming_drop(in, why, true);
                return;
        }
        incoming_commit(in, vm);
}

static void on_ready_written(Link *link, const char *error)
{
        Incoming *in = (Incoming *)link;

        if (error) {
                on_incoming_link_lost(in, error);
                return;
        }
        phase_reached(in->mig, "ready-sent");
}

/* The VM is restored paused (Migrating, no job): READY. Failed (Saved or Off, no job)
 * or too slow (START_TIMEOUT_MS): dropped, FAILED. */
static gboolean on_restore_settled(gpointer userdata)
{
        Incoming *in = userdata;
        VmmsVm *vm = vmms_manager_lookup(in->mig->m, in->def.id, NULL);
        g_autofree char *why = NULL;
        GVariantDict d;

        in->poll_id = 0;
        if (vm)
                vmms_vm_move_watch_restore(vm, NULL, NULL);
        if (vm && !vm->job && vm->def.state == VMMS_VM_MIGRATING && in->direct) {
                incoming_commit(in, vm); /* it runs here already: no READY, no COMMIT */
        } else if (vm && !vm->job && vm->def.state == VMMS_VM_MIGRATING) {
                timeline_mark(&in->timeline, "restored");
                g_variant_dict_init(&d, NULL);
                link_write_dict(&in->link, VMMS_MIGRATION_READY, g_variant_dict_end(&d), on_ready_written);
                link_read(&in->link, on_commit_frame);
        } else {
                why = g_strdup_printf("it could not be restored from the received state (it is %s; see "
                                      "Get-VMEvent %s there)",
                                      vm ? vmms_vm_state_to_string(vm->def.state) : "gone", in->def.name);
                incoming_drop(in, why, true);
        }
        link_release(&in->link);
        return G_SOURCE_REMOVE;
}

/* From the VM's job end: READY (or FAILED) next, out of the VM's own bookkeeping. */
static void on_restore_ended(VmmsVm *vm, void *userdata)
{
        Incoming *in = userdata;

        (void)vm;
        g_source_remove(in->poll_id);
        in->poll_id = g_idle_add_full(G_PRIORITY_HIGH, on_restore_settled, in, NULL);
}

/* Waits for the start from the received state to end (no polling: the worker's
 * report that it holds the VM paused ends it), at most START_TIMEOUT_MS. */
static void incoming_wait_restore(Incoming *in, VmmsVm *vm)
{
        in->link.pending++;
        if (vm && vm->job) {
                vmms_vm_move_watch_restore(vm, on_restore_ended, in);
                in->poll_id = g_timeout_add(START_TIMEOUT_MS, on_restore_settled, in);
        } else {
                in->poll_id = g_idle_add_full(G_PRIORITY_HIGH, on_restore_settled, in, NULL);
        }
}

static void incoming_done(Incoming *in, GVariantDict *d)
{
        g_autofree char *saved = NULL, *why = NULL;
        uint64_t bytes = 0;
        VmmsError error = {0};
        VmmsVm *vm = NULL;

        if (!dict_get(d, "bytes", "t", &bytes, &why)) {
                incoming_discard(in, why);
                return;
        }
        if (bytes != in->received) {
                g_autofree char *message = g_strdup_printf("the source says it sent %" G_GUINT64_FORMAT
                                                           " bytes, %" G_GUINT64_FORMAT " arrived",
                                                           bytes, in->received);
                if (in->live)
                        incoming_drop(in, message, false);
                else
                        incoming_discard(in, message);
                return;
        }
        if (in->live) {
                /* The worker sees the stream end; it applies the rest and holds the VM paused
                 * (direct: the VM arrives through its engine, now or in a moment). */
                if (in->stream_conn)
                        (void)g_io_stream_close(in->stream_conn, NULL, NULL);
                timeline_mark(&in->timeline, "done");
                in->done = true;
                incoming_wait_restore(in, vmms_manager_lookup(in->mig->m, in->def.id, NULL));
                return;
        }
        if (fsync(in->fd) < 0 || close(in->fd) < 0) {
                in->fd = -1;
                incoming_refuse(in, VMMS_MIGRATION_FAILED, g_strerror(errno));
                return;
        }
        in->fd = -1;
        in->def.state = VMMS_VM_SAVED;
        if (vmms_manager_vm_add(in->mig->m, &in->def, &vm, &error) < 0) {
                incoming_refuse(in, VMMS_MIGRATION_FAILED, error.message);
                vmms_error_clear(&error);
                return;
        }
        saved = vmms_vm_saved_path(vm);
        if (rename(in->tmp_path, saved) < 0) {
                g_autofree char *message =
                        g_strdup_printf("cannot keep the state as %s: %s", saved, g_strerror(errno));

                (void)vmms_manager_vm_remove(in->mig->m, vm, NULL);
                incoming_refuse(in, VMMS_MIGRATION_FAILED, message);
                return;
        }
        g_clear_pointer(&in->tmp_path, g_free);
        in->done = true;
        vmms_vm_move_receive(vm);
        incoming_wait_restore(in, vm);
}

/* Hands the STATE payload to the worker as fast as it takes it (non-blocking writes,
 * as the link's), then reads the next frame. */
static gboolean on_stream_in_writable(GObject *stream, gpointer userdata)
{
        Incoming *in = userdata;
        g_autoptr(GError) error = NULL;
        gsize size = 0;
        const uint8_t *data = g_bytes_get_data(in->writing, &size);

        while (in->written < size && !in->link.closed) {
                gssize n = g_pollable_output_stream_write_nonblocking(G_POLLABLE_OUTPUT_STREAM(stream),
                                                                      data + in->written, size - in->written,
                                                                      in->link.cancel, &error);

                if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                        return G_SOURCE_CONTINUE;
                if (n < 0)
                        break;
                in->written += (gsize)n;
        }
        g_clear_pointer(&in->writing, g_bytes_unref);
        if (error) {
                if (!in->link.closed && !in->dropping) {
                        g_autofree char *why = g_strdup_printf(
                                "its worker stopped taking the stream (%s; see Get-VMEvent %s there)",
                                error->message, in->def.name);

                        incoming_drop(in, why, true);
                }
        } else if (!in->link.closed && !in->dropping) {
                link_read(&in->link, on_incoming_frame);
        }
        link_release(&in->link);
        return G_SOURCE_REMOVE;
}

/* BEGIN: quick (the saved file goes to tmp_path, as opened at ACCEPT) or live (the VM
 * is created now and its worker reads the stream as it arrives). */
static void incoming_begin(Incoming *in, GVariantDict *d)
{
        VmmsManager *m = in->mig->m;
        g_autofree char *mode = NULL, *why = NULL;
        g_autoptr(GSocket) sock = NULL;
        g_autoptr(GError) error = NULL;
        VmmsError verror = {0};
        VmmsVm *vm = NULL;
        int sv[2];

        if (!dict_string(d, "mode", 16, &mode, &why)) {
                incoming_discard(in, why);
                return;
        }
        if (g_strcmp0(mode, "quick") == 0) {
                in->begun = true;
                link_read(&in->link, on_incoming_frame);
                return;
        }
        if (g_strcmp0(mode, "direct") == 0 && vmms_manager_engine(m, in->def.engine)->ops->migrate_direct) {
                in->def.state = VMMS_VM_OFF;
                if (vmms_manager_vm_add(m, &in->def, &vm, &verror) < 0) {
                        incoming_refuse(in, VMMS_MIGRATION_FAILED, verror.message);
                        vmms_error_clear(&verror);
                        return;
                }
                in->live = in->begun = in->direct = true;
                vmms_vm_move_receive_direct(vm);
                link_read(&in->link, on_incoming_frame);
                return;
        }
        if (g_strcmp0(mode, "live") != 0) {
                why = g_strdup_printf("it asked for an unknown kind of move '%s'", mode);
                incoming_discard(in, why);
                return;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                why = g_strdup_printf("no socket for the stream: %s", g_strerror(errno));
                incoming_refuse(in, VMMS_MIGRATION_FAILED, why);
                return;
        }
        sock = g_socket_new_from_fd(sv[0], &error);
        if (!sock) {
                close(sv[0]);
                close(sv[1]);
                incoming_refuse(in, VMMS_MIGRATION_FAILED, error->message);
                return;
        }
        in->def.state = VMMS_VM_OFF;
        if (vmms_manager_vm_add(m, &in->def, &vm, &verror) < 0) {
                close(sv[1]);
                incoming_refuse(in, VMMS_MIGRATION_FAILED, verror.message);
                vmms_error_clear(&verror);
                return;
        }
        /* Nothing goes to a file: the partial-file name is not needed. */
        if (in->fd >= 0)
                close(in->fd);
        in->fd = -1;
        if (in->tmp_path)
                (void)unlink(in->tmp_path);
        g_clear_pointer(&in->tmp_path, g_free);
        in->stream_conn = G_IO_STREAM(g_socket_connection_factory_create_connection(sock));
        in->live = in->begun = true;
        vmms_vm_move_receive_live(vm, sv[1]);
        timeline_mark(&in->timeline, "begin");
        link_read(&in->link, on_incoming_frame);
}

/* A VM whose engine moves it itself: ACCEPT says where it goes. false: refused. */
static bool incoming_add_direct_target(Incoming *in, GVariantDict *answer)
{
        VmmsEngine *engine = vmms_manager_engine(in->mig->m, in->def.engine);
        VmmsEngineDirectTarget target = {0};
        g_autofree char *why = NULL;

        if (g_strcmp0(in->def.engine, MIGRATION_ENGINE) == 0)
                return true;
        if (!engine->ops->migrate_direct_target) {
                why = g_strdup_printf("its %s engine cannot take a VM moved live", in->def.engine);
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                return false;
        }
        if (!engine->ops->migrate_direct_target(engine, in->def.id, &target, &why)) {
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                return false;
        }
        g_variant_dict_insert(answer, "direct-uri", "s", target.uri);
        g_variant_dict_insert(answer, "direct-console", "s", target.console_path);
        vmms_engine_direct_target_clear(&target);
        return true;
}

static void incoming_offer(Incoming *in, GVariantDict *d)
{
        VmmsManager *m = in->mig->m;
        g_autofree char *why = NULL;
        uint64_t needs = 0;
        GVariantDict answer;
        g_autoptr(GPtrArray) differences = NULL;
        gboolean compare_only = FALSE;
        Incoming *other;

        in->compare_only = g_variant_dict_lookup(d, "compare-only", "b", &compare_only) && compare_only;
        if (!offer_parse(d, &in->def, &needs, &why)) {
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                return;
        }
        /* One move of a VM (by id or by name) at a time: the first one in flight owns it. */
        other = g_hash_table_lookup(in->mig->arriving, in->def.id);
        if (!other) {
                GHashTableIter iter;

                g_hash_table_iter_init(&iter, in->mig->arriving);
                while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&other) &&
                       g_strcmp0(other->def.name, in->def.name) != 0)
                        other = NULL;
        }
        if (other) {
                why = g_strdup_printf("a move of VM '%s' (%s) from %s is already arriving there",
                                      other->def.name, other->def.id, incoming_source(other));
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                return;
        }
        why = offer_check_processor(m, d, in->def.processor.compatibility_for_migration, &differences);
        if (why) {
                incoming_refuse_differences(in, why, differences);
                return;
        }
        why = offer_check(in, needs);
        if (why) {
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                return;
        }
        if (in->compare_only) {
                incoming_compared(in);
                return;
        }
        in->limit = MAX(in->def.memory.maximum_bytes, in->def.memory.startup_bytes) + STATE_OVERHEAD_BYTES;
        /* Recorded before anything of the VM exists here, so a restart discards it. */
        if (vmms_store_move_set(vmms_manager_store(m), in->def.id, false, incoming_source(in), "receiving") <
            0) {
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, "its store cannot record the move");
                return;
        }
        in->row = true;
        {
                g_autofree char *name = g_strconcat(in->def.id, ".vmrs.incoming", NULL);

                in->tmp_path = g_build_filename(vmms_manager_config(m)->state_dir, "saved", name, NULL);
        }
        in->fd = open(in->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (in->fd < 0) {
                g_autofree char *message =
                        g_strdup_printf("cannot create %s: %s", in->tmp_path, g_strerror(errno));

                g_clear_pointer(&in->tmp_path, g_free); /* someone else's */
                incoming_refuse(in, VMMS_MIGRATION_REFUSE, message);
                return;
        }
        in->accepted = true;
        in->arriving = true;
        g_hash_table_insert(in->mig->arriving, in->def.id, in);
        timeline_mark(&in->timeline, "offer");
        g_variant_dict_init(&answer, NULL);
        if (!incoming_add_direct_target(in, &answer)) {
                g_variant_dict_clear(&answer);
                return;
        }
        link_write_dict(&in->link, VMMS_MIGRATION_ACCEPT, g_variant_dict_end(&answer), on_answer_written);
        link_read(&in->link, on_incoming_frame);
}

static void on_incoming_frame(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Incoming *in = (Incoming *)link;
        g_autoptr(GVariantDict) d = NULL;
        g_autofree char *why = NULL;
        uint32_t version = 0, abi = 0;
        g_autofree char *engine = NULL;

        if (error) {
                incoming_discard(in, error);
                return;
        }
        if (type != VMMS_MIGRATION_STATE)
                d = dict_from_payload(payload);
        if (!in->hello && type == VMMS_MIGRATION_HELLO) {
                if (!dict_get(d, "version", "u", &version, &why) ||
                    !dict_string(d, "host", HOST_NAME_MAX_LEN, &in->source, &why) ||
                    !dict_string(d, "engine", 64, &engine, &why) ||
                    !dict_get(d, "guest-abi", "u", &abi, &why)) {
                        incoming_discard(in, why);
                        return;
                }
                in->hello = true;
                if (version != VMMS_MIGRATION_VERSION)
                        why = g_strdup_printf(
                                "it speaks migration protocol version %u%s; this host speaks %u "
                                "(live or quick, restored paused, then committed)",
                                version,
                                version == 1   ? " (quick migration without a commit step)"
                                : version == 2 ? " (quick migration only, without BEGIN)"
                                               : "",
                                VMMS_MIGRATION_VERSION);
                else if (g_strcmp0(engine, MIGRATION_ENGINE) != 0)
                        why = g_strdup_printf("its engine is '%s'; this host moves %s VMs", engine,
                                              MIGRATION_ENGINE);
                else if (abi != HV_ABI_VERSION)
                        why = g_strdup_printf("processor not compatible: its guest ABI version is %u, "
                                              "this host's is %u",
                                              abi, HV_ABI_VERSION);
                if (why)
                        incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
                else
                        link_read(link, on_incoming_frame);
                return;
        }
        if (in->hello && !in->accepted && type == VMMS_MIGRATION_OFFER) {
                incoming_offer(in, d);
                return;
        }
        if (in->accepted && !in->begun && type == VMMS_MIGRATION_BEGIN) {
                incoming_begin(in, d);
                return;
        }
        if (in->begun && in->live && !in->dropping && type == VMMS_MIGRATION_STATE) {
                gsize n = g_bytes_get_size(payload);
                GSource *source;

                if (in->received == 0) {
                        timeline_mark(&in->timeline, "first-data");
                        phase_reached(in->mig, "receiving");
                }
                in->received += n;
                in->writing = g_bytes_ref(payload);
                in->written = 0;
                in->link.pending++;
                source = g_pollable_output_stream_create_source(
                        G_POLLABLE_OUTPUT_STREAM(g_io_stream_get_output_stream(in->stream_conn)),
                        in->link.cancel);
                g_source_set_callback(source, G_SOURCE_FUNC(on_stream_in_writable), in, NULL);
                g_source_attach(source, NULL);
                g_source_unref(source);
                return;
        }
        if (in->begun && !in->live && type == VMMS_MIGRATION_STATE) {
                gsize n = 0;
                const void *data = g_bytes_get_data(payload, &n);

                if (in->received + n > in->limit) {
                        incoming_discard(in, "it sent more state than the VM's memory can hold");
                        return;
                }
                if (n && write(in->fd, data, n) != (ssize_t)n) {
                        why = g_strdup_printf("cannot write %s: %s", in->tmp_path, g_strerror(errno));
                        incoming_refuse(in, VMMS_MIGRATION_FAILED, why);
                        return;
                }
                if (in->received == 0)
                        phase_reached(in->mig, "receiving");
                in->received += n;
                link_read(link, on_incoming_frame);
                return;
        }
        if (in->begun && type == VMMS_MIGRATION_DONE) {
                incoming_done(in, d);
                return;
        }
        why = g_strdup_printf("it sent %s out of order", frame_names[type]);
        incoming_discard(in, why);
}

static void on_incoming_handshake(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Incoming *in = userdata;
        g_autoptr(GError) error = NULL;
        g_auto(VmmsCaller) peer = {0};

        if (!g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), result, &error)) {
                g_autofree char *message = g_strdup_printf("refused a migration connection from %s: TLS: %s",
                                                           in->peer, error->message);

                g_message("%s", message);
                vmms_manager_record_host_event(in->mig->m, "migration", message);
                link_close(&in->link);
                link_release(&in->link);
                return;
        }
        timeline_mark(&in->timeline, "tls");
        peer_caller(G_TLS_CONNECTION(source), &peer);
        g_free(in->peer);
        in->peer = g_strdup(peer.description);
        if (!vmms_access_migration_peer(in->mig->access, &peer)) {
                g_autofree char *why =
                        g_strdup_printf("%s is not in its [access] migration-peers", peer.description);

                incoming_refuse(in, VMMS_MIGRATION_REFUSE, why);
        } else {
                link_read(&in->link, on_incoming_frame);
        }
        link_release(&in->link);
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn, GObject *source_object,
                            gpointer userdata)
{
        VmmsMigration *mig = userdata;
        g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(conn, NULL);
        g_autoptr(GError) error = NULL;
        Incoming *in = g_new0(Incoming, 1);
        GIOStream *tls;

        (void)service;
        (void)source_object;
        in->mig = mig;
        in->fd = -1;
        timeline_mark(&in->timeline, "start");
        in->link.cancel = g_cancellable_new();
        in->link.free_fn = incoming_free;
        in->link.pending = 1; /* the handshake */
        in->peer = remote && G_IS_INET_SOCKET_ADDRESS(remote)
                           ? g_inet_address_to_string(
                                     g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(remote)))
                           : g_strdup("an unknown address");
        g_socket_set_timeout(g_socket_connection_get_socket(conn), IO_TIMEOUT_S);
        (void)g_socket_set_option(g_socket_connection_get_socket(conn), SOL_SOCKET, SO_RCVBUF,
                                  LINK_SOCKET_BUFFER_BYTES, NULL);
        tls = tls_connection_new(g_tls_backend_get_server_connection_type(g_tls_backend_get_default()),
                                 &error, "base-io-stream", conn, "certificate", mig->cert, "database",
                                 mig->ca, "authentication-mode", G_TLS_AUTHENTICATION_REQUIRED, NULL);
        if (!tls) {
                g_warning("migration: cannot set up TLS for %s: %s", in->peer, error->message);
                in->link.pending = 0;
                in->link.closed = true;
                incoming_free(&in->link);
                return TRUE;
        }
        in->link.tls = tls;
        g_tls_connection_handshake_async(G_TLS_CONNECTION(tls), G_PRIORITY_DEFAULT, in->link.cancel,
                                         on_incoming_handshake, in);
        return TRUE;
}

/* ---- Compare-VM ----
 * The source's side of the compare-only exchange (vmms-migration.h): the VM is read
 * once, at the start (its offer and vector are copied), and not touched; the answer
 * is a report, not an error, whichever way the destination decides. */

typedef struct Compare {
        Link link; /* first: a Link* is a Compare* */
        VmmsMigration *mig;
        VmmsCall *call; /* NULL once answered or the client went away */
        char *destination;
        char *vm_id;
        GVariant *offer;
        VmmsCompatVector vector; /* the VM's here; engine NULL when hvd could not say */
} Compare;

static void compare_free(Link *link)
{
        Compare *c = (Compare *)link;

        link_clear(link);
        g_free(c->destination);
        g_free(c->vm_id);
        g_clear_pointer(&c->offer, g_variant_unref);
        vmms_compat_vector_clear(&c->vector);
        g_free(c);
}

static void on_compare_cancel(VmmsCall *call, void *op_data)
{
        Compare *c = op_data;

        (void)call;
        c->call = NULL;
        link_close(&c->link);
}

static void compare_fail(Compare *c, VmmsErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void compare_fail(Compare *c, VmmsErrorCode code, const char *fmt, ...)
{
        g_autofree char *why = NULL;
        VmmsCall *call = g_steal_pointer(&c->call);
        va_list ap;

        if (call) {
                va_start(ap, fmt);
                why = g_strdup_vprintf(fmt, ap);
                va_end(ap);
                vmms_call_set_cancel(call, NULL, NULL);
                vmms_call_fail(call, code, "cannot compare with %s: %s", c->destination, why);
        }
        link_close(&c->link);
}

static Vmms__V1__ProcessorCompatibilityVector *compare_vector_out(VmmsCall *call, const VmmsCompatVector *v)
{
        Vmms__V1__ProcessorCompatibilityVector *out =
                vmms_call_new0(call, Vmms__V1__ProcessorCompatibilityVector);

        vmms__v1__processor_compatibility_vector__init(out);
        out->engine = vmms_call_strdup(call, v->engine ? v->engine : "");
        out->engine_version = vmms_call_strdup(call, v->engine_version ? v->engine_version : "");
        out->cpu_model = vmms_call_strdup(call, v->cpu_model ? v->cpu_model : "");
        out->cpuid_hash = vmms_call_strdup(call, v->cpuid_hash ? v->cpuid_hash : "");
        out->guest_abi_version = v->guest_abi_version;
        out->protocol_version = v->protocol_version;
        out->normalized = v->normalized;
        return out;
}

static void compare_answer(Compare *c, bool compatible, const char *reason, GPtrArray *differences)
{
        VmmsCall *call = g_steal_pointer(&c->call);
        Vmms__V1__CompareVmResult *out;

        if (call) {
                out = vmms_call_new0(call, Vmms__V1__CompareVmResult);
                vmms__v1__compare_vm_result__init(out);
                out->vm_id = vmms_call_strdup(call, c->vm_id);
                out->destination_host = vmms_call_strdup(call, c->destination);
                out->compatible = compatible;
                out->reason = vmms_call_strdup(call, reason ? reason : "");
                out->source_vector = compare_vector_out(call, &c->vector);
                out->n_differences = differences ? differences->len : 0;
                out->differences =
                        vmms_call_alloc(call, sizeof(*out->differences) * (out->n_differences + 1));
                for (size_t i = 0; i < out->n_differences; i++) {
                        const VmmsCompatDifference *d = differences->pdata[i];
                        Vmms__V1__CompatibilityDifference *o =
                                vmms_call_new0(call, Vmms__V1__CompatibilityDifference);

                        vmms__v1__compatibility_difference__init(o);
                        o->field = vmms_call_strdup(call, d->field);
                        o->source = vmms_call_strdup(call, d->source);
                        o->destination = vmms_call_strdup(call, d->destination);
                        out->differences[i] = o;
                }
                vmms_call_set_cancel(call, NULL, NULL);
                vmms_call_return(call, &out->base);
        }
        link_close(&c->link);
}

static void on_compare_answer(Link *link, VmmsMigrationFrame type, GBytes *payload, const char *error)
{
        Compare *c = (Compare *)link;
        g_autoptr(GVariantDict) d = NULL;
        g_autoptr(GVariant) list = NULL;
        g_autoptr(GPtrArray) differences = NULL;
        g_autofree char *reason = NULL, *why = NULL;

        if (error) {
                compare_fail(c, VMMS_ERROR_UNAVAILABLE, "it did not answer: %s", error);
                return;
        }
        if (type == VMMS_MIGRATION_ACCEPT) {
                compare_answer(c, true, NULL, NULL);
                return;
        }
        d = dict_from_payload(payload);
        if (type != VMMS_MIGRATION_REFUSE || !dict_string(d, "reason", 4096, &reason, &why)) {
                compare_fail(c, VMMS_ERROR_UNAVAILABLE, "it answered %s%s%s", frame_names[type],
                             why ? ": " : "", why ? why : "");
                return;
        }
        list = g_variant_dict_lookup_value(d, "differences", NULL);
        if (list && !vmms_compat_differences_from_variant(list, &differences, &why)) {
                compare_fail(c, VMMS_ERROR_UNAVAILABLE, "%s", why);
                return;
        }
        compare_answer(c, false, reason, differences);
}

static void on_compare_hello_written(Link *link, const char *error)
{
        Compare *c = (Compare *)link;

        if (error)
                compare_fail(c, VMMS_ERROR_UNAVAILABLE, "cannot greet it: %s", error);
        else
                link_write(link, VMMS_MIGRATION_OFFER, g_variant_get_data(c->offer),
                           (uint32_t)g_variant_get_size(c->offer), NULL);
}

static void on_compare_handshake(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Compare *c = userdata;
        g_autoptr(GError) error = NULL;
        g_auto(VmmsCaller) peer = {0};

        if (!g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), result, &error)) {
                compare_fail(c, VMMS_ERROR_UNAVAILABLE, "TLS failed: %s", error->message);
        } else if (!c->link.closed) {
                peer_caller(G_TLS_CONNECTION(source), &peer);
                if (!vmms_access_migration_peer(c->mig->access, &peer)) {
                        compare_fail(c, VMMS_ERROR_PERMISSION_DENIED,
                                     "it presents %s, which is not in this host's [access] migration-peers",
                                     peer.description);
                } else {
                        link_write_dict(&c->link, VMMS_MIGRATION_HELLO, hello_new(c->mig),
                                        on_compare_hello_written);
                        link_read(&c->link, on_compare_answer);
                }
        }
        link_release(&c->link);
}

static void on_compare_connected(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Compare *c = userdata;
        g_autoptr(GError) error = NULL;
        g_autoptr(GSocketConnection) conn = NULL;

        conn = g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(source), result, &error);
        if (!conn || c->link.closed) {
                if (!conn)
                        compare_fail(c, VMMS_ERROR_UNAVAILABLE, "cannot connect: %s", error->message);
                link_release(&c->link);
                return;
        }
        if (!link_tls_client_new(&c->link, c->mig, conn, c->destination, &error)) {
                compare_fail(c, VMMS_ERROR_INTERNAL, "cannot set up TLS: %s", error->message);
                link_release(&c->link);
                return;
        }
        g_tls_connection_handshake_async(G_TLS_CONNECTION(c->link.tls), G_PRIORITY_DEFAULT, c->link.cancel,
                                         on_compare_handshake, c); /* keeps the connect's pending count */
}

void vmms_migration_compare(VmmsMigration *mig, VmmsVm *vm, const char *destination, VmmsCall *call)
{
        g_autoptr(GSocketConnectable) parsed = NULL;
        g_autoptr(GSocketClient) client = NULL;
        g_autofree char *why = NULL;
        Compare *c;

        parsed = destination && *destination ? g_network_address_parse(destination, 0, NULL) : NULL;
        if (!parsed || g_network_address_get_port(G_NETWORK_ADDRESS(parsed)) == 0) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT,
                               "cannot compare VM '%s': destination '%s' is not HOST:PORT (its "
                               "--migration-listen)",
                               vm->def.name, destination ? destination : "");
                return;
        }
        if (g_strcmp0(vm->def.engine, MIGRATION_ENGINE) != 0) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot compare VM '%s': it runs on the %s engine; only %s VMs can be moved",
                               vm->def.name, vm->def.engine, MIGRATION_ENGINE);
                return;
        }
        c = g_new0(Compare, 1);
        c->mig = mig;
        c->call = call;
        c->destination = g_strdup(destination);
        c->vm_id = g_strdup(vm->def.id);
        c->offer = g_variant_ref_sink(offer_new(mig, vm, true));
        why = local_vector(mig->m, vm->def.processor.compatibility_for_migration, &c->vector);
        if (why)
                g_message("Compare-VM '%s': %s", vm->def.name, why); /* the destination will say so too */
        c->link.cancel = g_cancellable_new();
        c->link.free_fn = compare_free;
        c->link.pending = 1; /* the connect, then the handshake */
        vmms_call_set_cancel(call, on_compare_cancel, c);
        client = g_socket_client_new();
        g_socket_client_set_timeout(client, IO_TIMEOUT_S);
        g_socket_client_connect_to_host_async(client, destination, 0, c->link.cancel, on_compare_connected,
                                              c);
}

/* ---- The object ---- */

typedef struct Leftover {
        VmmsMigration *mig;
        char vm_id[37];
        char *why;
} Leftover;

/* A VM an uncommitted incoming move left: removed once its worker has gone. */
static gboolean on_leftover_poll(gpointer userdata)
{
        Leftover *l = userdata;
        VmmsManager *m = l->mig->m;
        VmmsVm *vm = vmms_manager_lookup(m, l->vm_id, NULL);
        VmmsError error = {0};

        if (vm && (vm->job || vmms_vm_is_live(vm)))
                return G_SOURCE_CONTINUE;
        if (vm && vmms_manager_vm_remove(m, vm, &error) < 0) {
                g_warning("migration: cannot remove VM %s left by an incoming move: %s", l->vm_id,
                          error.message);
                vmms_error_clear(&error);
        } else {
                vmms_manager_record_host_event(m, "migration", l->why);
                (void)vmms_store_move_clear(vmms_manager_store(m), l->vm_id);
        }
        g_free(l->why);
        g_free(l);
        return G_SOURCE_REMOVE;
}

static void on_recovered_resume(VmmsVm *vm, const VmmsError *error, void *userdata)
{
        VmmsMigration *mig = userdata;

        if (error) {
                g_autofree char *message =
                        g_strdup_printf("the committed move could not resume it: %s", error->message);

                vmms_vm_record_event(vm, "error", message);
        }
        (void)vmms_store_move_clear(vmms_manager_store(mig->m), vm->def.id);
}

/* What a vmmsd stopped mid-move left in its store (vmms-migration.h, Restarts). */
static void recover_moves(VmmsMigration *mig)
{
        VmmsManager *m = mig->m;
        VmmsStore *store = vmms_manager_store(m);
        g_autoptr(GPtrArray) rows = NULL;

        if (vmms_store_move_list(store, &rows) < 0) {
                g_warning("migration: cannot read the moves in flight from the store");
                return;
        }
        for (guint i = 0; i < rows->len; i++) {
                const VmmsMoveRecord *row = rows->pdata[i];
                VmmsVm *vm = vmms_manager_lookup(m, row->vm_id, NULL);

                if (row->outgoing) {
                        if (vm)
                                vmms_vm_move_recover(vm, row->peer, g_strcmp0(row->phase, "committing") == 0);
                        (void)vmms_store_move_clear(store, row->vm_id);
                } else if (g_strcmp0(row->phase, "committed") == 0 && vm &&
                           vm->def.state == VMMS_VM_MIGRATING && vm->engine_data) {
                        /* Committed, not yet resumed: this host's now. */
                        vmms_vm_move_commit(vm, row->peer, on_recovered_resume, mig);
                } else if (g_strcmp0(row->phase, "committed") == 0 && vm) {
                        if (vm->def.state == VMMS_VM_MIGRATING)
                                vmms_vm_move_discard(vm, "its worker was gone after the move was committed");
                        (void)vmms_store_move_clear(store, row->vm_id);
                } else {
                        Leftover *l = g_new0(Leftover, 1);

                        l->mig = mig;
                        g_strlcpy(l->vm_id, row->vm_id, sizeof(l->vm_id));
                        l->why = g_strdup_printf("discarded an incoming move%s%s%s from %s: vmmsd restarted "
                                                 "before the source committed it",
                                                 vm ? " of '" : "", vm ? vm->def.name : "", vm ? "'" : "",
                                                 row->peer);
                        if (vm) {
                                vm->restart_pending = false; /* it must not start here */
                                vmms_vm_move_discard(vm, l->why);
                        }
                        g_timeout_add(POLL_MS, on_leftover_poll, l);
                }
        }
}

/* What a vmmsd killed mid-reception left: never a VM (it is created only once the
 * state is whole), only its partial file. */
static void discard_partial_receptions(VmmsManager *m)
{
        g_autofree char *dir = g_build_filename(vmms_manager_config(m)->state_dir, "saved", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d)))
                if (g_str_has_suffix(name, ".vmrs.incoming")) {
                        g_autofree char *path = g_build_filename(dir, name, NULL);
                        g_autofree char *message = g_strdup_printf(
                                "discarded %s: an incoming move this vmmsd did not finish", name);

                        (void)unlink(path);
                        vmms_manager_record_host_event(m, "migration", message);
                }
}

int vmms_migration_new(VmmsManager *m, VmmsAccess *access, const VmmsMigrationConfig *config,
                       VmmsMigration **ret, char **ret_error)
{
        g_autoptr(VmmsMigration) mig = g_new0(VmmsMigration, 1);
        g_autoptr(GError) error = NULL;
        g_autofree char *ca_path = NULL;

        mig->m = m;
        mig->access = access;
        mig->moves = g_hash_table_new(g_str_hash, g_str_equal);
        mig->arriving = g_hash_table_new(g_str_hash, g_str_equal);
        mig->stop_at = g_strdup(g_getenv("VMMS_MIGRATION_STOP_AT"));
        mig->host_name = g_strdup(config->host_name ? config->host_name : g_get_host_name());
        if (!config->tls_cert_path || !config->tls_key_path || !config->tls_ca_path) {
                *ret_error = g_strdup("moving VMs needs --tls-cert, --tls-key and --tls-ca (this host's "
                                      "certificate and the CA that signs every host's)");
                return -EINVAL;
        }
        mig->cert = g_tls_certificate_new_from_files(config->tls_cert_path, config->tls_key_path, &error);
        if (mig->cert) {
                /* GTlsFileDatabase verifies nothing against a relative path. */
                ca_path = g_canonicalize_filename(config->tls_ca_path, NULL);
                mig->ca = g_tls_file_database_new(ca_path, &error);
        }
        if (!mig->cert || !mig->ca) {
                *ret_error = g_strdup_printf("migration: cannot read TLS material: %s", error->message);
                return -EINVAL;
        }
        if (config->listen) {
                g_autoptr(GSocketConnectable) parsed = g_network_address_parse(config->listen, 0, &error);
                g_autoptr(GInetAddress) ip = NULL;
                g_autoptr(GSocketAddress) address = NULL;
                const char *host;
                guint16 port;

                if (!parsed) {
                        *ret_error = g_strdup_printf("--migration-listen '%s' is not HOST:PORT: %s",
                                                     config->listen, error->message);
                        return -EINVAL;
                }
                host = g_network_address_get_hostname(G_NETWORK_ADDRESS(parsed));
                port = g_network_address_get_port(G_NETWORK_ADDRESS(parsed));
                ip = g_ascii_strcasecmp(host, "localhost") == 0
                             ? g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4)
                             : g_inet_address_new_from_string(host);
                if (!ip || port == 0) {
                        *ret_error =
                                g_strdup_printf("--migration-listen '%s' is not IP:PORT", config->listen);
                        return -EINVAL;
                }
                address = g_inet_socket_address_new(ip, port);
                mig->service = g_socket_service_new();
                if (!g_socket_listener_add_address(G_SOCKET_LISTENER(mig->service), address,
                                                   G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, NULL,
                                                   &error)) {
                        *ret_error =
                                g_strdup_printf("--migration-listen %s: %s", config->listen, error->message);
                        return -EINVAL;
                }
                g_signal_connect(mig->service, "incoming", G_CALLBACK(on_incoming), mig);
                g_socket_service_start(mig->service);
        }
        discard_partial_receptions(m);
        recover_moves(mig);
        vmms_manager_set_migration(m, mig);
        *ret = g_steal_pointer(&mig);
        return 0;
}

void vmms_migration_free(VmmsMigration *mig)
{
        if (!mig)
                return;
        if (mig->service) {
                g_socket_service_stop(mig->service);
                g_socket_listener_close(G_SOCKET_LISTENER(mig->service));
                g_object_unref(mig->service);
        }
        if (mig->m)
                vmms_manager_set_migration(mig->m, NULL);
        g_clear_object(&mig->cert);
        g_clear_object(&mig->ca);
        g_free(mig->host_name);
        g_free(mig->stop_at);
        if (mig->moves)
                g_hash_table_unref(mig->moves);
        if (mig->arriving) {
                GHashTableIter iter;
                Incoming *in;

                g_hash_table_iter_init(&iter, mig->arriving);
                while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&in))
                        in->arriving = false; /* a link that outlives vmmsd's migration */
                g_hash_table_unref(mig->arriving);
        }
        g_free(mig);
}
