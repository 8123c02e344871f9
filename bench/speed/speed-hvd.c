/* The guest-speed kernels as an hvd guest: entered like the vmms guest (paging off,
 * RSP on the boot stack), prints through ConsoleWrite and halts. Rounds come from the
 * boot command line's first number ("reps=N"), 3 without one. */
#include "hypercall.h"
#include "speed.h"

static void write_console(const char *text, uint64_t len)
{
        guest_hypercall(HV_CALL_CONSOLE_WRITE, (uint64_t)(uintptr_t)text, len, 0);
}

static uint32_t reps_from_cmdline(const char *cmdline)
{
        uint32_t reps = 0;

        for (int i = 0; cmdline[i] && i < HV_BOOT_CMDLINE_MAX; i++) {
                if (cmdline[i] == 'r' && cmdline[i + 1] == 'e' && cmdline[i + 2] == 'p' &&
                    cmdline[i + 3] == 's' && cmdline[i + 4] == '=') {
                        for (i += 5; cmdline[i] >= '0' && cmdline[i] <= '9'; i++)
                                reps = reps * 10 + (uint32_t)(cmdline[i] - '0');
                        break;
                }
        }
        return reps ? reps : 3;
}

__attribute__((section(".text.boot"), noreturn)) void guest_entry(uint64_t vp,
                                                                  const struct hv_boot_info *info)
{
        if (vp == 0)
                speed_run_all((uint8_t *)(uintptr_t)SPEED_ARENA_GPA, reps_from_cmdline(info->cmdline),
                              write_console);
        for (;;)
                guest_hypercall(HV_CALL_HALT, 0, 0, 0);
}
