/* vmwp: the VM worker process. Options and the main loop; the worker is a library. */
#include <errno.h>
#include <signal.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>

#include "hv-size.h"
#include "hv-wire.h"
#include "vmwp-control.h"
#include "vmwp-log.h"
#include "vmwp-worker.h"
#include "worker.pb-c.h"

typedef struct VmwpMain {
        GMainLoop *loop;
        VmwpControl *control;
        int exit_status;
        Vmms__Worker__Exiting__Reason exit_reason; /* told to vmmsd before exiting */
        char *exit_message;
} VmwpMain;

/* The first reason wins: what follows from it is not news. */
static void set_exit(VmwpMain *m, Vmms__Worker__Exiting__Reason reason, const char *message)
{
        if (m->exit_reason != VMMS__WORKER__EXITING__REASON__REASON_UNSPECIFIED)
                return;
        m->exit_reason = reason;
        m->exit_message = g_strdup(message);
}

static gboolean on_term(gpointer userdata)
{
        VmwpMain *m = userdata;

        set_exit(m, VMMS__WORKER__EXITING__REASON__TURNED_OFF, "turned off by a signal");
        g_main_loop_quit(m->loop);
        return G_SOURCE_CONTINUE;
}

static void on_stopped(VmwpWorker *w, bool crashed, void *userdata)
{
        VmwpMain *m = userdata;

        m->exit_status = crashed ? 3 : 0;
        set_exit(m,
                 crashed ? VMMS__WORKER__EXITING__REASON__GUEST_CRASHED
                         : VMMS__WORKER__EXITING__REASON__GUEST_SHUTDOWN,
                 vmwp_worker_stop_reason(w));
        if (m->control)
                vmwp_control_guest_stopped(m->control, vmwp_worker_stop_reason(w), crashed);
        g_main_loop_quit(m->loop);
}

static void on_control_action(VmwpControlAction action, void *userdata)
{
        VmwpMain *m = userdata;

        if (action == VMWP_CONTROL_TURN_OFF) {
                set_exit(m, VMMS__WORKER__EXITING__REASON__TURNED_OFF, "turned off");
                g_main_loop_quit(m->loop);
        } else if (action == VMWP_CONTROL_SAVED) {
                set_exit(m, VMMS__WORKER__EXITING__REASON__SAVED, "saved");
                g_main_loop_quit(m->loop);
        } else if (action == VMWP_CONTROL_MIGRATED) {
                set_exit(m, VMMS__WORKER__EXITING__REASON__MIGRATED, "migrated");
                g_main_loop_quit(m->loop);
        }
}

/* Exit codes: 0 the guest halted, 1 refused or lost hvd, 2 bad arguments, 3 the guest
 * crashed, 4 refused for lack of resources (pool, reservations, hvd's per-connection
 * limits), 5 an incoming migration refused (worker.proto). */
#define EXIT_INCOMING_REFUSED 5
static int exit_code_for(int error)
{
        return error == -ENOMEM || error == -ENOSPC || error == -EDQUOT ? 4 : 1;
}

static gboolean on_hvd(gint fd, GIOCondition condition, gpointer userdata)
{
        VmwpWorker *w = ((void **)userdata)[0];
        VmwpMain *m = ((void **)userdata)[1];

        (void)fd;
        (void)condition;
        if (vmwp_worker_dispatch(w) < 0) {
                fprintf(stderr, "vmwp: hvd went away; the VM is lost\n");
                set_exit(m, VMMS__WORKER__EXITING__REASON__HYPERVISOR_LOST, "hvd went away; the VM is lost");
                m->exit_status = 1;
                g_main_loop_quit(m->loop);
                return G_SOURCE_REMOVE;
        }
        return G_SOURCE_CONTINUE;
}

static int parse_size(const char *option, const char *text, uint64_t *ret)
{
        if (hv_size_parse(text, ret) < 0) {
                fprintf(stderr, "vmwp: %s '%s' is not a size (e.g. 512MB, 2GB)\n", option, text);
                return -EINVAL;
        }
        return 0;
}

