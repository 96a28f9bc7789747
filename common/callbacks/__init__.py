"""Lightning callbacks shared by every method."""
