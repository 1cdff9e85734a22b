"""Build of the compiled helpers: ``wsol.localization._leveltree`` (the component-tree box
evaluator), ``wsol.metrics._scorebins`` (exact score histograms) and ``wsol.data._resample``
(PIL's bilinear resize, vectorized). All are optional: where no C compiler is available the
install still succeeds and wsol uses OpenCV / NumPy / torch / PIL instead (same numbers,
slower); see ``wsol.localization.leveltree``, ``wsol.metrics.histograms`` and
``wsol.data.resample``.
Everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("wsol.localization._leveltree", sources=["wsol/localization/_leveltree.c"],
              extra_compile_args=["-O3"], optional=True),
    Extension("wsol.metrics._scorebins", sources=["wsol/metrics/_scorebins.c"],
              extra_compile_args=["-O3"], optional=True),
    Extension("wsol.data._resample", sources=["wsol/data/_resample.c"],
              extra_compile_args=["-O3"], optional=True),
])
