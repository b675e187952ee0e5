"""The networks: frame encoders (``encoders``), the samplers and their registry (``samplers/``, every
module of which the registry imports), the recognizers (``recognizers/``) and AVGN's network parts
(``avgn_net``). It may import ``components.core``, ``components.evaluation.metrics`` and the feature
computation of ``components.store``; never a stage, a flow or the app.
"""
