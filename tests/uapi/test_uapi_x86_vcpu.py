"""kmock.uapi.x86 against arch/x86/include/uapi/asm/kvm.h and include/uapi/linux/kvm.h
(x86-64): the vCPU register/state structs and their ioctl numbers. Every expected value
is a literal: sizes and offsets as sizeof/offsetof give them with the header, numbers as
the _IO* macros of the header encode them."""

import ctypes

import pytest

from kmock.uapi import x86

from ._layout import field, ioc

SIZES = [("kvm_segment", 24), ("kvm_dtable", 16), ("kvm_sregs", 312), ("kvm_sregs2", 320),
         ("kvm_lapic_state", 1024), ("kvm_guest_debug", 72), ("kvm_fpu", 416),
         ("kvm_msr_entry", 16), ("kvm_msrs", 8), ("kvm_msr_list", 4), ("kvm_mp_state", 4),
         ("kvm_vcpu_events", 64), ("kvm_debugregs", 128), ("kvm_xcr", 16), ("kvm_xcrs", 392),
         ("kvm_xsave", 4096), ("kvm_signal_mask", 4),
         ("kvm_msr_filter_range", 24), ("kvm_msr_filter", 392),
         ("kvm_tpr_access_ctl", 40), ("kvm_vapic_addr", 8),
         ("kvm_x86_mce", 64), ("kvm_device_attr", 24)]


@pytest.mark.parametrize("name,size", SIZES, ids=[s[0] for s in SIZES])
def test_struct_sizes(name, size):
    assert ctypes.sizeof(getattr(x86, name)) == size


OFFSETS = [
    ("kvm_segment", "limit", 8, 4), ("kvm_segment", "selector", 12, 2),
    ("kvm_segment", "type", 14, 1), ("kvm_segment", "unusable", 22, 1),
    ("kvm_dtable", "limit", 8, 2),
    ("kvm_msr_filter_range", "base", 8, 4), ("kvm_msr_filter_range", "bitmap", 16, 8),
    ("kvm_msr_filter", "ranges", 8, 384),
    ("kvm_x86_mce", "mcg_status", 24, 8), ("kvm_x86_mce", "bank", 32, 1),
    ("kvm_x86_mce", "pad1", 33, 7), ("kvm_x86_mce", "pad2", 40, 24),
    ("kvm_device_attr", "group", 4, 4), ("kvm_device_attr", "attr", 8, 8),
    ("kvm_device_attr", "addr", 16, 8),
    ("kvm_sregs", "cs", 0, 24), ("kvm_sregs", "tr", 144, 24), ("kvm_sregs", "ldt", 168, 24),
    ("kvm_sregs", "gdt", 192, 16), ("kvm_sregs", "idt", 208, 16), ("kvm_sregs", "cr0", 224, 8),
    ("kvm_sregs", "cr8", 256, 8), ("kvm_sregs", "efer", 264, 8),
    ("kvm_sregs", "apic_base", 272, 8), ("kvm_sregs", "interrupt_bitmap", 280, 32),
    ("kvm_sregs", "cs.l", 19, 1),
    ("kvm_sregs2", "apic_base", 272, 8), ("kvm_sregs2", "flags", 280, 8),
    ("kvm_sregs2", "pdptrs", 288, 32),
    ("kvm_guest_debug", "debugreg", 8, 64),
    ("kvm_fpu", "fcw", 128, 2), ("kvm_fpu", "ftwx", 132, 1), ("kvm_fpu", "last_opcode", 134, 2),
    ("kvm_fpu", "last_ip", 136, 8), ("kvm_fpu", "last_dp", 144, 8), ("kvm_fpu", "xmm", 152, 256),
    ("kvm_fpu", "mxcsr", 408, 4),
    ("kvm_msr_entry", "data", 8, 8),
    ("kvm_vcpu_events", "exception.error_code", 4, 4), ("kvm_vcpu_events", "interrupt", 8, 4),
    ("kvm_vcpu_events", "nmi.masked", 14, 1), ("kvm_vcpu_events", "sipi_vector", 16, 4),
    ("kvm_vcpu_events", "flags", 20, 4), ("kvm_vcpu_events", "smi.latched_init", 27, 1),
    ("kvm_vcpu_events", "triple_fault.pending", 28, 1),
    ("kvm_vcpu_events", "exception_has_payload", 55, 1),
    ("kvm_vcpu_events", "exception_payload", 56, 8),
    ("kvm_debugregs", "dr6", 32, 8), ("kvm_debugregs", "dr7", 40, 8),
    ("kvm_debugregs", "flags", 48, 8),
    ("kvm_xcrs", "flags", 4, 4), ("kvm_xcrs", "xcrs", 8, 256), ("kvm_xcrs", "padding", 264, 128),
]


