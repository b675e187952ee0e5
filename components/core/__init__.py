"""The core: what every other package uses — typed params (``params``), output paths (``paths``),
atomic writes (``atomic``), content hashes and code fingerprints (``hashing``, over the import graph of
``depgraph``), the generic registry (``registry``), process-wide environment and device choice
(``runtime``), rank helpers for DDP (``distributed``), scratch folders (``scratch``), checkpoint and
workspace integrity (``integrity``) and the frame-selection primitives the params validate against
(``selection``). It imports nothing of the project outside ``components.core`` (docs/design.md §4).
"""
