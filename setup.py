"""Build the compiled memory core (csrc_cython/) as kmock.mm._core, and the patcher's
hot fd calls as kmock.testing._patch.

Everything else is in pyproject.toml; this file exists only because the Cython
extension needs ext_modules.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("kmock.mm._core", ["csrc_cython/_core.pyx"]),
    Extension("kmock.testing._patch", ["csrc_cython/_patch.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