@pytest.mark.parametrize("name,path,off,size", OFFSETS, ids=[f"{o[0]}.{o[1]}" for o in OFFSETS])
def test_field_offsets(name, path, off, size):
    assert field(getattr(x86, name), path) == (off, size)


NUMBERS = [
    ("KVM_GET_MSR_INDEX_LIST", ioc(3, 0xAE, 0x02, 4), 0xC004AE02),
    ("KVM_GET_MSR_FEATURE_INDEX_LIST", ioc(3, 0xAE, 0x0A, 4), 0xC004AE0A),
    ("KVM_GET_REGS", ioc(2, 0xAE, 0x81, 144), 0x8090AE81),
    ("KVM_SET_REGS", ioc(1, 0xAE, 0x82, 144), 0x4090AE82),
    ("KVM_GET_SREGS", ioc(2, 0xAE, 0x83, 312), 0x8138AE83),
    ("KVM_SET_SREGS", ioc(1, 0xAE, 0x84, 312), 0x4138AE84),
    ("KVM_GET_MSRS", ioc(3, 0xAE, 0x88, 8), 0xC008AE88),
    ("KVM_SET_MSRS", ioc(1, 0xAE, 0x89, 8), 0x4008AE89),
    ("KVM_SET_SIGNAL_MASK", ioc(1, 0xAE, 0x8B, 4), 0x4004AE8B),
    ("KVM_GET_FPU", ioc(2, 0xAE, 0x8C, 416), 0x81A0AE8C),
    ("KVM_SET_FPU", ioc(1, 0xAE, 0x8D, 416), 0x41A0AE8D),
    ("KVM_SET_CPUID2", ioc(1, 0xAE, 0x90, 8), 0x4008AE90),
    ("KVM_GET_CPUID2", ioc(3, 0xAE, 0x91, 8), 0xC008AE91),
    ("KVM_GET_MP_STATE", ioc(2, 0xAE, 0x98, 4), 0x8004AE98),
    ("KVM_SET_MP_STATE", ioc(1, 0xAE, 0x99, 4), 0x4004AE99),
    ("KVM_GET_VCPU_EVENTS", ioc(2, 0xAE, 0x9F, 64), 0x8040AE9F),
    ("KVM_SET_VCPU_EVENTS", ioc(1, 0xAE, 0xA0, 64), 0x4040AEA0),
    ("KVM_GET_DEBUGREGS", ioc(2, 0xAE, 0xA1, 128), 0x8080AEA1),
    ("KVM_SET_DEBUGREGS", ioc(1, 0xAE, 0xA2, 128), 0x4080AEA2),
    ("KVM_SET_TSC_KHZ", ioc(0, 0xAE, 0xA2, 0), 0xAEA2),
    ("KVM_GET_TSC_KHZ", ioc(0, 0xAE, 0xA3, 0), 0xAEA3),
    ("KVM_NMI", ioc(0, 0xAE, 0x9A, 0), 0xAE9A),
    ("KVM_SET_GUEST_DEBUG", ioc(1, 0xAE, 0x9B, 72), 0x4048AE9B),
    ("KVM_GET_LAPIC", ioc(2, 0xAE, 0x8E, 1024), 0x8400AE8E),
    ("KVM_SET_LAPIC", ioc(1, 0xAE, 0x8F, 1024), 0x4400AE8F),
    ("KVM_GET_SREGS2", ioc(2, 0xAE, 0xCC, 320), 0x8140AECC),
    ("KVM_SET_SREGS2", ioc(1, 0xAE, 0xCD, 320), 0x4140AECD),
    ("KVM_GET_XSAVE", ioc(2, 0xAE, 0xA4, 4096), 0x9000AEA4),
    ("KVM_SET_XSAVE", ioc(1, 0xAE, 0xA5, 4096), 0x5000AEA5),
    ("KVM_GET_XCRS", ioc(2, 0xAE, 0xA6, 392), 0x8188AEA6),
    ("KVM_SET_XCRS", ioc(1, 0xAE, 0xA7, 392), 0x4188AEA7),
    ("KVM_GET_XSAVE2", ioc(2, 0xAE, 0xCF, 4096), 0x9000AECF),
    ("KVM_X86_SET_MSR_FILTER", ioc(1, 0xAE, 0xC6, 392), 0x4188AEC6),  # QEMU 7.2's, traced
    ("KVM_TPR_ACCESS_REPORTING", ioc(3, 0xAE, 0x92, 40), 0xC028AE92),  # traced too
    ("KVM_SET_VAPIC_ADDR", ioc(1, 0xAE, 0x93, 8), 0x4008AE93),
    # QEMU 7.2's, traced: 0x8008ae9d, 0x4018aee2
    ("KVM_X86_SETUP_MCE", ioc(1, 0xAE, 0x9C, 8), 0x4008AE9C),
    ("KVM_X86_GET_MCE_CAP_SUPPORTED", ioc(2, 0xAE, 0x9D, 8), 0x8008AE9D),
    ("KVM_X86_SET_MCE", ioc(1, 0xAE, 0x9E, 64), 0x4040AE9E),
    ("KVM_GET_DEVICE_ATTR", ioc(1, 0xAE, 0xE2, 24), 0x4018AEE2),
    ("KVM_HAS_DEVICE_ATTR", ioc(1, 0xAE, 0xE3, 24), 0x4018AEE3),
]


