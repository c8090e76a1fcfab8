"""Pieces shared by every stage: the name registry, run-folder conventions, seeding."""
