-- The results database, beside Prefect's own (POSTGRES_DB=prefect). benchflow creates its
-- tables itself (Alembic migrations in sql/) on the first run, or with `benchflow db upgrade`.
CREATE DATABASE benchflow OWNER benchflow;