@pytest.mark.parametrize("name,formula,literal", NUMBERS, ids=[n[0] for n in NUMBERS])
def test_ioctl_numbers(name, formula, literal):
    assert getattr(x86, name) == formula == literal


CONSTANTS = [("KVM_CAP_TSC_CONTROL", 60), ("KVM_CAP_GET_TSC_KHZ", 61),
             ("KVM_CAP_GET_MSR_FEATURES", 153), ("KVM_CAP_XSAVE2", 208),
             ("KVM_MP_STATE_RUNNABLE", 0), ("KVM_MP_STATE_UNINITIALIZED", 1),
             ("KVM_MP_STATE_HALTED", 3), ("KVM_MP_STATE_SUSPENDED", 10),
             ("KVM_VCPUEVENT_VALID_NMI_PENDING", 1), ("KVM_VCPUEVENT_VALID_SIPI_VECTOR", 2),
             ("KVM_VCPUEVENT_VALID_SHADOW", 4), ("KVM_VCPUEVENT_VALID_SMM", 8),
             ("KVM_VCPUEVENT_VALID_PAYLOAD", 0x10), ("KVM_VCPUEVENT_VALID_TRIPLE_FAULT", 0x20),
             ("KVM_MAX_XCRS", 16), ("KVM_NR_INTERRUPTS", 256),
             ("KVM_CAP_MCE", 31), ("KVM_CAP_SYS_ATTRIBUTES", 209),
             ("KVM_X86_XCOMP_GUEST_SUPP", 0)]


@pytest.mark.parametrize("name,value", CONSTANTS, ids=[c[0] for c in CONSTANTS])
def test_constants(name, value):
    assert getattr(x86, name) == value
