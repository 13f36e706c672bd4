"""The stages, one per module: each takes its typed config whole plus the artifacts before it, and returns one
cache entry (elfs/cache.py) whose key is built by the one rule in keys.py and whose code version is the stage
module's own import closure (elfs/infra/version.py), so an edit elsewhere recomputes nothing the stage does not run.

context.py (what every stage is handed), keys.py (what enters a key), data.py, embed.py, knn.py, cluster.py,
prototypes.py, inputs.py (what a training reads), dynamics.py, trainings.py (one classifier training, and several
at once), beta_search.py, select.py, evaluate.py, diagnostics.py, answer.py. The graph that calls them is
elfs/pipeline.py. This package imports nothing here, so a stage's code version covers only what it imports.
"""
