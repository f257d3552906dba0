"""CargoScan's model code: decoding, preprocessing, the Siamese embedder, training and scoring.

Nothing here imports the database or Celery, so the network can be trained and evaluated alone.
"""
