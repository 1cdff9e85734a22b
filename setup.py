"""Build of the one compiled helper, ``wsol.localization._leveltree`` (the component-tree box
evaluator). It is optional: where no C compiler is available the install still succeeds and
wsol traces every level with OpenCV instead (same counts, slower); see
``wsol.localization.leveltree``. Everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wsol.localization._leveltree",
                             sources=["wsol/localization/_leveltree.c"],
                             extra_compile_args=["-O3"], optional=True)])
