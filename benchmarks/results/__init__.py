"""Every run's results in one SQLite store, and the tables and reports built from it."""
