"""Training: the one training loop every trainer uses, DDP included (``engine``), the frame banks of
the encoder and recognizer trainers (``banks``), the val objective shared by the sampler trainer and
the tuners (``val_objective``), sampler training and checkpoints (``sampler_training``) and a trained
sampler as an MLflow model (``sampler_model``). It may import the other library packages and
``components.core``; never a stage, a flow or the app.
"""
