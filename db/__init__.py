"""CargoScan's database layer: SQLAlchemy 2.0 schema, engines, queries and Alembic migrations.

Nothing here imports torch; embeddings cross this boundary as float32 bytes.
"""