int main(int argc, char **argv)
{
        g_auto(VmwpConfig) config = {0};
        g_autofree char *memory = NULL, *maximum = NULL, *control_socket = NULL, *vm_id = NULL,
                        *paging_bytes = NULL, *restore = NULL;
        gint incoming_fd = -1, ready_fd = -1;
        gint vps = 1, reserve = 0, cpu_maximum = 0, relative_weight = 0;
        gboolean console_stdout = FALSE, concurrent_vps = FALSE, restore_paused = FALSE,
                 cpu_compatibility = FALSE;
        GOptionEntry entries[] = {
                {"name", 'n', 0, G_OPTION_ARG_STRING, &config.name, "VM name", "NAME"},
                {"vps", 'p', 0, G_OPTION_ARG_INT, &vps, "Virtual processors (default 1)", "N"},
                {"reserve", 0, 0, G_OPTION_ARG_INT, &reserve, "% of one LP guaranteed to each VP (default 0)",
                 "N"},
                {"cpu-maximum", 0, 0, G_OPTION_ARG_INT, &cpu_maximum, "Cap, % of one LP per VP (default 100)",
                 "N"},
                {"concurrent-vps", 0, 0, G_OPTION_ARG_NONE, &concurrent_vps,
                 "Let the VPs run on several LPs at once: only for a guest whose VPs share no atomics "
                 "(lock-prefixed instructions are not atomic between LPs; default: one VP at a time)",
                 NULL},
                {"cpu-compatibility", 0, 0, G_OPTION_ARG_NONE, &cpu_compatibility,
                 "The guest reads the normalized CPUID, the same on every host, so it can move between "
                 "hosts whose CPU models or engine builds differ (default: the host's model)",
                 NULL},
                {"relative-weight", 0, 0, G_OPTION_ARG_INT, &relative_weight,
                 "Share among contending VMs, 1-10000 (default 100)", "N"},
                {"memory", 'm', 0, G_OPTION_ARG_STRING, &memory, "Startup memory (default 256MB)", "SIZE"},
                {"maximum-memory", 0, 0, G_OPTION_ARG_STRING, &maximum, "Maximum memory (default: startup)",
                 "SIZE"},
                {"workload", 'w', 0, G_OPTION_ARG_STRING, &config.workload, "idle, cpu, memsoak or cache",
                 "NAME"},
                {"boot-args", 0, 0, G_OPTION_ARG_STRING, &config.cmdline_extra, "More guest boot parameters",
                 "K=V ..."},
                {"guest", 'g', 0, G_OPTION_ARG_FILENAME, &config.guest_path, "Guest kernel ELF", "PATH"},
                {"hvd-socket", 's', 0, G_OPTION_ARG_FILENAME, &config.hvd_socket, "hvd's socket", "PATH"},
                {"console-log", 'c', 0, G_OPTION_ARG_FILENAME, &config.console_log, "Append the console here",
                 "PATH"},
                {"console-stdout", 0, 0, G_OPTION_ARG_NONE, &console_stdout, "Echo the console on stdout",
                 NULL},
                {"paging-file", 0, 0, G_OPTION_ARG_FILENAME, &config.paging_file,
                 "The guest's paging disk, removed at exit (default: NAME.paging beside the console log, "
                 "or in /tmp)",
                 "PATH"},
                {"paging-bytes", 0, 0, G_OPTION_ARG_STRING, &paging_bytes,
                 "Size of the paging disk; writes past it fail and the guest pages within it (default: "
                 "four times --memory)",
                 "SIZE"},
                {"control-socket", 0, 0, G_OPTION_ARG_FILENAME, &control_socket,
                 "Serve vmmsd's control protocol here", "PATH"},
                {"vm-id", 0, 0, G_OPTION_ARG_STRING, &vm_id, "The VM's id, reported to vmmsd", "UUID"},
                {"restore", 0, 0, G_OPTION_ARG_FILENAME, &restore,
                 "Start from this saved state (Save-VM's file), checked whole first", "FILE"},
                {"restore-paused", 0, 0, G_OPTION_ARG_NONE, &restore_paused,
                 "With --restore: stay paused (the guest does not run) until vmmsd's Resume", NULL},
                {"incoming-fd", 0, 0, G_OPTION_ARG_INT, &incoming_fd,
                 "Receive a live migration's stream on this inherited fd; the VM ends paused (worker.proto)",
                 "N"},
                {"ready-fd", 0, 0, G_OPTION_ARG_INT, &ready_fd,
                 "Write a byte to this inherited fd and close it once the control socket listens", "N"},
                {NULL},
        };
        g_autoptr(GOptionContext) options = g_option_context_new("- run one VM on hvd");
        g_autoptr(GError) error = NULL;
        g_autoptr(VmwpWorker) worker = NULL;
        g_autoptr(VmwpControl) control = NULL;
        g_autofree char *why = NULL;
        VmwpMain m = {0};
        void *watch_data[2];
        int r;

        vmwp_log_install(VMWP_LOG_CAP_BYTES);
        g_option_context_add_main_entries(options, entries, NULL);
        if (!g_option_context_parse(options, &argc, &argv, &error)) {
                fprintf(stderr, "vmwp: %s\n", error->message);
                return 2;
        }
        if (!config.name) {
                fprintf(stderr, "vmwp: --name is required\n");
                return 2;
        }
        if (vps < 1 || vps > 32) {
                fprintf(stderr, "vmwp: --vps %d is out of range 1-32\n", vps);
                return 2;
        }
        config.vp_count = (uint32_t)vps;
        if (reserve < 0 || reserve > 100 || cpu_maximum < 0 || cpu_maximum > 100 || relative_weight < 0 ||
            relative_weight > 10000) {
                fprintf(stderr,
                        "vmwp: --reserve %d, --cpu-maximum %d, --relative-weight %d: expected 0-100, 1-100 "
                        "and 1-10000\n",
                        reserve, cpu_maximum, relative_weight);
                return 2;
        }
        config.reserve_pct = (uint32_t)reserve;
        config.maximum_pct = (uint32_t)cpu_maximum;
        config.relative_weight = (uint32_t)relative_weight;
        config.concurrent_vps = concurrent_vps;
        config.cpu_compatibility = cpu_compatibility;
        config.startup_bytes = 256ull << 20;
        if ((memory && parse_size("--memory", memory, &config.startup_bytes) < 0) ||
            (maximum && parse_size("--maximum-memory", maximum, &config.maximum_bytes) < 0) ||
            (paging_bytes && parse_size("--paging-bytes", paging_bytes, &config.paging_bytes) < 0))
                return 2;
        config.console_stdout = console_stdout;
        if (!config.guest_path)
                config.guest_path = g_strdup(VMMS_GUEST_PATH);
        if (!config.hvd_socket)
                config.hvd_socket = hv_wire_default_socket_path();

        if (restore_paused && !restore) {
                fprintf(stderr, "vmwp: --restore-paused needs --restore\n");
                return 2;
        }
        if (incoming_fd >= 0 && (restore || incoming_fd <= 2)) {
                fprintf(stderr, "vmwp: --incoming-fd %d: %s\n", incoming_fd,
                        restore ? "cannot be given with --restore" : "must not be stdin, stdout or stderr");
                return 2;
        }
        if (ready_fd >= 0 && (ready_fd <= 2 || ready_fd == incoming_fd)) {
                fprintf(stderr, "vmwp: --ready-fd %d: must not be stdin, stdout, stderr or --incoming-fd\n",
                        ready_fd);
                return 2;
        }
        /* A migration peer that goes away must be a write error, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        r = vmwp_worker_new(&config, &worker, &why);
        if (r >= 0 && incoming_fd >= 0) {
                r = vmwp_worker_incoming(worker, incoming_fd, &why);
                if (r < 0) {
                        /* Nothing is left behind: the partition and paging file go with the worker. */
                        g_clear_pointer(&worker, vmwp_worker_free);
                        fprintf(stderr, "vmwp: %s: stopped: %s\n", config.name, why);
                        return EXIT_INCOMING_REFUSED;
                }
        } else if (r >= 0)
                r = restore ? vmwp_worker_restore(worker, restore, restore_paused, &why)
                            : vmwp_worker_start(worker, &why);
        if (r < 0) {
                fprintf(stderr, "vmwp: %s: %s\n", config.name, why);
                return exit_code_for(r);
        }
        m.loop = g_main_loop_new(NULL, FALSE);
        if (control_socket) {
                r = vmwp_control_new(worker, control_socket, vm_id, on_control_action, &m, &control, &why);
                if (r < 0) {
                        fprintf(stderr, "vmwp: %s: %s\n", config.name, why);
                        return 1;
                }
                m.control = control;
        }
        if (ready_fd >= 0) {
                /* vmmsd connects now (a write error only means it stopped waiting). */
                if (write(ready_fd, "r", 1) < 0)
                        fprintf(stderr, "vmwp: %s: --ready-fd: %s\n", config.name, g_strerror(errno));
                close(ready_fd);
        }
        vmwp_worker_set_stopped_handler(worker, on_stopped, &m);
        watch_data[0] = worker;
        watch_data[1] = &m;
        g_unix_fd_add(vmwp_worker_fd(worker), G_IO_IN | G_IO_HUP | G_IO_ERR, on_hvd, watch_data);
        g_unix_signal_add(SIGTERM, on_term, &m);
        g_unix_signal_add(SIGINT, on_term, &m);
        fprintf(stderr, "vmwp: %s: running (%u VPs, %" G_GUINT64_FORMAT " bytes, workload %s)\n", config.name,
                config.vp_count, config.startup_bytes, config.workload ? config.workload : "idle");
        g_main_loop_run(m.loop);
        r = vmwp_worker_stop(worker);
        if (r < 0 && m.exit_status == 0 && r != -ECONNRESET) {
                g_autofree char *text = g_strdup_printf("stopping: %s", g_strerror(-r));

                fprintf(stderr, "vmwp: %s: %s\n", config.name, text);
                set_exit(&m, VMMS__WORKER__EXITING__REASON__STOP_FAILED, text);
        }
        if (control)
                vmwp_control_exiting(control, m.exit_reason, m.exit_message ? m.exit_message : "");
        g_main_loop_unref(m.loop);
        /* The last line says why: vmmsd reads it when the worker ended before it could
         * be told (a guest that faults at boot). */
        fprintf(stderr, "vmwp: %s: stopped: %s\n", config.name,
                m.exit_message ? m.exit_message : "turned off");
        g_free(m.exit_message);
        return m.exit_status;
}
