"""Build the compiled memory core (csrc_cython/) as kmock.mm._core, and the patcher's
hot fd calls as kmock.testing._patch, and the native tier's preload library
(csrc_preload/kmock_preload.c, plain C) as kmock/preload/_kmock_preload<EXT_SUFFIX>: an
LD_PRELOAD library, built as an extension only so that ``pip install -e .`` compiles it
(it has no PyInit and is never imported).

Everything else is in pyproject.toml; this file exists only because the Cython
extension needs ext_modules.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("kmock.mm._core", ["csrc_cython/_core.pyx"]),
    Extension("kmock.testing._patch", ["csrc_cython/_patch.pyx"]),
]

preload = Extension("kmock.preload._kmock_preload", ["csrc_preload/kmock_preload.c"],
                    libraries=["dl", "pthread"], extra_compile_args=["-O2"])

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ) + [preload],
)
