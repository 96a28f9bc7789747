"""``make report``: one HTML page and one Markdown file from the demo and table runs (no wandb needed)."""
