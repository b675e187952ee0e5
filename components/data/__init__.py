"""Datasets: the manifest schema, dataset adapters, the synthetic benchmark, clip sampling, the source
listing of a real dataset and video decoding (``video/``). The bottom of the library next to
``components.core``: it imports nothing of the project but ``components.core`` (and itself).
"""
