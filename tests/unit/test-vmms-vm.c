/* The VM object's rules: every action in every state (allowed, or refused naming the
 * action, the VM and the state), and the job rules (one job at a time, racing
 * callers told what is in progress, a job ended by what the engine reports). The
 * engine here is the test's own: it records what the core asked and reports back
 * when the test says, so each step of a job can be looked at. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "vmms-engine.h"
#include "vmms-ops.h"
#include "vmms-vm.h"

/* ---- The state table ---- */

/* allowed[action] lists the states it is allowed in. */
static const struct {
        VmmsVmAction action;
        const VmmsVmState allowed[4];
        size_t n;
} expected[] = {
        {VMMS_ACTION_START, {VMMS_VM_OFF, VMMS_VM_SAVED}, 2},
        {VMMS_ACTION_STOP, {VMMS_VM_RUNNING, VMMS_VM_PAUSED}, 2},
        {VMMS_ACTION_PAUSE, {VMMS_VM_RUNNING}, 1},
        {VMMS_ACTION_RESUME, {VMMS_VM_PAUSED}, 1},
        {VMMS_ACTION_REMOVE, {VMMS_VM_OFF, VMMS_VM_SAVED}, 2},
        {VMMS_ACTION_SET_PROCESSOR_COUNT, {VMMS_VM_OFF}, 1},
        {VMMS_ACTION_SET_PROCESSOR_COMPATIBILITY, {VMMS_VM_OFF}, 1},
        {VMMS_ACTION_SET_STARTUP_MEMORY, {VMMS_VM_OFF}, 1},
        {VMMS_ACTION_SET_WORKLOAD, {VMMS_VM_OFF}, 1},
        {VMMS_ACTION_SAVE, {VMMS_VM_RUNNING, VMMS_VM_PAUSED}, 2},
        {VMMS_ACTION_MIGRATE, {VMMS_VM_RUNNING}, 1},
        {VMMS_ACTION_CHECKPOINT, {VMMS_VM_OFF, VMMS_VM_RUNNING, VMMS_VM_PAUSED}, 3},
        {VMMS_ACTION_RESTORE_CHECKPOINT, {VMMS_VM_OFF, VMMS_VM_RUNNING, VMMS_VM_PAUSED, VMMS_VM_SAVED}, 4},
        {VMMS_ACTION_SET_DEVICES, {VMMS_VM_OFF}, 1},
};

static void test_every_action_in_every_state_is_allowed_or_refused_by_name(void)
{
        g_assert_cmpuint(G_N_ELEMENTS(expected), ==, VMMS_ACTION_COUNT);
        for (size_t a = 0; a < G_N_ELEMENTS(expected); a++)
                for (int s = 0; s < VMMS_VM_STATE_COUNT; s++) {
                        VmmsError error = {0};
                        bool want = false, got;

                        for (size_t k = 0; k < expected[a].n; k++)
                                want = want || expected[a].allowed[k] == (VmmsVmState)s;
                        got = vmms_vm_action_allowed("web", (VmmsVmState)s, expected[a].action, &error);
                        g_assert_cmpint(got, ==, want);
                        if (want) {
                                g_assert_cmpint(error.code, ==, VMMS_OK);
                                continue;
                        }
                        g_assert_cmpint(error.code, ==, VMMS_ERROR_FAILED_PRECONDITION);
                        g_assert_nonnull(strstr(error.message, "'web'"));
                        g_assert_nonnull(strstr(error.message, vmms_vm_action_to_string(expected[a].action)));
                        g_assert_nonnull(strstr(error.message, vmms_vm_state_to_string((VmmsVmState)s)));
                        if (s == VMMS_VM_STARTING || s == VMMS_VM_STOPPING)
                                g_assert_nonnull(strstr(error.message, "try again"));
                        vmms_error_clear(&error);
                }
}

/* ---- Jobs, through a recording engine ---- */

typedef struct Recorder {
        VmmsEngine base;
        GString *log;
        VmmsEngineDoneFn pending;
        VmmsEngineSavedFn saved;
} Recorder;

static Recorder *rec(VmmsEngine *e)
{
        return (Recorder *)e;
}

static bool rec_available(VmmsEngine *e, char **ret_why)
{
        (void)e;
        (void)ret_why;
        return true;
}

