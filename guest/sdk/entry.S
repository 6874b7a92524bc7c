/* Every vCPU starts here at CPL3: rdi = vCPU index, rsi = boot info, rsp = its own stack. */
    .section .text.entry, "ax"
    .globl _start
_start:
    and $-16, %rsp
    call fg_start
    ud2
    .section .note.GNU-stack, "", @progbits
