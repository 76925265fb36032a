"""State the kernel keeps beside an object it does not own (a VM's x86 part, a vCPU's
registers, the irqchips), made on first use and gone with the object.

``state = Attached(factory)`` then ``state(obj)`` is obj's value, made by ``factory(obj)``
the first time (once, even when threads ask at once); ``state.get(obj)`` is None until
then. Keyed weakly: the value goes when the object is collected.
"""

import threading
import weakref


class Attached:
    __slots__ = ("_values", "_lock", "_factory")

    def __init__(self, factory):
        #: id(obj) -> (a weak reference to obj, its value); the reference's callback drops
        #: the entry when obj goes, before its id can be reused. (Not a WeakKeyDictionary:
        #: its look-up makes a new weak reference in Python code, about 2,500 instructions
        #: per call, and this runs on every x86 vCPU ioctl and KVM_RUN.)
        self._values = {}
        self._lock = threading.Lock()
        self._factory = factory

    def __call__(self, obj):
        e = self._values.get(id(obj))
        if e is not None and e[0]() is obj:
            return e[1]
        with self._lock:
            e = self._values.get(id(obj))
            if e is not None and e[0]() is obj:
                return e[1]
            v = self._factory(obj)
            key, values = id(obj), self._values
            values[key] = (weakref.ref(obj, lambda ref: _drop(values, key, ref)), v)
        return v

    def get(self, obj):
        """obj's value, or None if nothing asked for it yet."""
        e = self._values.get(id(obj))
        return e[1] if e is not None and e[0]() is obj else None


def _drop(values, key, ref):
    e = values.get(key)
    if e is not None and e[0] is ref:
        del values[key]
