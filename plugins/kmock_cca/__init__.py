"""Arm CCA (Realm Management Extension) for kmock, modelled on Steven Price's KVM series.

Phase 1 holds the RMM's tables (``rtt``: granule states, RTT entries, the RMI commands
KVM issues and the RSI calls a realm makes). The hooks that wire them to the KVM
surface come once the plugin contract is settled; docs/arch/cca.md is the plan for them.
"""
