# Cython declarations of realm.py (an augmenting .pxd, see rtt.pxd): the bodies of the
# callbacks every conversion runs type their vCPU, VM, realm and REC, so that the core's
# typed members are loads and the RMM's commands C calls.
cimport cython

from kmock._sync cimport RLock as SyncRLock
from kmock.kvm.memslot cimport Memslot
from kmock.kvm.vcpu cimport Vcpu
from kmock.kvm.vm cimport VM
from kmock.notifier cimport InvalidateEvent

cimport kmock_cca.kvm_rmi as kvm_rmi
from kmock_cca.rtt cimport Realm, Rec


@cython.locals(vcpu=Vcpu, vm=VM, rec=Rec)
cpdef _rec_pre_enter(vmtype, vcpu)

@cython.locals(vcpu=Vcpu, vm=VM, realm=Realm, rec=Rec, lock=SyncRLock)
cpdef _complete_ripas_change(vmtype, vcpu, rec)

@cython.locals(vcpu=Vcpu, vm=VM, realm=Realm, lock=SyncRLock)
cpdef _realm_access(vcpu, start, end)

@cython.locals(realm=Realm, lock=SyncRLock)
cpdef _rtt_map(realm, arch, pool, ipa, pfn, size, private)

@cython.locals(vm=VM, event=InvalidateEvent, slot=Memslot)
cpdef _gmem_invalidate(vm, event)

@cython.locals(vm=VM, realm=Realm, lock=SyncRLock)
cpdef _destroy_protected(vm, start_gfn, end_gfn, what)

@cython.locals(vm=VM, vcpu=Vcpu, rec=Rec)
cpdef _released(vm, start, end)

@cython.locals(vm=VM)
cpdef _first_shared(vm, start, end)
