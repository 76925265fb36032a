"""AMD SEV-SNP for kmock (work in progress).

Phase 1 holds the parts that do not depend on the plugin contract: the RMP model
(``kmock_snp.rmp``) and the pure logic of guest page-state changes (``kmock_snp.psc``).
The hook implementations that register the ``snp`` platform come in phase 2; the facts
they must follow are collected in docs/arch/snp.md.
"""
