"""Pictures shared by the reports (retrieval grids)."""
