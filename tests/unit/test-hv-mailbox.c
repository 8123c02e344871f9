/* PostMessage and SignalEvent: the guest's arguments are checked, messages are copied
 * and reach the worker in order, signals are merged per connection id, and a full
 * mailbox pushes back on the guest without counting as an invalid call. */
#include <glib.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-hypercall.h"
#include "hv-vmbus.h"
#include "hv.h"

#define MiB (1ull << 20)
#define VISIBLE (4 * MiB)

typedef struct Delivered {
        HvEventKind kind;
        uint32_t connection_id;
        uint32_t len;
        uint8_t first;
} Delivered;

typedef struct Fixture {
        Hv hv;
        HvPartition *p;
        HvVp vp;
        GArray *delivered; /* Delivered */
        int refuse;        /* on_event answers -EAGAIN this many times */
} Fixture;

static int on_event(HvPartition *p, const HvEvent *event, void *userdata)
{
        Fixture *f = userdata;
        Delivered d = {.kind = event->kind};

        (void)p;
        if (f->refuse > 0) {
                f->refuse--;
                return -EAGAIN;
        }
        if (event->note) {
                d.connection_id = event->note->connection_id;
                d.len = event->note->len;
                d.first = event->note->len ? event->note->data[0] : 0;
        }
        g_array_append_val(f->delivered, d);
        return 0;
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
        (void)data;
        memset(f, 0, sizeof(*f));
        f->hv.main_context = g_main_context_new();
        f->hv.partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
        f->hv.engine = &hv_engine_unicorn_ops;
        f->hv.on_event = on_event;
        f->hv.on_event_userdata = f;
        g_assert_cmpint(hv_partition_new(&f->hv, "mail", 0, 1, VISIBLE, 2 * VISIBLE, &f->p), ==, 0);
        f->p->id = 1;
        g_hash_table_insert(f->hv.partitions, &f->p->id, f->p);
        f->vp.partition = f->p;
        f->delivered = g_array_new(FALSE, TRUE, sizeof(Delivered));
        for (uint32_t i = 0; i < HV_MESSAGE_PAYLOAD_MAX; i++)
                f->p->ram[0x3000 + i] = (uint8_t)i;
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        (void)data;
        while (g_main_context_iteration(f->hv.main_context, FALSE))
                ;
        g_hash_table_remove(f->hv.partitions, &f->p->id);
        hv_partition_free(f->p);
        g_hash_table_unref(f->hv.partitions);
        g_main_context_unref(f->hv.main_context);
        g_array_unref(f->delivered);
}

/* Runs the main thread's side until the mailbox is empty. */
static void deliver(Fixture *f)
{
        for (int i = 0; i < 100 && (f->p->mailbox.length > 0 || g_main_context_pending(f->hv.main_context));
             i++)
                g_main_context_iteration(f->hv.main_context, TRUE);
        g_assert_cmpuint(f->p->mailbox.length, ==, 0);
}

static int64_t call(Fixture *f, uint64_t code, uint64_t arg0, uint64_t arg1)
{
        HvVpExit exit = {0};
        int64_t r = hv_hypercall_dispatch(&f->vp, code, arg0, arg1, 0, &exit);

        g_assert_cmpint(exit.kind, ==, HV_EXIT_NONE);
        return r;
}

typedef struct ArgCase {
        const char *name;
        uint64_t code, arg0, arg1;
        int64_t expect;
        uint64_t invalid; /* invalid_hypercalls afterwards */
        uint32_t queued;  /* notes in the mailbox afterwards */
} ArgCase;

static const ArgCase arg_cases[] = {
        {"post_message_inside_ram_is_queued", HV_CALL_POST_MESSAGE, 0x3000, 16, 0, 0, 1},
        {"post_message_of_the_largest_payload_is_queued", HV_CALL_POST_MESSAGE, 0x3000,
         HV_MESSAGE_PAYLOAD_MAX, 0, 0, 1},
        {"post_message_above_the_payload_limit_is_refused", HV_CALL_POST_MESSAGE, 0x3000,
         HV_MESSAGE_PAYLOAD_MAX + 1, -HV_STATUS_INVALID_PARAMETER, 1, 0},
        {"post_message_of_nothing_is_refused", HV_CALL_POST_MESSAGE, 0x3000, 0, -HV_STATUS_INVALID_PARAMETER,
         1, 0},
        {"post_message_past_visible_ram_is_denied", HV_CALL_POST_MESSAGE, VISIBLE - 8, 16,
         -HV_STATUS_ACCESS_DENIED, 1, 0},
        {"post_message_in_unassigned_maximum_is_denied", HV_CALL_POST_MESSAGE, VISIBLE + 0x1000, 16,
         -HV_STATUS_ACCESS_DENIED, 1, 0},
        {"post_message_with_wrapping_address_is_denied", HV_CALL_POST_MESSAGE, UINT64_MAX - 4, 16,
         -HV_STATUS_ACCESS_DENIED, 1, 0},
        {"signal_event_is_queued", HV_CALL_SIGNAL_EVENT, 1, 0, 0, 0, 1},
        {"signal_event_for_connection_zero_is_refused", HV_CALL_SIGNAL_EVENT, 0, 0,
         -HV_STATUS_INVALID_PARAMETER, 1, 0},
        {"signal_event_above_32_bits_is_refused", HV_CALL_SIGNAL_EVENT, 1ull << 32, 0,
         -HV_STATUS_INVALID_PARAMETER, 1, 0},
};

