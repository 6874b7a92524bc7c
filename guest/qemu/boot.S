/* Multiboot (v1) entry for the QEMU peer guest.
 *
 * QEMU starts us in 32-bit protected mode at CPL0, and under this machine's KVM every CPL0
 * instruction is emulated (~0.8M instr/s). So this file does the least that reaches 64-bit
 * CPL3, which runs natively: identity-map 4 GiB with 2 MiB user pages, enter long mode, and
 * drop to CPL3 with `sysexit` (KVM's emulator cannot `iret` to a lower privilege). Nothing
 * big is zeroed here: the page tables live in .data, the small .bss is cleared at CPL3. */

#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00010000 /* a.out kludge: QEMU's multiboot loader refuses ELF64 files */
#define KCODE64 0x08        /* also SYSENTER_CS: sysexit takes CS from +32 and SS from +40 */
#define KDATA 0x10

    .section .text.entry, "ax"
    .code32
    .align 4
mb_header:
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    .long mb_header, __image_start, __data_end, __bss_end, mb_entry

    .globl mb_entry
mb_entry:                       /* eax = multiboot magic, ebx = multiboot info */
    /* 4 page directories x 512 entries of 2 MiB, present|writable|user|large */
    mov $pd, %edi
    mov $0x87, %eax
    mov $2048, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    movl $pd + 0x0007, pdpt
    movl $pd + 0x1007, pdpt + 8
    movl $pd + 0x2007, pdpt + 16
    movl $pd + 0x3007, pdpt + 24
    movl $pdpt + 0x0007, pml4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0x620, %eax            /* PAE | OSFXSR | OSXMMEXCPT: the C code may use SSE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    and $~0x4, %eax             /* EM off */
    or $0x80000002, %eax        /* PG | MP */
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $KCODE64, $long_entry

    .code64
long_entry:
    mov $KDATA, %eax
    mov %eax, %ss
    mov $kstack_top, %esp
    mov $0x174, %ecx            /* IA32_SYSENTER_CS */
    mov $KCODE64, %eax
    xor %edx, %edx
    wrmsr
    pushq $0x3002               /* IOPL=3 (port I/O at CPL3), IF=0: the guest takes no interrupts */
    popfq
    mov %ebx, %edi              /* multiboot info -> first C argument */
    mov $user_entry, %edx       /* sysexit: RIP = rdx, RSP = rcx */
    mov $ustack_top, %ecx
    .byte 0x48, 0x0f, 0x35      /* rex.w sysexit: to 64-bit CPL3 */

user_entry:                     /* 64-bit CPL3, native from here on */
    mov %rdi, %rbx
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    call qemu_main
2:  jmp 2b

    .section .rodata
    .align 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08 kernel code64 */
    .quad 0x00cf92000000ffff    /* 0x10 kernel data */
    .quad 0, 0                  /* 0x18, 0x20: sysexit's 32-bit user pair, unused */
    .quad 0x00affa000000ffff    /* 0x28 user code64 (DPL3) */
    .quad 0x00cff2000000ffff    /* 0x30 user data (DPL3) */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .data.pagetables, "aw"
    .align 4096
pml4: .fill 4096, 1, 0
pdpt: .fill 4096, 1, 0
pd:   .fill 4 * 4096, 1, 0

    .section .bss
    .align 16
kstack: .skip 256
kstack_top:
    .align 16
ustack: .skip 65536
ustack_top:

    .section .note.GNU-stack, "", @progbits
