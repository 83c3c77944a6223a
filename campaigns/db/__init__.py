"""Persistence: typed ORM models, engine/session helpers, bulk inserts, Alembic upgrade."""
