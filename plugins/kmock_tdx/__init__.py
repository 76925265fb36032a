"""Intel TDX for kmock (work in progress).

Phase 1 holds the parts that do not depend on the plugin contract: the Secure-EPT model
(``sept``), the TDX status decoder (``status``) and KVM's MapGPA logic (``mapgpa``).
The hook implementations come with the architecture contract; see docs/arch/tdx.md.
"""
