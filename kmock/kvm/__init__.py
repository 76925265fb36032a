"""/dev/kvm, VMs, memslots, vCPUs and kvm_run, and guest_memfd."""
