"""kmock.testing: tools for testing VMMs and kmock itself.

``kmock.testing.conformance`` holds the conformance scenarios: the same sequence of
syscalls run on the real kernel (``kmock.HostKernel``) and on the mock
(``kmock.Kernel(profile="host")``), with the outcomes recorded in a normalized form
and compared step by step. ``kmock conform`` runs them all.
"""
