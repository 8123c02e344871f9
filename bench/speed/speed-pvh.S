/* The guest-speed kernels as a PVH kernel for qemu-system-x86_64: QEMU enters at the
 * PHYS32_ENTRY note in 32-bit protected mode with paging off; this switches to long
 * mode over an identity map of the first 1 GiB (2 MiB pages) and calls pvh_main with the
 * PVH start info (%ebx): the guest-speed kernels return and leave through isa-debug-exit
 * at 0xf4; bench/migration's workload (the same entry, linked with its own pvh_main)
 * never returns. Output on the debugcon port 0xe9. */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

        .section .note.Xen, "a"
        .p2align 2
        .long 4                 /* name size */
        .long 4                 /* desc size */
        .long XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
        .long pvh_start32

        .section .text.boot, "ax"
        .code32
        .globl pvh_start32
pvh_start32:
        cli
        /* PD: 512 2-MiB identity pages; PDPT[0] -> PD; PML4[0] -> PDPT. */
        mov $pvh_pd, %edi
        mov $0x83, %eax         /* present, writable, 2 MiB */
        xor %ecx, %ecx
1:      mov %eax, (%edi,%ecx,8)
        movl $0, 4(%edi,%ecx,8)
        add $0x200000, %eax
        inc %ecx
        cmp $512, %ecx
        jne 1b
        mov $pvh_pd, %eax
        or $3, %eax
        mov %eax, pvh_pdpt
        mov $pvh_pdpt, %eax
        or $3, %eax
        mov %eax, pvh_pml4
        mov $pvh_pml4, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax          /* PAE */
        mov %eax, %cr4
        mov $0xc0000080, %ecx   /* EFER.LME */
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax    /* PG | PE */
        mov %eax, %cr0
        lgdt pvh_gdt_desc
        ljmp $8, $pvh_start64

        .code64
pvh_start64:
        mov $16, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $pvh_stack_top, %rsp
        mov %ebx, %edi          /* the hvm_start_info, below 4 GiB */
        call pvh_main
        mov $0xf4, %dx          /* isa-debug-exit: QEMU exits with status (0 << 1) | 1 */
        xor %eax, %eax
        outl %eax, %dx
2:      hlt
        jmp 2b

        .section .rodata
        .p2align 3
pvh_gdt:
        .quad 0
        .quad 0x00af9a000000ffff /* 64-bit code */
        .quad 0x00cf92000000ffff /* data */
pvh_gdt_desc:
        .word pvh_gdt_desc - pvh_gdt - 1
        .long pvh_gdt

        .section .bss
        .p2align 12
pvh_pml4:  .skip 4096
pvh_pdpt:  .skip 4096
pvh_pd:    .skip 4096
        .skip 65536
pvh_stack_top:
