/* The ELF entry point of the vmms guest: every VP starts here with RDI = VP index,
 * RSI = boot info GPA and RSP = the top of its boot stack (hv-abi.h). */
        .section .text.boot, "ax", @progbits
        .globl guest_entry
        .type guest_entry, @function
guest_entry:
        cld
        xorl %ebp, %ebp
        /* The C ABI wants RSP 16-byte aligned at a call; do not trust the loader for it. */
        andq $-16, %rsp
        call guest_main
        /* guest_main never returns (every path ends in a workload or HALT): fail loudly. */
        ud2
        .size guest_entry, . - guest_entry

        .section .note.GNU-stack, "", @progbits
