"""Result records (one JSON per run of a paper-table row or a demo), the published numbers, and the collector."""
