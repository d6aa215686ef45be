"""Pipeline: run folders, the notebook setup call, and the papermill runner."""
