"""DVC stages: each module is a thin leaf, a pure ``run(params, paths)`` plus a short ``main()``.

``python -m components.stages.<name> [--params params.yaml] [--set key=value ...]``. A stage imports
the library (``components.*`` but ``components.app``) and nothing else of the project: never another
stage, never a flow, never the app (``tests/test_layering.py`` keeps it so). What stages share lives in the library: :class:`Paths` and
:func:`write_report` in :mod:`components.core.paths`, ``stage_main`` in :mod:`components.ops.stage_runner`.
"""
