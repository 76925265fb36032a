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
        self._values = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._factory = factory

    def __call__(self, obj):
        v = self._values.get(obj)
        if v is None:
            with self._lock:
                v = self._values.get(obj)
                if v is None:
                    v = self._values[obj] = self._factory(obj)
        return v

    def get(self, obj):
        """obj's value, or None if nothing asked for it yet."""
        return self._values.get(obj)
