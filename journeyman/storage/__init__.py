"""Storage: SQLAlchemy 2.0 models and the session factory (SQLite or PostgreSQL)."""
