# Cython declarations of vmtype.py (an augmenting .pxd, see td.pxd): TdxVm stays a Python
# class (kmock.kvm.vmtype.VmType is one); the bodies of its hooks on the KVM_RUN and
# conversion paths are functions with typed locals, C calls from its methods.
cimport cython

from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM
from kmock.notifier cimport InvalidateEvent

from kmock_tdx.td cimport Td, TdxVcpu
from kmock_tdx.vcpu_events cimport inject_pending_nmi


@cython.locals(vcpu=Vcpu, vm=VM, td=Td, tv=TdxVcpu)
cpdef tdx_vcpu_pre_run(vcpu)

@cython.locals(vm=VM, td=Td)
cpdef tdx_sept_map(vm, gfn, pfn, npages)

@cython.locals(vm=VM, td=Td)
cpdef tdx_sept_zap(vm, runs)

@cython.locals(vm=VM, td=Td, event=InvalidateEvent)
cpdef tdx_gmem_veto(vm, event)
