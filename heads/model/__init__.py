"""The head model: attention block, task head, the assembled HeadModel and its checkpoint."""