static void rec_start(VmmsEngine *e, VmmsVm *vm)
{
        g_string_append_printf(rec(e)->log, "start%s;", vm->restore_path ? " from saved" : "");
}

static int rec_attach(VmmsEngine *e, VmmsVm *vm)
{
        (void)vm;
        g_string_append(rec(e)->log, "attach;");
        return -ENOENT;
}

static void rec_stop(VmmsEngine *e, VmmsVm *vm, bool turn_off, uint32_t timeout_ms)
{
        (void)vm;
        g_string_append_printf(rec(e)->log, "stop %s %u;", turn_off ? "off" : "ask", timeout_ms);
}

static void rec_kill(VmmsEngine *e, VmmsVm *vm)
{
        (void)vm;
        g_string_append(rec(e)->log, "kill;");
}

static void rec_pause(VmmsEngine *e, VmmsVm *vm, bool paused, VmmsEngineDoneFn done)
{
        (void)vm;
        g_string_append_printf(rec(e)->log, "%s;", paused ? "pause" : "resume");
        rec(e)->pending = done;
}

static void rec_set_processor(VmmsEngine *e, VmmsVm *vm, const VmmsProcessorSettings *p,
                              VmmsEngineDoneFn done)
{
        (void)vm;
        g_string_append_printf(rec(e)->log, "processor %u/%u/%u;", p->reserve, p->maximum,
                               p->relative_weight);
        rec(e)->pending = done;
}

static void rec_adjust_memory(VmmsEngine *e, VmmsVm *vm, int64_t delta, const char *reason)
{
        (void)vm;
        (void)reason;
        g_string_append_printf(rec(e)->log, "memory %" G_GINT64_FORMAT ";", delta);
}

static void rec_sample(VmmsEngine *e, VmmsVm *vm, VmmsVmFigures *ret)
{
        (void)e;
        (void)vm;
        *ret = (VmmsVmFigures){.cpu_usage_pct = 12.5, .assigned_bytes = 64ull << 20};
}

static void rec_release(VmmsEngine *e, VmmsVm *vm)
{
        (void)e;
        vm->engine_data = NULL;
}

static void rec_save(VmmsEngine *e, VmmsVm *vm, const char *path, bool keep_running, VmmsEngineSavedFn done)
{
        (void)vm;
        g_string_append_printf(rec(e)->log, "%s %s;", keep_running ? "checkpoint" : "save",
                               strrchr(path, '/') + 1);
        rec(e)->saved = done;
}

static const VmmsEngineOps recorder_ops = {
        .name = "recorder",
        .available = rec_available,
        .start = rec_start,
        .attach = rec_attach,
        .stop = rec_stop,
        .kill = rec_kill,
        .pause = rec_pause,
        .set_processor = rec_set_processor,
        .adjust_memory = rec_adjust_memory,
        .sample = rec_sample,
        .release = rec_release,
        .save = rec_save,
};

/* One answered call: its error code and message, or OK. */
typedef struct Answer {
        bool answered;
        VmmsErrorCode code;
        char *message;
} Answer;

static void on_reply(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error, void *userdata)
{
        Answer *a = userdata;

        (void)call;
        (void)response;
        a->answered = true;
        a->code = error ? error->code : VMMS_OK;
        a->message = g_strdup(error ? error->message : "");
}

static void on_vm_reply(VmmsVm *vm, VmmsCall *call, void *userdata)
{
        (void)vm;
        (void)userdata;
        vmms_call_return(call, NULL);
}

static VmmsCall *new_call(Answer *a)
{
        g_auto(VmmsCaller) caller = {0};

        memset(a, 0, sizeof(*a));
        vmms_caller_init_self(&caller);
        return vmms_call_new(vmms_op_lookup("StartVm"), &caller, on_reply, NULL, a);
}

typedef struct Fixture {
        char *dir;
        VmmsStore *store;
        VmmsEvents *events;
        VmmsVmContext ctx;
        Recorder engine;
        VmmsVm *vm;
} Fixture;

