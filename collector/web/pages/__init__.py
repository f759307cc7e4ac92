"""HTML shells of the dashboard pages (package data)."""
