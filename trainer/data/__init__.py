"""Data modules: each builds its train/val data sets and hands out seeded loaders."""
