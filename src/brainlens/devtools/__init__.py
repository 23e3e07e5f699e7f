"""Developer tools for brainlens (not needed to run the workflow)."""