static void fixture_set_up(Fixture *f, gconstpointer data)
{
        g_autofree char *db = NULL;
        g_autofree char *why = NULL;
        g_auto(VmmsVmDefinition) def = {0};
        VmmsEventRecord event = {.kind = (char *)"created", .message = (char *)"created"};

        (void)data;
        f->dir = g_dir_make_tmp("vmms-vm-XXXXXX", NULL);
        db = g_build_filename(f->dir, "vmms.db", NULL);
        g_assert_cmpint(vmms_store_open(db, false, &f->store, &why), ==, 0);
        f->events = vmms_events_new(f->store);
        f->ctx = (VmmsVmContext){.store = f->store,
                                 .saved_dir = f->dir,
                                 .checkpoints_dir = f->dir,
                                 .events = f->events,
                                 .reply = on_vm_reply,
                                 .stop_timeout_ms = 7000,
                                 .force_timeout_ms = 5000};
        f->engine = (Recorder){.base = {.ops = &recorder_ops, .callbacks = &vmms_vm_engine_callbacks},
                               .log = g_string_new(NULL)};
        vmms_vm_definition_init_defaults(&def);
        g_strlcpy(def.id, "6f1c3a52-0000-4000-8000-000000000001", sizeof(def.id));
        def.name = g_strdup("web");
        event.vm_id = def.id;
        event.vm_name = def.name;
        g_assert_cmpint(vmms_store_vm_insert(f->store, &def, &event), ==, 0);
        f->vm = vmms_vm_new(&f->ctx, &def, &f->engine.base, 1);
}

static void fixture_tear_down(Fixture *f, gconstpointer data)
{
        g_autofree char *db = g_build_filename(f->dir, "vmms.db", NULL);
        g_autofree char *wal = g_strconcat(db, "-wal", NULL);
        g_autofree char *shm = g_strconcat(db, "-shm", NULL);

        (void)data;
        vmms_vm_free(f->vm);
        vmms_events_free(f->events);
        vmms_store_free(f->store);
        g_string_free(f->engine.log, TRUE);
        g_unlink(db);
        g_unlink(wal);
        g_unlink(shm);
        g_rmdir(f->dir);
        g_free(f->dir);
}

static void report_running(Fixture *f)
{
        VmmsEngineRunning info = {.pid = 4242, .started_unix_ms = 1, .partition_id = 7};

        f->vm->engine_data = f; /* what runs it, as far as the core can tell */
        vmms_vm_engine_callbacks.running(f->vm, &info);
}

static void test_a_second_caller_is_told_which_job_is_in_progress(Fixture *f, gconstpointer data)
{
        Answer first, second, third;

        (void)data;
        vmms_vm_start(f->vm, new_call(&first));
        g_assert_cmpstr(f->engine.log->str, ==, "start;");
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_STARTING);
        g_assert_false(first.answered); /* the job ends when the engine says so */
        vmms_vm_start(f->vm, new_call(&second));
        g_assert_true(second.answered);
        g_assert_cmpint(second.code, ==, VMMS_ERROR_FAILED_PRECONDITION);
        g_assert_cmpstr(second.message, ==, "VM 'web' is busy: start is in progress");
        vmms_vm_stop(f->vm, true, false, new_call(&third));
        g_assert_cmpstr(third.message, ==, "VM 'web' is busy: start is in progress");
        g_assert_cmpstr(f->engine.log->str, ==, "start;"); /* nothing more reached the engine */
        report_running(f);
        g_assert_true(first.answered);
        g_assert_cmpint(first.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_RUNNING);
        g_assert_null(f->vm->job);
        g_free(first.message);
        g_free(second.message);
        g_free(third.message);
}

static void test_live_processor_settings_are_stored_only_after_the_engine_agrees(Fixture *f,
                                                                                 gconstpointer data)
{
        VmmsProcessorSettings p = {.count = 1, .reserve = 10, .maximum = 50, .relative_weight = 200};
        VmmsError refusal = {.code = VMMS_ERROR_RESOURCE_EXHAUSTED, .message = (char *)"reservations exceed"};
        Answer a, b;

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_set_processor(f->vm, &p, new_call(&a));
        g_assert_cmpstr(f->engine.log->str, ==, "start;processor 10/50/200;");
        g_assert_cmpuint(f->vm->def.processor.reserve, ==, 0); /* not before the engine's yes */
        f->engine.pending(f->vm, &refusal);
        g_assert_cmpint(a.code, ==, VMMS_ERROR_RESOURCE_EXHAUSTED);
        g_assert_cmpuint(f->vm->def.processor.maximum, ==, 100);
        vmms_vm_set_processor(f->vm, &p, new_call(&b));
        f->engine.pending(f->vm, NULL);
        g_assert_cmpint(b.code, ==, VMMS_OK);
        g_assert_cmpuint(f->vm->def.processor.reserve, ==, 10);
        g_assert_cmpuint(f->vm->def.processor.relative_weight, ==, 200);
        g_free(a.message);
        g_free(b.message);
}