static void test_arguments(Fixture *f, gconstpointer data)
{
        const ArgCase *tc = data;

        g_assert_cmpint(call(f, tc->code, tc->arg0, tc->arg1), ==, tc->expect);
        g_assert_cmpuint(atomic_load(&f->vp.invalid_hypercalls), ==, tc->invalid);
        g_assert_cmpuint(f->p->mailbox.length, ==, tc->queued);
}

static void test_message_is_copied_at_the_call(Fixture *f, gconstpointer data)
{
        (void)data;
        g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000 + 7, 20), ==, 0);
        memset(f->p->ram + 0x3000, 0xff, 64); /* the guest reuses its buffer at once */
        deliver(f);
        g_assert_cmpuint(f->delivered->len, ==, 1);
        g_assert_cmpint(g_array_index(f->delivered, Delivered, 0).kind, ==, HV_EVENT_GUEST_MESSAGE);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 0).len, ==, 20);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 0).first, ==, 7);
}

static void test_full_mailbox_pushes_back_without_counting_invalid(Fixture *f, gconstpointer data)
{
        (void)data;
        for (uint32_t i = 0; i < HV_MAILBOX_MESSAGES_MAX; i++)
                g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000, 8), ==, 0);
        g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000, 8), ==, -HV_STATUS_INSUFFICIENT_BUFFERS);
        g_assert_cmpuint(f->p->guest_messages, ==, HV_MAILBOX_MESSAGES_MAX);
        g_assert_cmpuint(f->p->guest_messages_refused, ==, 1);
        g_assert_cmpuint(atomic_load(&f->vp.invalid_hypercalls), ==, 0);
        deliver(f);
        g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000, 8), ==, 0); /* room again */
}

static void test_signals_are_merged_per_connection_id(Fixture *f, gconstpointer data)
{
        (void)data;
        for (int i = 0; i < 10; i++) {
                g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 1, 0), ==, 0);
                g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 2, 0), ==, 0);
        }
        g_assert_cmpuint(f->p->mailbox.length, ==, 2);
        g_assert_cmpuint(f->p->guest_signals, ==, 20);
        g_assert_cmpuint(f->p->guest_signals_coalesced, ==, 18);
        deliver(f);
        g_assert_cmpuint(f->delivered->len, ==, 2);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 0).connection_id, ==, 1);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 1).connection_id, ==, 2);
        g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 1, 0), ==, 0); /* delivered: a new one is queued */
        g_assert_cmpuint(f->p->mailbox.length, ==, 1);
}

static void test_distinct_pending_signals_are_bounded(Fixture *f, gconstpointer data)
{
        (void)data;
        for (uint32_t i = 1; i <= HV_MAILBOX_SIGNALS_MAX; i++)
                g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, i, 0), ==, 0);
        g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 1000, 0), ==, -HV_STATUS_INSUFFICIENT_BUFFERS);
        g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 1, 0), ==, 0); /* merged: still fine */
}

static void test_notes_reach_the_worker_in_order_after_a_full_socket(Fixture *f, gconstpointer data)
{
        (void)data;
        f->refuse = 2; /* the worker's socket is full twice */
        g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000 + 1, 8), ==, 0);
        g_assert_cmpint(call(f, HV_CALL_SIGNAL_EVENT, 5, 0), ==, 0);
        g_assert_cmpint(call(f, HV_CALL_POST_MESSAGE, 0x3000 + 2, 8), ==, 0);
        deliver(f);
        g_assert_cmpuint(f->delivered->len, ==, 3);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 0).first, ==, 1);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 1).connection_id, ==, 5);
        g_assert_cmpuint(g_array_index(f->delivered, Delivered, 2).first, ==, 2);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(arg_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-mailbox/%s", arg_cases[i].name);

                g_test_add(path, Fixture, &arg_cases[i], fixture_setup, test_arguments, fixture_teardown);
        }
#define ADD(name, fn) g_test_add("/hv-mailbox/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("message_is_copied_at_the_call", test_message_is_copied_at_the_call);
        ADD("full_mailbox_pushes_back_without_counting_invalid",
            test_full_mailbox_pushes_back_without_counting_invalid);
        ADD("signals_are_merged_per_connection_id", test_signals_are_merged_per_connection_id);
        ADD("distinct_pending_signals_are_bounded", test_distinct_pending_signals_are_bounded);
        ADD("notes_reach_the_worker_in_order_after_a_full_socket",
            test_notes_reach_the_worker_in_order_after_a_full_socket);
#undef ADD
        return g_test_run();
}
