"""``vcpu.guest.cca``: what a realm's vCPU calls through the RSI.

``ipa_state_set(base, top, ripas, flags=0)``: RSI_IPA_STATE_SET. Bad input returns to the
realm at once (RSI_ERROR_INPUT, no exit). Otherwise the REC exits with
RMI_EXIT_RIPAS_CHANGE and KVM turns it into KVM_EXIT_MEMORY_FAULT (gpa = base, size =
top - base, KVM_MEMORY_EXIT_FLAG_PRIVATE iff RAM; KVM_RUN fails with EFAULT; v14
rec_exit_ripas_change, 22/44). On the next KVM_RUN, KVM calls RTT_SET_RIPAS (the
RealmVm's run_enter) and the call completes: ``result`` = ``(status, new_base,
response)`` as the realm reads X0-X2 (RSI_ACCEPT 0 / RSI_REJECT 1); the realm retries
from new_base while new_base < top (the partial-progress table of docs/arch/cca.md §4).

``ipa_state_get(base, end)``: RSI_IPA_STATE_GET, answered by the RMM without an exit:
``result`` = ``(status, top, ripas)``.

Plain ``vcpu.guest.read/write(ipa, ...)`` with ``private=None`` follow the IPA's top bit
(RealmVm.gpa_alias).
"""

import errno

from kmock.kvm.guest import Action
from kmock.kvm.stage2 import MemoryFault

from .rtt import RSI_NO_CHANGE_DESTROYED, _RAM, Ripas, RsiResult

_EFAULT = errno.EFAULT


class IpaStateSet(Action):
    kind = "rsi_ipa_state_set"

    def __init__(self, base, top, ripas, flags):
        super().__init__()
        self.base, self.top, self.ripas, self.flags = base, top, ripas, flags
        self._exited = False

    def _describe(self):
        return f"[{self.base:#x}, {self.top:#x}) -> {Ripas(self.ripas).name if self.ripas in (0, 1, 2, 3) else self.ripas}"

    def step(self, vcpu):
        va = vcpu.arch
        if self._exited:
            res, va.rsi_result = va.rsi_result, None
            self._exited = False
            if res is not None:
                # (Action.finish by name: compiled, a C call without the look-up for an
                # override on the action's instance dict)
                return Action.finish(self, (int(res.status), res.x1, res.x2))
            # KVM_RUN re-entered without a completion (cannot happen: run_enter runs first)
        rec = va.rec
        r = rec.ipa_state_set(self.base, self.top, self.ripas, self.flags)
        if isinstance(r, RsiResult):
            return self.finish((int(r.status), r.x1, r.x2))
        self._exited = True
        base, top, ripas = r  # (RipasChangeExit: unpacked, not three field look-ups)
        mf = MemoryFault(_EFAULT, base >> 12, ripas == _RAM)
        mf.size = top - base
        return mf  # (KVM_RUN raises it: kmock.kvm.guest.run)


class IpaStateGet(Action):
    kind = "rsi_ipa_state_get"

    def __init__(self, base, end):
        super().__init__()
        self.base, self.end = base, end

    def step(self, vcpu):
        r = vcpu.arch.rec.ipa_state_get(self.base, self.end)
        return self.finish((int(r.status), r.x1, r.x2))


class CcaGuest:
    """``vcpu.guest.cca``: the realm's RSI calls (see the module docstring)."""

    def __init__(self, script):
        self.script = script

    def ipa_state_set(self, base, top, ripas, flags=RSI_NO_CHANGE_DESTROYED):
        return self.script.add(IpaStateSet(base, top, int(ripas), flags))

    def ipa_state_get(self, base, end):
        return self.script.add(IpaStateGet(base, end))