static void test_processor_count_changes_only_while_off(Fixture *f, gconstpointer data)
{
        VmmsProcessorSettings p = {.count = 2, .reserve = 0, .maximum = 100, .relative_weight = 100};
        Answer a;

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_set_processor(f->vm, &p, new_call(&a));
        g_assert_cmpint(a.code, ==, VMMS_ERROR_FAILED_PRECONDITION);
        g_assert_nonnull(strstr(a.message, "change the processor count of VM 'web'"));
        g_assert_cmpuint(f->vm->def.processor.count, ==, 1);
        g_free(a.message);
}

static void test_an_exit_while_stopping_ends_the_stop_and_records_off(Fixture *f, gconstpointer data)
{
        VmmsEngineExit exit = {.how = "exited with status 0", .guest_reason = "shutdown requested"};
        Answer a;

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_stop(f->vm, false, true, new_call(&a));
        g_assert_cmpstr(f->engine.log->str, ==, "start;stop ask 5000;");
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_STOPPING);
        vmms_vm_engine_callbacks.exited(f->vm, &exit);
        g_assert_cmpint(a.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_OFF);
        g_assert_cmpint(f->vm->def.worker_pid, ==, 0);
        g_free(a.message);
}

static void test_a_lost_host_ends_the_vm_with_the_reason_and_marks_it_for_a_restart(Fixture *f,
                                                                                    gconstpointer data)
{
        VmmsEngineExit exit = {.how = "killed by signal 9"};
        g_autoptr(GPtrArray) events = NULL;
        VmmsEventRecord *last;

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_host_lost(f->vm, "the hypervisor exited (connection closed)");
        g_assert_cmpstr(f->engine.log->str, ==, "start;kill;");
        g_assert_true(f->vm->restart_pending);
        vmms_vm_engine_callbacks.exited(f->vm, &exit);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_OFF);
        g_assert_cmpint(vmms_store_event_list(f->store, f->vm->def.id, 0, 1, true, &events), ==, 0);
        last = events->pdata[events->len - 1];
        g_assert_cmpstr(last->message, ==, "the hypervisor exited (connection closed)");
}

static void test_automatic_start_action_nothing_is_not_restarted(Fixture *f, gconstpointer data)
{
        (void)data;
        f->vm->def.automatic_start_action = VMMS_AUTO_START_NOTHING;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_host_lost(f->vm, "the hypervisor exited");
        g_assert_false(f->vm->restart_pending);
}

static void test_save_then_start_continues_from_the_saved_state(Fixture *f, gconstpointer data)
{
        VmmsEngineExit exit = {.how = "exited with status 0"};
        VmmsError refusal = {.code = VMMS_ERROR_RESOURCE_EXHAUSTED, .message = (char *)"disk full"};
        g_autoptr(GPtrArray) events = NULL;
        Answer a, b, c;

        (void)data;
        vmms_vm_save(f->vm, new_call(&a));
        g_assert_cmpstr(a.message, ==, "cannot save VM 'web': it is Off");
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_save(f->vm, new_call(&b));
        g_assert_cmpstr(f->engine.log->str, ==, "start;save 6f1c3a52-0000-4000-8000-000000000001.vmrs;");
        f->engine.saved(f->vm, &refusal, 0); /* the engine could not: the VM runs on */
        g_assert_cmpint(b.code, ==, VMMS_ERROR_RESOURCE_EXHAUSTED);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_RUNNING);
        vmms_vm_save(f->vm, new_call(&c));
        f->engine.saved(f->vm, NULL, 3u << 20);
        g_assert_false(c.answered); /* Saved only once the VM's process has gone */
        vmms_vm_engine_callbacks.exited(f->vm, &exit);
        g_assert_cmpint(c.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_SAVED);
        g_assert_cmpint(vmms_store_event_list(f->store, f->vm->def.id, 0, 1, true, &events), ==, 0);
        g_assert_cmpstr(((VmmsEventRecord *)events->pdata[0])->message, ==, "saved (3 MB written)");
        vmms_vm_start(f->vm, NULL);
        g_assert_true(g_str_has_suffix(f->engine.log->str, "start from saved;"));
        report_running(f);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_RUNNING);
        g_assert_null(f->vm->restore_path);
        g_free(a.message);
        g_free(b.message);
        g_free(c.message);
}

