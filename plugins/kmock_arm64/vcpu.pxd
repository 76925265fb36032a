# Cython declarations of vcpu.py (an augmenting .pxd: the .py stays the source and runs
# unchanged when interpreted): KVM_RUN of an arm64 vCPU, which every realm conversion
# enters twice, reads the core vCPU's fields as typed members.
cimport cython

from kmock.kvm.vcpu cimport Vcpu


@cython.locals(vcpu=Vcpu)
cpdef vcpu_run(f, arg)
