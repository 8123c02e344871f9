/* The `idle` workload: every VP sleeps in the IDLE hypercall, waking every
 * idle_period_ms (a short period makes it a wake-latency probe for the scheduler); VP 0
 * reports its uptime every ten seconds. Also what VPs without work run, and the
 * kernel's sleep. */
#include "guest.h"
#include "hypercall.h"

#define GUEST_IDLE_REPORT_SECONDS 10

/* The earlier of deadline and what VMBus wants (its timers run from guest_vmbus_poll). */
static uint64_t guest_idle_deadline(uint64_t deadline)
{
        uint64_t vmbus = guest_vp_index() == 0 ? guest_vmbus_next_deadline() : 0;

        return vmbus && vmbus < deadline ? vmbus : deadline;
}

/* IDLE may return early on an event (VMBus news for VP 0), so sleep until the deadline
 * really passed, serving each event as it comes. */
void guest_sleep_ns(uint64_t ns)
{
        uint64_t deadline = guest_hv_reference_time() + ns;

        guest_vmbus_poll();
        while (guest_hv_reference_time() < deadline) {
                int64_t r = guest_hv_idle(guest_idle_deadline(deadline));

                guest_check_host_request();
                guest_vmbus_poll();
                if (r < 0)
                        break; /* a hypervisor without IDLE must not turn this into a spin */
        }
}

void guest_workload_idle_run(bool report, uint64_t period_ms)
{
        uint64_t next_report = GUEST_IDLE_REPORT_SECONDS;

        for (;;) {
                uint64_t now, up;

                guest_hv_idle(guest_idle_deadline(guest_hv_reference_time() + period_ms * GUEST_NS_PER_MS));
                guest_check_host_request();
                guest_vmbus_poll();
                if (!report)
                        continue;
                now = guest_hv_reference_time();
                up = now > guest_boot_time_ns() ? (now - guest_boot_time_ns()) / GUEST_NS_PER_SEC : 0;
                if (up < next_report)
                        continue;
                guest_printf("idle: up %lus\n", up);
                /* After a long pause, report at the next multiple rather than catching up. */
                next_report = (up / GUEST_IDLE_REPORT_SECONDS + 1) * GUEST_IDLE_REPORT_SECONDS;
        }
}
