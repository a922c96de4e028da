"""Runs on disk: load -> fit -> train -> save (jobs), run folders and model files, the ranking, sweeps, Dask."""
