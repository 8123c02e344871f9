/* The C side of the PVH kernel: output through QEMU's debugcon port. */
#include "speed.h"

static void write_debugcon(const char *text, uint64_t len)
{
        for (uint64_t i = 0; i < len; i++)
                __asm__ volatile("outb %0, %1" ::"a"(text[i]), "Nd"((uint16_t)0xe9));
}

void pvh_main(void);
void pvh_main(void)
{
        speed_run_all((uint8_t *)(uintptr_t)SPEED_ARENA_GPA, 3, write_debugcon);
}
