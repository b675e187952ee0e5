"""The feature store and what fills it: the store itself (``feature_store``), the per-frame features
of the encoders (``features``), the ``extract`` stage's library (``extraction``), feature-store splits
as tensors for samplers (``sampler_data``) and the class prototypes / pseudo labels computed from it
(``prototype_math``). It may import ``components.core``, ``components.data``, ``components.models``
and ``components.ops``; never a stage, a flow or the app.
"""
