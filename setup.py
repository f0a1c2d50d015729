"""Build of the optional native decoder (observer/ingest/_otlpfast.c); metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and ingest runs the
Python decode path (observer.ingest.fastpath logs which path runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "observer.ingest._otlpfast",
            sources=["observer/ingest/_otlpfast.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=c11"],
            optional=True,
        )
    ]
)