static void test_workload_changes_only_while_off_and_a_refused_change_keeps_the_old(Fixture *f,
                                                                                    gconstpointer data)
{
        VmmsVmSettings s = {
                .workload = "cpu", .notes = "new", .automatic_start_action = VMMS_AUTO_START_COUNT};
        VmmsError error = {0};

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        g_assert_cmpint(vmms_vm_update_settings(f->vm, &s, &error), <, 0);
        g_assert_nonnull(strstr(error.message, "change the workload or boot arguments of VM 'web'"));
        g_assert_cmpstr(f->vm->def.workload, ==, "idle");
        g_assert_cmpstr(f->vm->def.notes, ==, "");
        vmms_error_clear(&error);
        s.workload = NULL;
        g_assert_cmpint(vmms_vm_update_settings(f->vm, &s, &error), ==, 0);
        g_assert_cmpstr(f->vm->def.notes, ==, "new");
}

static GPtrArray *checkpoints(Fixture *f);

static guint checkpoint_count(Fixture *f)
{
        g_autoptr(GPtrArray) list = checkpoints(f);

        return list->len;
}

static GPtrArray *checkpoints(Fixture *f)
{
        GPtrArray *list = NULL;
        VmmsError error = {0};

        g_assert_cmpint(vmms_vm_checkpoints(f->vm, &list, &error), ==, 0);
        return list;
}

static void test_a_running_checkpoint_keeps_the_vm_running_and_restores_from_a_copy(Fixture *f,
                                                                                    gconstpointer data)
{
        VmmsVmSettings later = {.notes = "later", .automatic_start_action = VMMS_AUTO_START_COUNT};
        VmmsEngineExit exit = {.how = "killed by signal 9"};
        g_autoptr(GPtrArray) list = NULL;
        g_autofree char *file = NULL;
        g_autofree char *saved = NULL;
        g_autofree char *dir = NULL;
        VmmsError error = {0};
        Answer a, dup, empty, restore;

        (void)data;
        vmms_vm_start(f->vm, NULL);
        report_running(f);
        vmms_vm_checkpoint(f->vm, "before-upgrade", new_call(&a));
        g_assert_nonnull(f->vm->checkpoint);
        file = vmms_vm_checkpoint_path(f->vm, f->vm->checkpoint->id);
        g_assert_nonnull(strstr(f->engine.log->str, "start;checkpoint ")); /* keep_running */
        g_assert_false(a.answered); /* no checkpoint until the file is whole */
        g_assert_cmpuint(checkpoint_count(f), ==, 0);
        g_assert_true(g_file_set_contents(file, "state", -1, NULL));
        f->engine.saved(f->vm, NULL, 5);
        g_assert_cmpint(a.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_RUNNING);
        list = checkpoints(f);
        g_assert_cmpuint(list->len, ==, 1);
        g_assert_cmpuint(((VmmsCheckpoint *)list->pdata[0])->state_bytes, ==, 5);
        g_assert_cmpint(((VmmsCheckpoint *)list->pdata[0])->def.state, ==, VMMS_VM_RUNNING);
        vmms_vm_checkpoint(f->vm, "Before-Upgrade", new_call(&dup));
        g_assert_cmpint(dup.code, ==, VMMS_ERROR_ALREADY_EXISTS);
        g_assert_cmpstr(dup.message, ==, "VM 'web' already has a checkpoint named 'Before-Upgrade'");
        vmms_vm_checkpoint(f->vm, "", new_call(&empty));
        g_assert_cmpint(empty.code, ==, VMMS_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(empty.message, "cannot checkpoint VM 'web': checkpoint name must be"));
        g_assert_cmpint(vmms_vm_update_settings(f->vm, &later, &error), ==, 0);

        g_string_truncate(f->engine.log, 0);
        vmms_vm_restore_checkpoint(f->vm, "before-upgrade", new_call(&restore));
        g_assert_cmpstr(f->engine.log->str, ==, "stop off 5000;");
        vmms_vm_engine_callbacks.exited(f->vm, &exit);
        g_assert_cmpstr(f->engine.log->str, ==, "stop off 5000;start from saved;");
        saved = vmms_vm_saved_path(f->vm);
        g_assert_true(g_file_test(saved, G_FILE_TEST_EXISTS)); /* a copy to start from */
        g_assert_cmpstr(f->vm->def.notes, ==, "");             /* the settings as they were */
        g_assert_false(restore.answered);
        report_running(f);
        g_assert_cmpint(restore.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_RUNNING);
        g_assert_false(g_file_test(saved, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(file, G_FILE_TEST_EXISTS)); /* the checkpoint stays usable */

        g_assert_cmpint(vmms_vm_remove_checkpoint(f->vm, "before-upgrade", &error), ==, 0);
        g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
        g_assert_cmpuint(checkpoint_count(f), ==, 0);
        dir = g_path_get_dirname(file);
        g_rmdir(dir);
        g_free(a.message);
        g_free(dup.message);
        g_free(empty.message);
        g_free(restore.message);
}

static void test_an_off_checkpoint_restores_the_settings_and_leaves_the_vm_off(Fixture *f, gconstpointer data)
{
        VmmsVmSettings later = {
                .workload = "cpu", .notes = "later", .automatic_start_action = VMMS_AUTO_START_COUNT};
        g_autoptr(GPtrArray) list = NULL;
        VmmsError error = {0};
        Answer a, restore, unknown;

        (void)data;
        vmms_vm_checkpoint(f->vm, "clean", new_call(&a));
        g_assert_cmpint(a.code, ==, VMMS_OK);
        g_assert_cmpstr(f->engine.log->str, ==, ""); /* its definition only */
        list = checkpoints(f);
        g_assert_cmpuint(((VmmsCheckpoint *)list->pdata[0])->state_bytes, ==, 0);
        g_assert_cmpint(vmms_vm_update_settings(f->vm, &later, &error), ==, 0);
        g_assert_cmpstr(f->vm->def.workload, ==, "cpu");
        vmms_vm_restore_checkpoint(f->vm, "CLEAN", new_call(&restore));
        g_assert_cmpint(restore.code, ==, VMMS_OK);
        g_assert_cmpint(f->vm->def.state, ==, VMMS_VM_OFF);
        g_assert_cmpstr(f->vm->def.workload, ==, "idle");
        g_assert_cmpstr(f->vm->def.notes, ==, "");
        g_assert_cmpstr(f->engine.log->str, ==, "");
        vmms_vm_restore_checkpoint(f->vm, "nope", new_call(&unknown));
        g_assert_cmpint(unknown.code, ==, VMMS_ERROR_NOT_FOUND);
        g_assert_cmpstr(unknown.message, ==,
                        "VM 'web' has no checkpoint named 'nope'; Get-VMSnapshot web lists them");
        g_assert_cmpint(vmms_vm_remove_checkpoint(f->vm, "clean", &error), ==, 0);
        g_assert_cmpint(vmms_vm_remove_checkpoint(f->vm, "clean", &error), ==, -ENOENT);
        g_assert_cmpint(error.code, ==, VMMS_ERROR_NOT_FOUND);
        vmms_error_clear(&error);
        g_free(a.message);
        g_free(restore.message);
        g_free(unknown.message);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/vm/every_action_in_every_state_is_allowed_or_refused_by_name",
                        test_every_action_in_every_state_is_allowed_or_refused_by_name);
#define JOB_TEST(name) g_test_add("/vm/" #name, Fixture, NULL, fixture_set_up, test_##name, fixture_tear_down)
        JOB_TEST(a_second_caller_is_told_which_job_is_in_progress);
        JOB_TEST(live_processor_settings_are_stored_only_after_the_engine_agrees);
        JOB_TEST(processor_count_changes_only_while_off);
        JOB_TEST(an_exit_while_stopping_ends_the_stop_and_records_off);
        JOB_TEST(a_lost_host_ends_the_vm_with_the_reason_and_marks_it_for_a_restart);
        JOB_TEST(automatic_start_action_nothing_is_not_restarted);
        JOB_TEST(save_then_start_continues_from_the_saved_state);
        JOB_TEST(workload_changes_only_while_off_and_a_refused_change_keeps_the_old);
        JOB_TEST(a_running_checkpoint_keeps_the_vm_running_and_restores_from_a_copy);
        JOB_TEST(an_off_checkpoint_restores_the_settings_and_leaves_the_vm_off);
        return g_test_run();
}
